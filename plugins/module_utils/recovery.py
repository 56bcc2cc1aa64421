# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recovery of a deployment whose controller died, and the lease keeper that notices it.

Two parts (see docs/operations.md, "Recovery" and "The lease keeper"):

- :func:`select_deployment`, :func:`plan_recovery`, :func:`recover`: put every host a deployment
  took out of its load balancers back into exactly its recorded membership (hosts whose install
  failed stay out and are reported), wait until healthy, mark the deployment Stopped, release the
  group's lock. Pure logic over a :class:`RecordStore` and a load-balancer object; safe to repeat.
- :class:`LeaseKeeper` and :func:`spawn_lease_keeper`: a small detached process (own session,
  stdlib + our record store, no Ansible) started by the deployment's first step. While the
  ansible-playbook process lives it renews the group lock every few seconds, so the lock's ttl can
  be short (60 s); when that process dies (killed, cancelled by AWX, interrupted) it takes the lock
  over by its token (fencing off orphaned steps), marks the deployment Stopped at once, leaves the
  lock for recovery, and exits. It never touches a load balancer: it cannot know whether a host
  stopped in the middle of its install is fit for traffic.

Recovery does not trust the record (docs/security.md): memberships are checked against their host
and the load-balancer configuration, a superseded deployment is recovered only when named, and the
lock is taken over by token before anything changes (and renewed before each write: fencing).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
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
        from ansible_collections.rollwright.deploy.plugins.module_utils.inplace import haproxy_servers_by_lb_id

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
    from ansible_collections.rollwright.deploy.plugins.module_utils.loadbalancers.base import ConfigError, Membership

    config = lb_config if isinstance(lb_config, dict) else {}
    arns = set(config.get("target_group_arns") or [])
    tg_names = set(config.get("target_group_names") or [])
    elbs = set(config.get("classic_elb_names") or [])
    haproxy = None
    problems = []
    if config.get("haproxy"):
        from ansible_collections.rollwright.deploy.plugins.module_utils.loadbalancers.haproxy import parse_haproxy_config

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
        from ansible_collections.rollwright.deploy.plugins.module_utils.loadbalancers.base import Membership

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
    from ansible_collections.rollwright.deploy.plugins.module_utils.bluegreen import EXTRA_KEY, handed_over

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
    from ansible_collections.rollwright.deploy.plugins.module_utils import bluegreen

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


# ---------------------------------------------------------------------------------------------
# The lease keeper


def process_start(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = data.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, start: Optional[str]) -> bool:
    """The same process (pid and start time, so a recycled pid does not count) still runs, not a zombie."""
    if not pid or pid <= 1:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
    except OSError:
        if not os.path.isdir("/proc/self"):  # no procfs (not Linux): signal 0 only
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False
    fields = data.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return False
    return start is None or (len(fields) > 19 and fields[19] == str(start))


def _cmdline(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [p.decode(errors="replace") for p in fh.read().split(b"\0") if p]
    except OSError:
        return []


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().decode(errors="replace").rsplit(")", 1)[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def find_controller(pid: Optional[int] = None, depth: int = 6) -> tuple:
    """(pid, start) of the ansible-playbook process this worker belongs to.

    Ansible forks a worker per task from the ansible-playbook process, so that is normally the
    parent; the ancestors are searched for a command line naming ansible-playbook (or another
    ``ansible*`` entry point) in case a wrapper sits in between. Falls back to the parent.
    """
    first = os.getppid() if pid is None else pid
    current = first
    for _level in range(depth):
        if current <= 1:
            break
        args = _cmdline(current)
        if any(os.path.basename(a).startswith("ansible") for a in args[:3]):
            return current, process_start(current)
        current = _parent(current)
    return first, process_start(first)


def boot_id() -> Optional[str]:
    """This boot of this machine (a pid and its start time are only comparable within one boot)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def controller_identity(pid: int, start: Optional[str]) -> dict:
    """What recovery needs to check the controller itself: machine, boot, pid and start time."""
    return {"host": socket.gethostname(), "boot_id": boot_id(), "pid": int(pid), "start": start}


def _recorded_controller(record: DeploymentRecord) -> Optional[dict]:
    ident = record.extra.get("controller")
    if not isinstance(ident, dict) or not ident.get("host") or not ident.get("boot_id"):
        return None
    try:
        pid = int(ident.get("pid"))
    except (TypeError, ValueError):
        return None
    return dict(ident, pid=pid) if pid > 1 and ident.get("start") is not None else None


def controller_gone(record: DeploymentRecord) -> Optional[str]:
    """Why the deployment's controller is known dead, when it ran on this machine (same host name
    and boot) and its process (pid AND start time, /proc/<pid>/stat) is gone; else None (unknown:
    another machine, or alive)."""
    ident = _recorded_controller(record)
    if ident is None or ident["host"] != socket.gethostname() or ident["boot_id"] != boot_id():
        return None
    if process_alive(ident["pid"], str(ident["start"])):
        return None
    return f"its controller (ansible-playbook pid {ident['pid']} on this machine) is gone"


def controller_elsewhere(record: DeploymentRecord) -> str:
    """A clause for a refusal: where the controller ran, when this machine cannot check it."""
    ident = _recorded_controller(record)
    if ident is None:
        return ""
    if ident["host"] != socket.gethostname() or ident["boot_id"] != boot_id():
        return (f". Its controller ran on {ident['host']} (pid {ident['pid']}): only there can recovery check the "
                "process itself; from here the lease rules apply")
    return f". Its controller, ansible-playbook pid {ident['pid']} on this machine, is still running"


class LeaseKeeper:
    """The loop of the detached lease-keeper process (testable: store and clocks are handed in)."""

    def __init__(self, store: RecordStore, lock: dict, controller_pid: int, controller_start: Optional[str],
                 interval: float = 10.0, poll: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, alive: Callable[[int, Optional[str]], bool] = process_alive):
        self.store = store
        self.lock = dict(lock)
        self.pid = controller_pid
        self.start = controller_start
        self.interval = interval
        self.poll = poll
        self.sleep = sleep
        self.clock = clock
        self.alive = alive

    def controller_died(self) -> str:
        """Fence the dead controller's steps, mark the deployment Stopped, leave the lock for recovery.

        The lock is taken over by its token (a new token, same deployment): an orphaned controller
        step (Ansible's workers outlive a killed ansible-playbook) fails its next fencing check
        before it writes to AWS. Then the record is marked Stopped at once, so that a recovery
        started a moment later finds the deployment ended."""
        deployment_id = self.lock["deployment_id"]
        try:
            self.lock = self.store.take_over(
                self.lock["application"], self.lock["deployment_group"], deployment_id,
                owner=f"{self.lock.get('owner') or 'controller'} (controller died; held for recovery)",
                ttl=float(self.lock.get("ttl") or DEFAULT_LOCK_TTL), live=True, token=self.lock.get("token")).to_dict()
        except (LockLost, LockHeld, RecordNotFound):
            pass  # released, or already taken over (by recovery): not ours to touch
        record = self.store.get(deployment_id)
        if record.status in TERMINAL_STATUSES:
            return f"controller gone; {deployment_id} already {record.status}"
        self.store.update_status(
            deployment_id, "Stopped",
            error=(f"the controller (ansible-playbook pid {self.pid}) died or was interrupted at {now_iso()}; hosts may "
                   f"be out of their load balancers: run the rollwright.deploy.recover playbook for {deployment_id}"))
        self.store.set_extra(deployment_id, "interrupted", {"time": now_iso(), "controller_pid": self.pid,
                                                            "noticed_by": "lease keeper"})
        return f"controller died; {deployment_id} marked Stopped, lock left for recovery"

    def run(self, max_seconds: Optional[float] = None) -> str:
        """Loop until the deployment ends (lock released or taken over) or its controller dies."""
        started = self.clock()
        last_beat = None
        errors = 0
        try:  # recovery on this machine checks the controller's process itself
            self.store.set_extra(self.lock["deployment_id"], "controller", controller_identity(self.pid, self.start))
        except Exception:  # pylint: disable=broad-except  # without it recovery follows the lease rules
            pass
        while True:
            if not self.alive(self.pid, self.start):
                return self.controller_died()
            now = self.clock()
            if max_seconds is not None and now - started > max_seconds:
                return "time limit"
            if last_beat is None or now - last_beat >= self.interval:
                try:
                    self.store.heartbeat(self.lock)
                    record = self.store.get(self.lock["deployment_id"])
                    errors = 0
                except LockLost:
                    return "lock released or taken over; done"
                except Exception:  # pylint: disable=broad-except  # transient store errors: retried at the next beat
                    errors += 1
                    if errors > 30:
                        return "the record store keeps failing; giving up"
                    record = None
                last_beat = now
                if record is not None and record.status in TERMINAL_STATUSES:
                    return f"deployment {record.status}; done"
            self.sleep(self.poll)


def step_marker(work_dir: str, deployment_id: str) -> str:
    """The file in which a running controller step leaves its pid (which step of a deployment runs, for
    a person looking at a stuck controller; the lease keeper no longer waits for it: fencing stops it)."""
    return os.path.join(work_dir, f"{deployment_id}.step")


def write_step_marker(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"pid": os.getpid(), "start": process_start(os.getpid())}, fh)
    os.replace(tmp, path)


def clear_step_marker(path: str) -> None:
    step = read_step_marker(path)
    if step and int(step.get("pid") or 0) == os.getpid():
        try:
            os.unlink(path)
        except OSError:
            pass


def read_step_marker(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def controller_guard(controller_pid: int) -> Callable[[], None]:
    """A guard for the engines: raises ControllerGone once this worker's parent is no longer the controller."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.errors import ControllerGone

    def guard() -> None:
        if os.getppid() != controller_pid:
            raise ControllerGone(f"the controller (ansible-playbook pid {controller_pid}) died; this step stops here")

    return guard


def collections_root(path: Optional[str] = None) -> Optional[str]:
    """The directory that holds ``ansible_collections`` for this file (symlinks not resolved)."""
    path = os.path.abspath(path or __file__)
    parts = path.split(os.sep)
    for index in range(len(parts) - 1, 0, -1):
        if parts[index] == "ansible_collections":
            return os.sep.join(parts[:index]) or os.sep
    return None


def _import_root(work_dir: str) -> str:
    root = collections_root()
    if root:
        return root
    # Loaded from a resolved path (no ansible_collections in it): make a private link farm.
    collection = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    link_dir = os.path.join(work_dir, "pythonpath", "ansible_collections", "rollwright")
    os.makedirs(link_dir, exist_ok=True)
    link = os.path.join(link_dir, "deploy")
    if not os.path.islink(link):
        os.symlink(collection, link)
    return os.path.join(work_dir, "pythonpath")


# The keeper's configuration (AWS options with keys and session token, the lock token) is read from
# stdin, never from argv: any local user can read /proc/<pid>/cmdline.
_BOOT = ("import sys, json; sys.path.insert(0, sys.argv[1]); "
         "from ansible_collections.rollwright.deploy.plugins.module_utils.recovery import lease_keeper_main; "
         "sys.exit(lease_keeper_main(json.load(sys.stdin)))")


def spawn_lease_keeper(record_options: dict, aws_options: dict, lock: dict, controller: tuple,
                       interval: float, work_dir: str, log_path: Optional[str] = None) -> dict:
    """Start the detached lease keeper (new session: a kill of ansible-playbook's process group spares
    it), its configuration written to its stdin. Returns ``{"pid", "start"}``."""
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    # The keeper only renews the lock: it sends no notifications, and their secrets stay off its command line.
    record_options = {k: v for k, v in record_options.items() if k != "notifications"}
    config = {"record": record_options, "aws": aws_options, "lock": lock, "controller_pid": controller[0],
              "controller_start": controller[1], "interval": interval}
    log = open(log_path or os.devnull, "ab")  # pylint: disable=consider-using-with
    try:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-c", _BOOT, _import_root(work_dir)],
            stdin=subprocess.PIPE, stdout=log, stderr=log, close_fds=True, start_new_session=True, cwd="/")
        with proc.stdin:  # a few KiB: fits the pipe, so this never blocks on the child
            proc.stdin.write(json.dumps(config).encode("utf-8"))
    finally:
        log.close()
    return {"pid": proc.pid, "start": process_start(proc.pid)}


def stop_lease_keeper(keeper: Optional[dict]) -> None:
    """Ask a lease keeper to exit now (it would anyway at its next beat once the lock is released)."""
    import signal

    if keeper and keeper.get("pid") and process_alive(int(keeper["pid"]), keeper.get("start")):
        try:
            os.kill(int(keeper["pid"]), signal.SIGTERM)
        except OSError:
            pass


def lease_keeper_main(config: dict) -> int:
    """Entry point of the detached process."""
    import signal

    from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

    def _terminate(*_args):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C on the terminal is for ansible-playbook, not us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    record = dict(config.get("record") or {})
    backend = record.pop("backend", None) or "sqlite"
    client_factory = None
    if backend == "dynamodb":
        from ansible_collections.rollwright.deploy.plugins.module_utils.aws_session import aws_client_factory

        client_factory = aws_client_factory(config.get("aws") or {}).client
    store = open_store(backend, record, client_factory=client_factory)
    keeper = LeaseKeeper(store, config["lock"], int(config["controller_pid"]), config.get("controller_start"),
                         interval=float(config.get("interval") or 10.0))
    outcome = keeper.run()
    sys.stderr.write(f"{now_iso()} lease keeper for {config['lock'].get('deployment_id')}: {outcome}\n")
    return 0
