# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recovery of an in-place deployment whose controller died, and the plans of the other types.

:func:`select_deployment`, :func:`plan_recovery`, :func:`recover`: put every host a deployment took
out of its load balancers back into exactly its recorded membership (hosts whose install failed
stay out and are reported), wait until healthy, mark the deployment Stopped, release the group's
lock. Pure logic over a :class:`RecordStore` and a load-balancer object; safe to repeat.
:func:`bluegreen_plan` and :func:`lambda_refusal` decide for the other deployment types;
``deployment_session.recover`` dispatches on the deployment type. The lease keeper that notices a
dead controller is deployments/lease.py (docs/operations.md, "Recovery" and "The lease keeper").

Recovery does not trust the record (docs/security.md): memberships are checked against their host
and the load-balancer configuration, a superseded deployment is recovered only when named, and the
lock is taken over by token before anything changes (and renewed before each write: fencing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.lease import controller_elsewhere, controller_gone
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import (
    DEFAULT_LOCK_TTL,
    TERMINAL_STATUSES,
    DeploymentRecord,
    Lock,
    LockHeld,
    LockInfo,
    LockLost,
    RecordNotFound,
    RecordStore,
    default_owner,
    now_iso,
)

Progress = Callable[[str], None]

# A Failed event in this range means the host's install of the revision failed: the host is left out
# of its load balancers by the deployment, and recovery leaves it out too.
INSTALL_EVENTS = ("ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall",
                  "ApplicationStart", "ValidateService")


class RecoveryError(RollwrightError):
    """Recovery cannot (or must not) run; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# Recovery


@dataclass
class RecoveryPlan:
    """What recovery would do for one deployment."""

    deployment_id: str
    application: str
    deployment_group: str
    status: str
    restore: dict = field(default_factory=dict)  # host -> [membership dict], to register again
    left_out: dict = field(default_factory=dict)  # host -> why it stays out (its install failed)
    interrupted: dict = field(default_factory=dict)  # host -> [event names still InProgress]
    lock: Optional[dict] = None  # the group's lock when this deployment holds it
    refused: Optional[str] = None

    @property
    def mark_stopped(self) -> bool:
        return self.status not in TERMINAL_STATUSES

    @property
    def needs_action(self) -> bool:
        return bool(self.restore or self.interrupted or self.mark_stopped or self.lock)

    def to_dict(self) -> dict:
        return {"deployment_id": self.deployment_id, "application": self.application,
                "deployment_group": self.deployment_group, "status": self.status, "restore": self.restore,
                "left_out": self.left_out, "interrupted": self.interrupted, "lock": self.lock,
                "mark_stopped": self.mark_stopped, "needs_action": self.needs_action, "refused": self.refused}


def install_failure(host) -> Optional[str]:
    """The install event that failed on a host record (a HostRecord), or None."""
    for event in host.events:
        if event.name in INSTALL_EVENTS and event.status == "Failed":
            return event.name
    return None


def _hosts_out(record: DeploymentRecord) -> list:
    return [h for h in record.hosts if h.lb_membership and not h.lb_restored]


def needs_recovery(record: DeploymentRecord) -> bool:
    """Not ended (InProgress, or a blue/green deployment waiting in Ready: its controller is gone or
    going), or an in-place deployment Stopped with hosts still out of their load balancers."""
    if record.status in ("Created", "InProgress", "Ready"):
        return True
    if record.status == "Stopped" and record.deployment_type == "in_place":
        return any(install_failure(h) is None for h in _hosts_out(record))
    return False


def superseded_by(store: RecordStore, record: DeploymentRecord, scan: int = 20) -> Optional[DeploymentRecord]:
    """A later deployment of the same group that started (or succeeded), or None.

    Recovering a deployment after a later one ran would put hosts back into memberships that the
    later deployment has since changed; a deployment refused at its start (lock held) never started
    and does not count."""
    for summary in store.list(record.application, record.deployment_group, limit=scan):
        if summary.deployment_id == record.deployment_id:
            continue
        if (summary.create_time or "") <= (record.create_time or ""):
            continue
        if summary.start_time or summary.status == "Succeeded":
            return summary
    return None


def select_deployment(store: RecordStore, application: Optional[str], deployment_group: Optional[str],
                      deployment_id: Optional[str] = None, scan: int = 20) -> Optional[DeploymentRecord]:
    """The deployment to recover: the one named, else the group's lock holder, else the newest one
    that needs recovery (see :func:`needs_recovery`). None when there is nothing to recover.

    A deployment superseded by a later one of its group (see :func:`superseded_by`) is recovered only
    when named: as the lock holder it is refused (the error names the later deployment), as a
    candidate it is passed over. Any deployment type: the caller dispatches on
    ``record.deployment_type``. With ``deployment_id`` the application and group may be left out
    (they are checked when given)."""
    if deployment_id:
        record = store.get(deployment_id)
        if application and (record.application, record.deployment_group) != (application, deployment_group or application):
            raise RecoveryError(
                f"deployment_id: {deployment_id} belongs to {record.application}/{record.deployment_group}, "
                f"not to {application}/{deployment_group or application}")
        return record
    if not application:
        raise RecoveryError("application: expected the application name (rollwright_application), or deployment_id")
    deployment_group = deployment_group or application
    lock = store.get_lock(application, deployment_group)
    if lock is not None:
        try:
            record = store.get(lock.deployment_id)
        except RecordNotFound:
            raise RecoveryError(
                f"deployment group {application}/{deployment_group} is locked by deployment {lock.deployment_id} "
                f"({lock.owner}), which has no record: nothing to recover from. If that lock is left over, end it "
                "with rollwright.deploy.deployment_record state=unlock (force: true once you know its controller "
                "is gone)") from None
        if (record.application, record.deployment_group) != (application, deployment_group):
            raise RecoveryError(
                f"the lock of {application}/{deployment_group} names deployment {record.deployment_id}, whose record "
                f"belongs to {record.application}/{record.deployment_group}: the records do not agree, nothing was changed")
        later = superseded_by(store, record, scan)
        if later is not None:
            raise RecoveryError(
                f"deployment {record.deployment_id} holds the lock of {application}/{deployment_group} but is superseded "
                f"by the later deployment {later.deployment_id} ({later.status}, created {later.create_time}): it is "
                f"recovered only when named (rollwright_deployment_id={record.deployment_id}); nothing was changed")
        return record
    for summary in store.list(application, deployment_group, limit=scan):
        if summary.status in ("Created", "InProgress", "Ready", "Stopped"):
            record = store.get(summary.deployment_id)
            if needs_recovery(record) and superseded_by(store, record, scan) is None:
                return record
    return None


def load_balancer_config(record: DeploymentRecord, override: Optional[dict] = None) -> Optional[dict]:
    """The load-balancer configuration recovery uses: ``override`` (``rollwright_load_balancer``) when
    given, else the one the deployment recorded at its start (``extra.inplace.load_balancer``)."""
    if override:
        from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.inplace import haproxy_servers_by_lb_id

        return haproxy_servers_by_lb_id(override, [{"name": h.name, "instance_id": h.instance_id} for h in record.hosts])
    return (record.extra.get("inplace") or {}).get("load_balancer") or None


_TARGET_GROUP_NAME_RE = re.compile(r":targetgroup/([^/]+)/")


def membership_problems(record: DeploymentRecord, lb_config: Optional[dict], hosts: Optional[list] = None) -> list:
    """What in the recorded memberships does not belong where a restore would put it back.

    For each host still out of its load balancers (or each of ``hosts``), every recorded membership
    must parse, name this host (ELBv2 target / classic ELB instance = the host's instance id; an
    HAProxy server = the host's server in the configuration) and a load balancer of ``lb_config``
    (a configured target group by ARN or name, classic ELB, HAProxy instance and backend). A record
    is writable by whoever can write the records table; these checks keep a tampered or corrupt
    membership from registering an arbitrary target anywhere. Returns one message per problem."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import ConfigError, Membership

    config = lb_config if isinstance(lb_config, dict) else {}
    arns = set(config.get("target_group_arns") or [])
    tg_names = set(config.get("target_group_names") or [])
    elbs = set(config.get("classic_elb_names") or [])
    haproxy = None
    problems = []
    if config.get("haproxy"):
        from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.haproxy import parse_haproxy_config

        try:
            haproxy = parse_haproxy_config(config["haproxy"])
        except ConfigError as exc:
            problems.append(f"the recorded load-balancer configuration is invalid: {exc}")
    checked = [h for h in record.hosts if h.lb_membership and (h.name in hosts if hosts is not None else not h.lb_restored)]
    if checked and not (arns or tg_names or elbs or config.get("haproxy")):
        problems.append("there is no load-balancer configuration to check the recorded memberships against (the record "
                        "has none in extra.inplace.load_balancer): pass the deployment's (rollwright_load_balancer)")
    named = sorted(arns | tg_names | elbs)
    if haproxy:
        named.append(f"HAProxy {', '.join(i.name for i in haproxy.instances)}")
    configured = ", ".join(named) or "none"
    for host in record.hosts:
        if hosts is not None and host.name not in hosts:
            continue
        if hosts is None and (not host.lb_membership or host.lb_restored):
            continue
        lb_id = host.instance_id or host.name
        for index, data in enumerate(host.lb_membership):
            path = f"hosts[{host.name}].lb_membership[{index}]"
            try:
                member = Membership.from_dict(data, path)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            if member.kind == "elbv2":
                tg_name = _TARGET_GROUP_NAME_RE.search(member.target_group_arn)
                if member.target_group_arn not in arns and not (tg_name and tg_name.group(1) in tg_names):
                    problems.append(f"{path}: target group {member.target_group_arn} is not a load balancer of the "
                                    f"deployment's configuration ({configured})")
                if member.target_id != host.instance_id:
                    problems.append(f"{path}: target {member.label()} is not host {host.name}'s instance "
                                    f"({host.instance_id or 'none recorded'})")
                if member.port is not None and not 0 < member.port < 65536:
                    problems.append(f"{path}: port {member.port} is not a TCP port")
            elif member.kind == "classic_elb":
                if member.load_balancer_name not in elbs:
                    problems.append(f"{path}: classic ELB {member.load_balancer_name} is not a load balancer of the "
                                    f"deployment's configuration ({configured})")
                if member.instance_id != host.instance_id:
                    problems.append(f"{path}: instance {member.instance_id} is not host {host.name}'s instance "
                                    f"({host.instance_id or 'none recorded'})")
            elif member.kind == "haproxy":
                if haproxy is None:
                    problems.append(f"{path}: HAProxy server {member.label()}, but the deployment's configuration has "
                                    "no HAProxy")
                    continue
                if member.instance not in [i.name for i in haproxy.instances] or member.backend not in haproxy.backends:
                    problems.append(f"{path}: {member.label()} is not an HAProxy instance and backend of the "
                                    f"deployment's configuration ({configured}, backends {', '.join(haproxy.backends)})")
                expected = {haproxy.server_for(lb_id), haproxy.server_for(host.name)}
                if member.server not in expected:
                    problems.append(f"{path}: server {member.server} is not host {host.name}'s server "
                                    f"({' or '.join(sorted(expected))})")
    return problems


def membership_refusal(record: DeploymentRecord, problems: list, what: str = "recover") -> str:
    return (f"the record of {record.deployment_id} does not match its hosts and load balancers, so nothing is "
            f"registered from it and nothing was changed ({what} refused): {'; '.join(problems)}. If the record was "
            "changed by hand or by someone else, restore the hosts yourself")


def plan_recovery(record: DeploymentRecord, lock: Optional[LockInfo], force: bool = False,
                  lb_config: Any = False, controller_dead: Optional[str] = None) -> RecoveryPlan:
    """Decide what to restore. Refuses (``refused``) while the deployment's controller looks alive,
    and when a recorded membership does not match its host or the load-balancer configuration
    (``lb_config``: the configuration recovery will use; default: the one the record holds).
    ``controller_dead``: why this machine knows the controller is gone (:func:`controller_gone`):
    then a live-looking lock does not stop recovery."""
    plan = RecoveryPlan(record.deployment_id, record.application, record.deployment_group, record.status)
    if lb_config is False:
        lb_config = load_balancer_config(record)
    controller_dead = controller_dead or controller_gone(record)
    for host in _hosts_out(record):
        failed = install_failure(host)
        if failed:
            plan.left_out[host.name] = (f"its install failed at {failed}: it stays out of its load balancer "
                                        "(deploy a good revision or roll back to put it back)")
        else:
            plan.restore[host.name] = list(host.lb_membership)
    for host in record.hosts:
        running = [e.name for e in host.events if e.status == "InProgress"]
        if running:
            plan.interrupted[host.name] = running
    if lock is not None and lock.deployment_id == record.deployment_id:
        plan.lock = lock.to_dict()
        if not lock.stale and record.status not in TERMINAL_STATUSES and not force and not controller_dead:
            plan.refused = (
                f"deployment {record.deployment_id} looks alive: its lock was renewed {int(lock.heartbeat_age)} s ago "
                f"(ttl {int(lock.ttl)} s) and it is {record.status}. Recovering now would fight with its controller. "
                f"If its controller is dead, wait until the lock is stale ({max(0, int(lock.ttl - lock.heartbeat_age))} s) "
                f"or pass force: true (-e rollwright_force_recover=true){controller_elsewhere(record)}")
    elif lock is not None and not force and (plan.restore or plan.mark_stopped):
        plan.refused = (
            f"deployment group {record.application}/{record.deployment_group} is locked by another deployment, "
            f"{lock.deployment_id} (started by {lock.owner}); recovering {record.deployment_id} now could undo its "
            "work. Let it finish (or recover it first), or pass force: true (-e rollwright_force_recover=true)")
    if plan.restore and not plan.refused:
        problems = membership_problems(record, lb_config)
        if problems:
            plan.refused = membership_refusal(record, problems)
    return plan


def recover(store: RecordStore, load_balancer: Any, record: DeploymentRecord, plan: RecoveryPlan,
            healthy_timeout: Optional[float] = 300.0, progress: Optional[Progress] = None) -> dict:
    """Carry out a plan: register, wait healthy, mark the record, release the lock. Returns a report."""
    say = progress or (lambda message: None)
    if plan.refused:
        raise RecoveryError(plan.refused)
    deployment_id = record.deployment_id
    report: dict = {"deployment_id": deployment_id, "restored": [], "left_out": dict(plan.left_out),
                    "unhealthy": {}, "status_before": record.status, "lock_released": False, "changed": False}
    if plan.restore and load_balancer is None:
        raise RecoveryError(
            f"hosts {', '.join(sorted(plan.restore))} of {deployment_id} are recorded out of their load balancers, "
            "but no load balancer configuration was given to put them back (the record has none in "
            "extra.inplace.load_balancer: pass rollwright_load_balancer)")
    held = hold_lock(store, record, plan.lock, timeout=healthy_timeout)
    if plan.restore:
        from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import Membership

        memberships = [Membership.from_dict(m, f"hosts[{h}].lb_membership") for h, ms in plan.restore.items() for m in ms]
        say(f"recover {deployment_id}: registering {len(memberships)} membership(s) of {', '.join(sorted(plan.restore))}")
        fence(store, held)
        load_balancer.allow(memberships)
        waited = load_balancer.wait_healthy(memberships, timeout=healthy_timeout, progress=say)
        bad = set(getattr(waited, "pending", None) or [])
        states = getattr(waited, "states", None) or {}
        for host, ms in sorted(plan.restore.items()):
            store.update_host(deployment_id, host, lb_restored=True)
            report["restored"].append(host)
            current = record.host(host)
            # wait results are keyed by the lb id (instance id or host name); HAProxy's by server too
            ids = {Membership.from_dict(m).host for m in ms} | {host, (current.instance_id if current else None) or host}
            late = sorted(i for i in ids if i in bad)
            if late:
                report["unhealthy"][host] = ", ".join(f"{i}: {states.get(i, 'unknown')}" for i in late)
        report["changed"] = True
    stamp = now_iso()
    for host, events in sorted(plan.interrupted.items()):
        for event in events:
            store.event(deployment_id, host, event, "Failed", end=stamp,
                        message="interrupted: the controller stopped before this event ended (rollwright.deploy.recover)")
        current = record.host(host)
        if current is not None and current.status == "InProgress":
            store.update_host(deployment_id, host, status="Unknown")
        report["changed"] = True
    if plan.mark_stopped:
        store.update_status(deployment_id, "Stopped",
                            error=record.error or "the controller stopped before the deployment ended; recovered by "
                                                  "rollwright.deploy.recover")
        report["changed"] = True
    if held is not None:
        try:
            released = store.release_lock(held)
        except LockLost:
            released = False
        report["lock_released"] = bool(plan.lock) and released
        report["changed"] = report["changed"] or report["lock_released"]
    if report["changed"]:
        store.set_extra(deployment_id, "recovery", {
            "time": stamp, "restored": report["restored"], "left_out": report["left_out"],
            "unhealthy": report["unhealthy"], "status_before": record.status})
    final = store.get(deployment_id)
    report["status"] = final.status
    report["hosts"] = [{"name": h.name, "status": h.status, "lb_restored": h.lb_restored,
                        "lb_membership": h.lb_membership} for h in final.hosts]
    say(f"recover {deployment_id}: restored {', '.join(report['restored']) or 'no host'}"
        + (f"; left out {', '.join(sorted(report['left_out']))}" if report["left_out"] else "")
        + f"; status {final.status}")
    return report


def hold_lock(store: RecordStore, record: DeploymentRecord, held_by_it: Optional[dict],
              timeout: Optional[float] = None) -> Optional[Lock]:
    """The group's lock for the recovery itself, taken before anything is changed: the dead
    deployment's lock taken over by the token read (its controller's or an orphaned step's next
    renewal or fencing check then fails, so it stops before writing), or the free lock acquired so
    that no deployment starts meanwhile. A stale lock is judged by the store at the takeover; a
    live-looking one is taken only when the plan allowed it (record ended, controller known dead,
    or force). None when another deployment holds the lock (recovery was forced past it)."""
    owner = f"recovery of {record.deployment_id} by {default_owner()}"
    ttl = max(DEFAULT_LOCK_TTL, float(timeout or 0) + 60.0)
    if held_by_it:
        try:
            return store.take_over(record.application, record.deployment_group, record.deployment_id, owner=owner,
                                   ttl=ttl, live=not held_by_it.get("stale"), acquired_at=held_by_it.get("acquired_at"))
        except RecordNotFound:
            pass  # released meanwhile: take it below
        except LockHeld as exc:
            raise RecoveryError(f"the lock of {record.deployment_id} changed since recovery read it, so nothing was "
                                f"changed: {exc}") from None
    try:
        return store.acquire_lock(record.application, record.deployment_group, record.deployment_id, owner=owner, ttl=ttl)
    except LockHeld:
        return None


def fence(store: RecordStore, lock: Optional[Lock]) -> None:
    """The fencing check before a write to AWS: the lock is still ours (renewed by its token), or
    LockLost stops the caller before it writes."""
    if lock is not None:
        store.heartbeat(lock)


# ---------------------------------------------------------------------------------------------
# Other deployment types (the rollwright.deploy.recover playbook dispatches on deployment_type)


def bluegreen_plan(record: DeploymentRecord, lock: Optional[LockInfo], force: bool = False,
                   stop_requested: bool = False) -> dict:
    """What ``bluegreen.recover`` will do for a blue/green EC2 deployment, and whether it may.

    ``action``: ``rolled_back`` (phase up to ``rerouted``: originals back, replacements torn down,
    status Failed), ``retired`` (phase ``retiring``: finish the retirement, status Succeeded) or
    ``none`` (already finished; a lock it still holds is released). ``refused`` while its lock looks
    alive, or while another deployment holds the group's lock, unless ``force``.
    """
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.bluegreen import EXTRA_KEY, handed_over

    phase = (record.extra.get(EXTRA_KEY) or {}).get("phase")
    handover = handed_over(record, lock)  # split form, waiting for approval: no process is meant to be alive
    if record.status in TERMINAL_STATUSES and phase in ("finished", "rolled_back"):
        action = "none"
    elif phase in ("retiring", "finished"):
        action = "retired"
    else:
        action = "rolled_back"
    holds = lock is not None and lock.deployment_id == record.deployment_id
    force = force or bool(holds and not handover and controller_gone(record))  # its controller ran here and is gone
    plan = {"deployment_id": record.deployment_id, "deployment_type": record.deployment_type,
            "application": record.application, "deployment_group": record.deployment_group, "status": record.status,
            "phase": phase, "action": action, "lock": lock.to_dict() if holds and lock is not None else None,
            "needs_action": action != "none" or holds, "refused": None}
    if handover is not None and lock is not None and not lock.stale and not force and not stop_requested:
        plan["refused"] = (
            f"deployment {record.deployment_id} (blue/green, split form) is Ready and waits for approval until "
            f"{handover.get('until')}: its lock is a lease held by the record, not a sign of a dead controller. Approve "
            "it with rollwright.deploy.continue, deny it with rollwright.deploy.stop, or recover it anyway with "
            "-e rollwright_force_recover=true (force: true; the replacement fleet is torn down, status Stopped)")
    elif holds and lock is not None and not lock.stale and not force and handover is None:
        plan["refused"] = (
            f"{lock.describe()}; deployment {record.deployment_id} (blue/green, {record.status}, phase {phase}) looks "
            f"alive: its lock's ttl is {int(lock.ttl)} s. Recovering now would fight with its controller. If its "
            "controller is dead, run the recovery again with -e rollwright_force_recover=true (force: true)"
            f"{controller_elsewhere(record)}")
    elif lock is not None and not holds and action != "none" and not force:
        plan["refused"] = (
            f"deployment group {record.application}/{record.deployment_group} is locked by another deployment, "
            f"{lock.deployment_id} (started by {lock.owner}); recovering {record.deployment_id} now could undo its "
            "work. Let it finish (or recover it first), or pass force: true (-e rollwright_force_recover=true)")
    return plan


def recover_bluegreen(store: RecordStore, clients: Any, record: DeploymentRecord, plan: dict,
                      progress: Optional[Progress] = None) -> dict:
    """Carry out :func:`bluegreen_plan` through ``bluegreen.recover`` (the ``bluegreen_step``
    ``step: recover`` engine). Returns its report, with ``changed`` and ``lock_released``."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import bluegreen

    if plan.get("refused"):
        raise RecoveryError(plan["refused"])
    try:
        report = bluegreen.recover(store, clients, record.deployment_id, progress=progress, force=True)
    except bluegreen.BlueGreenError as exc:
        raise RecoveryError(str(exc)) from exc
    after = store.get_lock(record.application, record.deployment_group)
    report["lock_released"] = bool(plan.get("lock")) and (after is None or after.deployment_id != record.deployment_id)
    report["changed"] = report.get("action") != "none" or report["lock_released"]
    return report


LAMBDA_RECORD_VARS = (("backend", "rollwright_record_backend"), ("sqlite_path", "rollwright_record_sqlite_path"),
                      ("dynamodb_table", "rollwright_record_dynamodb_table"))
LAMBDA_AWS_VARS = (("region", "rollwright_aws_region"), ("endpoint_url", "rollwright_aws_endpoint_url"),
                   ("profile", "rollwright_aws_profile"))


def lambda_recovery_command(record: DeploymentRecord, record_options: Optional[dict] = None,
                            aws: Optional[dict] = None) -> str:
    """The ``rollwright.deploy.lambda`` command that recovers a Lambda deployment (docs/lambda.md, Recovery)."""
    import shlex

    revision = record.revision or {}
    pairs = [("rollwright_lambda_function_name", revision.get("function") or "<function>"),
             ("rollwright_lambda_alias", revision.get("alias") or "<alias>"),
             ("rollwright_application", record.application), ("rollwright_deployment_group", record.deployment_group),
             ("rollwright_lambda_recover", "true"), ("rollwright_force_lock", "true")]
    for key, var in LAMBDA_RECORD_VARS:
        value = (record_options or {}).get(key)
        if value and not (key == "backend" and value == "sqlite"):
            pairs.append((var, value))
    for key, var in LAMBDA_AWS_VARS:
        if (aws or {}).get(key):
            pairs.append((var, aws[key]))  # type: ignore[index]
    return "ansible-playbook rollwright.deploy.lambda " + " ".join(f"-e {shlex.quote(f'{k}={v}')}" for k, v in pairs)


def inplace_rollback_command(record: DeploymentRecord) -> str:
    """The command that redeploys the last successful revision to the hosts a stopped in-place deployment reached."""
    import shlex

    pairs = [("rollwright_application", record.application), ("rollwright_deployment_group", record.deployment_group),
             ("rollwright_hosts", "<its hosts>")]
    return ("ansible-playbook rollwright.deploy.rollback -i <inventory> "
            + " ".join(f"-e {shlex.quote(f'{k}={v}')}" for k, v in pairs))


def lambda_refusal(record: DeploymentRecord, lock: Optional[LockInfo], record_options: Optional[dict] = None,
                   aws: Optional[dict] = None) -> Optional[str]:
    """For a Lambda deployment that needs recovery: why this playbook does not do it and the command
    that does. None when it needs nothing (ended, and not holding the group's lock)."""
    holds = lock is not None and lock.deployment_id == record.deployment_id
    if record.status in TERMINAL_STATUSES and not holds:
        return None
    revision = record.revision or {}
    return (f"deployment {record.deployment_id} is a Lambda deployment ({revision.get('function')} alias "
            f"{revision.get('alias')}, {record.status}{', holding the group lock' if holds else ''}); the Lambda "
            "playbook recovers it (alias back on the recorded current version, record Stopped, lock released): "
            f"{lambda_recovery_command(record, record_options, aws)}  (docs/lambda.md, Recovery)")
