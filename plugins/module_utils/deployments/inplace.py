# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's side of an in-place rolling deployment.

The role `rollwright.deploy.inplace` alternates host-side calls of `host_lifecycle` with the
controller steps below (the `inplace_step` action plugin calls them):

    start  - validate, fetch the revision, order hosts, create the record, take the lock
    plan   - judge the previous batch, pick the next one (or finish: status, lock, summary)
    block  - BlockTraffic for the batch: record membership, deregister, wait for draining
    allow  - AllowTraffic for the hosts still healthy: register the recorded membership, wait healthy

Between steps the whole state is a plain JSON dict (an Ansible fact), and everything that matters
for recovery is also written to the deployment record before it is acted on.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.dry_run import NO_LOAD_BALANCER, inplace_plan
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import config as dc
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import lifecycle
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.alarms import AutoRollback
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.session import (  # noqa: F401  (DEFAULT_LOCK_TTL re-exported)
    DEFAULT_LOCK_TTL,
    DeploymentSession,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.redact import redact_text
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import (
    TERMINAL_STATUSES,
    DeploymentRecord,
    HostRecord,
    Lock,
    LockHeld,
    RecordStore,
    now_iso,
)

Progress = Callable[[str], None]

# The host-side calls of one batch, by the place they take around the controller's traffic steps.
PRE_BLOCK = "pre_block"
MAIN = "main"
POST_ALLOW = "post_allow"
# How often a paced batch looks up from its events at the least (a host to take out, the hosts going).
PACED_LOOK_EVERY = 1.0


def unfinished(waited: Any) -> set:
    """The hosts (load-balancer ids) a load balancer's wait left unfinished: still draining, or not healthy."""
    return set(getattr(waited, "pending", None) or getattr(waited, "failed", None) or [])


# Where a successful deployment's record keeps what its waits learnt of the load balancer (extra.inplace), for the
# group's next deployment.
LB_LEARNT = "load_balancer_learnt"

# What the hosts are told about the revision (hook environment, revision.json on the host).
HOST_REVISION_KEYS = ("source", "bucket", "key", "version", "etag", "sha256", "bundle_type")


class InPlaceError(RollwrightError):
    """A deployment cannot start or go on; the message says why and what to do."""


# ControllerGone (errors.py) is raised by the guard: the step stops before its next change.


@dataclass
class HostOutcome:
    """What one host-side call reported for one host."""

    ok: bool
    events: list
    message: str
    unreachable: bool = False


def host_outcome(result: Optional[dict]) -> HostOutcome:
    """Read a registered `host_lifecycle` result (or an unreachable/failed task result)."""
    if not result:
        return HostOutcome(False, [], "no result from the host (the task did not run)")
    if result.get("unreachable"):
        return HostOutcome(False, [], f"host unreachable: {result.get('msg', '')}".strip(), unreachable=True)
    events = list(result.get("events") or [])
    if result.get("failed") or result.get("lifecycle_failed"):  # lifecycle_failed: a failure the role handles
        # the message may quote hook output: it reaches records and the summary
        return HostOutcome(False, events, redact_text(str(result.get("msg") or "failed")))
    if result.get("skipped"):
        return HostOutcome(False, events, "the host task was skipped")
    return HostOutcome(True, events, "")


def host_calls(with_load_balancer: bool) -> dict[str, list[str]]:
    """The host-side event groups of one batch, split around BlockTraffic and AllowTraffic."""
    events = lifecycle.inplace_events(with_load_balancer)
    groups = lifecycle.split_host_calls(events)
    if not with_load_balancer:
        return {MAIN: groups[0]}
    pre, main, post = groups
    return {PRE_BLOCK: pre, MAIN: main, POST_ALLOW: post}


def calls_needed(host_calls_: dict[str, list[str]], host_states: dict[str, Optional[dict]]) -> tuple[dict, dict]:
    """Which hosts need the BeforeBlockTraffic call, and which have a previous revision.

    That call runs only the last successful revision's scripts: a host whose stored appspec has none
    for its events is not called (``InPlaceRun.with_uncalled`` records the events). A host that could
    not be read, or whose appspec is gone, is called: the host engine then says what happened.
    """
    events = set(host_calls_.get(PRE_BLOCK) or [])
    if not events:
        return {}, {}
    needed, previous = [], {}
    for host, info in host_states.items():
        last = (info or {}).get("last_successful") if info else None
        previous[host] = bool(last)
        hooks = (last or {}).get("hook_events") if isinstance(last, dict) else None
        if not (isinstance(hooks, list) and all(isinstance(h, str) for h in hooks)):
            hooks = None  # not known (or not what a host engine says): the call is made, the engine decides
        if info is None or (last and (hooks is None or events & set(hooks))):
            needed.append(host)
    return {PRE_BLOCK: needed}, previous


def _revision_identity(revision: dict) -> Optional[str]:
    return revision.get("sha256") if revision else None


def lb_target_id(host: dict) -> str:
    """How load balancers know a host: its EC2 instance id, else its inventory name (HAProxy maps names to servers)."""
    return host.get("instance_id") or host["name"]


def haproxy_servers_by_lb_id(load_balancer: Optional[dict], hosts: list[dict]) -> Optional[dict]:
    """The load-balancer configuration with ``haproxy.servers`` keyed the way the engine addresses hosts.

    Load balancers know a host by :func:`lb_target_id` (its EC2 instance id when it has one), but
    ``haproxy.servers`` is written by inventory hostname, and a host without an entry is the server of
    its inventory hostname. This returns a copy whose ``servers`` maps every host's lb id to its server
    name: ``servers[inventory name]`` if given (an entry keyed by the instance id is accepted too),
    else the inventory name. Other keys and configurations without ``haproxy`` are returned as they are.
    """
    if not isinstance(load_balancer, dict) or not isinstance(load_balancer.get("haproxy"), dict):
        return load_balancer
    haproxy = dict(load_balancer["haproxy"])
    given = haproxy.get("servers") or {}
    if not isinstance(given, dict):
        return load_balancer  # the adapter's validation names the field and what it expects
    servers = {}
    for host in hosts:
        name, instance_id = host["name"], host.get("instance_id")
        servers[lb_target_id(host)] = given.get(name) or (given.get(instance_id) if instance_id else None) or name
    haproxy["servers"] = servers
    return dict(load_balancer, haproxy=haproxy)


def classify_hosts(hosts: list[dict], host_states: dict[str, Optional[dict]], lb_health: dict[str, str],
                   revision: dict) -> list[dc.HostInfo]:
    """Turn what hosts and the load balancer report into the planner's view.

    host_states[name] is the `host_deployment_info` result (None: the host could not be read, which
    makes it unhealthy). lb_health maps instance id -> healthy/unhealthy/unused/...
    """
    infos = []
    for host in hosts:
        lb_state = lb_health.get(lb_target_id(host), None)
        healthy = None if lb_state in (None, "unused", "unknown") else lb_state == "healthy"
        infos.append(host_info(host["name"], host_states.get(host["name"]), healthy, revision))
    return infos


def host_info(name: str, state: Optional[dict], lb_healthy: Optional[bool], revision: dict) -> dc.HostInfo:
    """One host as the planner sees it: unhealthy when it could not be read (``state`` None), else as its load
    balancer says (None: not known); its revision unknown, old or current, from its last successful deployment."""
    last = (state or {}).get("last_successful") or {}
    current = (last.get("revision") or {}) if isinstance(last, dict) else {}
    current = current if isinstance(current, dict) else {}
    wanted = _revision_identity(revision)
    if not last:
        revision_state = "unknown"
    elif wanted and _revision_identity(current) == wanted:
        revision_state = "current"
    else:
        revision_state = "old"
    return dc.HostInfo(name=name, healthy=False if state is None else lb_healthy, revision=revision_state,
                       last_install_succeeded=revision_state == "current")


def merge_original(snapshot: dict, ids: dict, original: dict) -> dict:
    """Add to a membership snapshot the memberships a failed deployment recorded for hosts it left out.

    ``snapshot``: instance id -> [Membership]; ``ids``: host -> instance id; ``original``: host ->
    [membership dict]. A rollback records and restores the union, so a host the failed deployment
    left out of its load balancer is put back once it runs the old revision.

    An HAProxy membership is a server line's state, not a registration: the snapshot sees the server
    the failed deployment left in ``maint``, its record says what it was before (``ready``, weight).
    For the same (instance, backend, server) the ORIGINAL record's membership replaces the snapshot's,
    so one server is never asked for two states.
    """
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import Membership

    def server_line(m: Any) -> Optional[tuple]:
        return (m.instance, m.backend, m.server) if m.kind == "haproxy" else None

    merged = {k: list(v) for k, v in snapshot.items()}
    for host, instance_id in ids.items():
        current = merged.setdefault(instance_id, [])
        for data in original.get(host) or []:
            membership = Membership.from_dict(data, f"original_memberships[{host}]")
            line = server_line(membership)
            same = [i for i, m in enumerate(current) if line is not None and server_line(m) == line]
            if same:
                current[same[0]] = membership
                for extra in reversed(same[1:]):
                    del current[extra]
            elif membership not in current:
                current.append(membership)
    return merged


@dataclass
class RollbackPlan:
    """What a rollback deploys (``revision``: the recorded identity of the good revision), where, and
    which memberships it must restore."""

    rollback_of: str
    target_deployment_id: str
    revision: dict
    hosts: list
    original_memberships: dict

    def to_dict(self) -> dict:
        return {"rollback_of": self.rollback_of, "target_deployment_id": self.target_deployment_id,
                "revision": self.revision, "hosts": self.hosts, "original_memberships": self.original_memberships}


def describe_hosts(record: DeploymentRecord) -> str:
    """'host1 Failed at ValidateService (out of its load balancer), host2 Succeeded' for messages."""
    parts = []
    for host in record.hosts:
        failed = next((e.name for e in host.events if e.status == "Failed"), None)
        text = f"{host.name} {host.status}" + (f" at {failed}" if failed else "")
        if host.lb_membership and not host.lb_restored:
            text += " (out of its load balancer)"
        parts.append(text)
    return ", ".join(parts) or "no host"


def touched_hosts(record: DeploymentRecord) -> list:
    """Hosts a deployment reached (they may hold its revision, or have had their application stopped)."""
    return [h.name for h in record.hosts if h.events or h.status in ("InProgress", "Succeeded", "Failed", "Unknown")]


def plan_rollback(store: RecordStore, application: str, deployment_group: str, rollback_of: Optional[str] = None,
                  rollback_to: Optional[str] = None, hosts: Optional[list] = None) -> RollbackPlan:
    """Work out a rollback of ``rollback_of`` (default: the group's newest deployment).

    Target revision: ``rollback_to``'s (a deployment of the same group), else for an automatic
    rollback (``hosts`` None) the group's last successful deployment's, else (a rollback on request)
    the newest successful deployment other than the rolled-back one. Hosts: those
    given, else every host the rolled-back deployment reached. Nothing is guessed: without a good
    revision this raises InPlaceError naming the hosts and their state.
    """
    if rollback_of:
        failed = store.get(rollback_of)
    else:
        newest = store.list(application, deployment_group, limit=1)
        if not newest:
            raise InPlaceError(f"rollback: {application}/{deployment_group} has no deployment to roll back")
        failed = store.get(newest[0].deployment_id)
    if (failed.application, failed.deployment_group) != (application, deployment_group):
        raise InPlaceError(f"rollback: deployment {failed.deployment_id} belongs to "
                           f"{failed.application}/{failed.deployment_group}, not {application}/{deployment_group}")
    if failed.status not in TERMINAL_STATUSES:
        raise InPlaceError(f"rollback: deployment {failed.deployment_id} is {failed.status}; it must end first (if its "
                           "controller died, run the rollwright.deploy.recover playbook)")
    if rollback_to:
        target = store.get(rollback_to)
        if (target.application, target.deployment_group) != (application, deployment_group):
            raise InPlaceError(f"rollwright_rollback_to: deployment {rollback_to} belongs to "
                               f"{target.application}/{target.deployment_group}, not {application}/{deployment_group}")
        if target.deployment_type != "in_place" or not target.revision:
            raise InPlaceError(f"rollwright_rollback_to: deployment {rollback_to} has no in-place revision recorded")
    elif hosts is None:
        target = store.last_successful(application, deployment_group)
    else:
        target = None
        for summary in store.list(application, deployment_group, status="Succeeded", limit=50):
            if summary.deployment_id != failed.deployment_id:
                target = store.get(summary.deployment_id)
                break
    if target is None or not target.revision:
        raise InPlaceError(
            f"rollback of {failed.deployment_id}: {application}/{deployment_group} has no successful deployment "
            f"to take a revision from, so nothing was rolled back. Hosts of {failed.deployment_id}: "
            f"{describe_hosts(failed)}. Deploy a known good revision yourself")
    original = {h.name: list(h.lb_membership) for h in failed.hosts if h.lb_membership and not h.lb_restored}
    chosen = list(hosts) if hosts is not None else touched_hosts(failed)
    if not chosen:
        raise InPlaceError(f"rollback of {failed.deployment_id}: it reached no host; nothing to roll back")
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery

    # The rollback registers these memberships again: they are checked like recovery's.
    problems = recovery.membership_problems(failed, recovery.load_balancer_config(failed),
                                            hosts=[h for h in original if h in chosen])
    if problems:
        raise InPlaceError(recovery.membership_refusal(failed, problems, "rollback"))
    return RollbackPlan(failed.deployment_id, target.deployment_id, dict(target.revision), chosen,
                        {h: ms for h, ms in original.items() if h in chosen})


def revision_source(identity: dict) -> dict:
    """The ``rollwright_revision`` input that fetches a recorded revision identity again.

    S3: by bucket, key, version id and ETag. Local: the controller cache path recorded (the bytes
    deployed), else the original path. The caller checks the fetched bundle's SHA-256 against the
    recorded one, so a changed file is refused rather than deployed.
    """
    import os

    if identity.get("source") == "s3" or identity.get("bucket"):
        return {"s3": {"bucket": identity["bucket"], "key": identity["key"], "version": identity.get("version"),
                       "etag": identity.get("etag")}, "bundle_type": identity.get("bundle_type")}
    for candidate in (identity.get("path"), identity.get("local_path")):
        if candidate and os.path.exists(candidate):
            return {"path": candidate, "bundle_type": identity.get("bundle_type")}
    raise InPlaceError(f"rollback: the recorded bundle is gone from this controller ({identity.get('path')}, "
                       f"originally {identity.get('local_path')}); local revisions can only be rolled back on the "
                       "controller that deployed them while its bundle cache holds them, use an S3 revision otherwise")


class InPlaceRun:
    """One in-place deployment, step by step; stateless between calls apart from the state dict."""

    def __init__(self, store: RecordStore, load_balancer: Any = None, progress: Optional[Progress] = None,
                 alarms: Any = None, guard: Optional[Callable[[], None]] = None):
        self.store = store
        self.lb = load_balancer
        self.alarms = alarms  # an alarms.AlarmWatch (stop_reason()), or None
        # guard() raises ControllerGone once the controller died (Ansible's workers run in their own
        # session, so they outlive a killed ansible-playbook): checked before every change and at
        # every poll of a wait, so an orphaned step never acts after recovery may have started.
        self.guard = guard or (lambda: None)
        say = progress or (lambda message: None)

        def _progress(message: str) -> None:
            self.guard()
            say(message)

        self.progress = _progress

    # ------------------------------------------------------------------ start
    def start(self, *, application: str, deployment_group: str, hosts: list[dict],
              host_states: Optional[dict[str, Optional[dict]]], revision: dict, appspec: dict, config: Any,
              load_balancer: Optional[dict], options: dict, creator: str = "user",
              rollback_of: Optional[str] = None, lock_ttl: float = DEFAULT_LOCK_TTL, owner: Optional[str] = None,
              force_lock: bool = False, auto_rollback: Optional[dict] = None,
              original_memberships: Optional[dict] = None,
              on_locked: Optional[Callable[[Lock], Any]] = None, trigger: Optional[dict] = None) -> dict:
        """Validate, create the record and take the lock.

        ``host_states``: each host's deployment state as it reported it (None for a host that could not be read);
        None when the staging calls will read them (``read_hosts`` then plans again before the first batch).

        A rollback (``rollback_of`` set) redeploys every host given (none is skipped as "already on
        the revision"), deploys first the hosts that ``original_memberships`` lists (the failed
        deployment left them out of their load balancers) and puts them back into exactly those
        memberships. Alarms are not checked for a rollback: it is the answer to them.
        """
        resolved = dc.resolve_config(config)
        rollback = AutoRollback.from_dict(auto_rollback)
        original_memberships = {h: list(ms) for h, ms in (original_memberships or {}).items() if ms}
        if self.alarms is not None and not rollback_of:
            reason = self.alarms.stop_reason()
            if reason:
                raise InPlaceError(f"the deployment is refused before it starts: {reason}. Nothing was changed")
        with_lb = bool(self.lb)
        hosts_read = host_states is not None
        if not hosts_read:
            if rollback_of:
                raise InPlaceError("host_states: a rollback reads its hosts before it starts")
            # Read later, in the staging calls (see ``read_hosts``): planned for now from the load balancer's health,
            # every host readable, its revision unknown.
            host_states = {h["name"]: {} for h in hosts}
        infos, dummy = self.classify(hosts, host_states, load_balancer, revision, rollback_of, original_memberships)
        planner = dc.BatchPlanner(resolved, infos)
        planner.validate()  # a minimum that leaves no room fails here, before anything is touched
        if self.lb:
            # before any host leaves: what the waits read, and proof that a host taken out can be put back
            self.lb.preflight([lb_target_id(h) for h in hosts])
            # what the group's last deployment learnt of the load balancer's timing (checked as it is read)
            previous = self.store.last_successful(application, deployment_group)
            if previous is not None:
                self.lb.import_cache((previous.extra.get("inplace") or {}).get(LB_LEARNT))

        record = DeploymentRecord(
            application=application, deployment_group=deployment_group, deployment_type="in_place",
            revision=dict(revision), configuration=config if isinstance(config, (str, dict)) else resolved.name,
            creator=creator, rollback_of=rollback_of, status="Created",
            hosts=[HostRecord(name=h["name"], instance_id=h.get("instance_id")) for h in hosts],
            extra={"trigger": dict(trigger)} if trigger else {},
        )
        try:
            session = DeploymentSession.open(self.store, record, ttl=lock_ttl, owner=owner, force=force_lock,
                                             guard=self.guard, progress=self.progress)
        except LockHeld as exc:
            raise InPlaceError(str(exc)) from exc
        deployment_id = session.deployment_id
        lock = Lock.from_dict(session.lock)
        needed, previous = calls_needed(host_calls(with_lb), {h["name"]: host_states.get(h["name"]) for h in hosts})
        if not hosts_read:
            needed = {}  # not known yet: a session started before the read holds BeforeBlockTraffic where it may be due
        keeper = on_locked(lock) if on_locked else None  # e.g. start the lease keeper before going InProgress
        session.mark_in_progress()
        state = {
            "deployment_id": deployment_id,
            "application": application,
            "deployment_group": deployment_group,
            "config": resolved.name,
            "minimum": planner.minimum,
            "planner": planner.to_dict(),
            "plan_preview": dc.plan_preview(resolved, infos),
            "with_load_balancer": with_lb,
            "host_calls": host_calls(with_lb),
            "calls_needed": needed,
            "previous_revision": previous,
            "instance_ids": {h["name"]: lb_target_id(h) for h in hosts},
            "lock": lock.to_dict(),
            "lease_keeper": keeper,
            "creator": creator,
            "rollback_of": rollback_of,
            "auto_rollback": rollback.to_dict(),
            "original_memberships": original_memberships,
            "revision": dict(revision),
            "host_revision": {k: revision.get(k) for k in HOST_REVISION_KEYS if revision.get(k) is not None},
            "appspec": appspec,
            "options": dict(options),
            "batch": [],
            "active": [],
            "hosts_read": hosts_read,
            "stage_hosts": planner.outcome().pending,  # the hosts a batch will deploy: the ones to pre-stage
            "staged": [],
            "batch_number": 0,
            "batch_times": [],
            "done": False,
            "status": "InProgress",
            "started": now_iso(),
            "started_at": time.time(),
        }
        # The load-balancer configuration (target groups, classic ELBs, HAProxy instances, backends and
        # servers; no secret is in it) is recorded so that recovery can restore memberships without it.
        self.store.set_extra(deployment_id, "inplace", {
            "plan_preview": state["plan_preview"], "minimum": planner.minimum,
            "load_balancer": options["load_balancer"] if "load_balancer" in options else load_balancer})
        if not with_lb:
            self.progress(f"deployment {deployment_id}: WARNING {NO_LOAD_BALANCER}")
        self.progress(f"deployment {deployment_id}: {len(hosts)} hosts, {resolved.name}, minimum healthy "
                      f"{planner.minimum}, batches {state['plan_preview']}")
        return state

    def classify(self, hosts: list[dict], host_states: dict[str, Optional[dict]], load_balancer: Optional[dict],
                 revision: dict, rollback_of: Optional[str], original_memberships: dict) -> tuple[list, dict[str, str]]:
        """The hosts as the batch planner sees them (health read from the load balancer), and that health."""
        lb_health: dict[str, str] = {}
        if self.lb:
            aws_lb = bool((load_balancer or {}).get("target_group_arns") or (load_balancer or {}).get("classic_elb_names"))
            missing = [h["name"] for h in hosts if not h.get("instance_id")]
            if aws_lb and missing:
                raise InPlaceError(
                    "rollwright_load_balancer names ELB target groups or classic ELBs, but these hosts have no EC2 "
                    f"instance id (set the host variable named by rollwright_instance_id_var): {', '.join(missing)}")
            lb_health = self.lb.health([lb_target_id(h) for h in hosts])
        infos = classify_hosts(hosts, host_states, lb_health, {} if rollback_of else revision)
        # A host the failed deployment left out of its load balancer is not in service: deployed first.
        infos = [dc.HostInfo(name=i.name, healthy=False, revision=i.revision, last_install_succeeded=i.last_install_succeeded)
                 if i.name in original_memberships else i for i in infos]
        return infos, lb_health

    def dry_run(self, *, application: str, deployment_group: str, hosts: list[dict],
                host_states: dict[str, Optional[dict]], revision: dict, appspec: dict, config: Any,
                load_balancer: Optional[dict], auto_rollback: Optional[dict] = None, rollback: Optional[dict] = None,
                original_memberships: Optional[dict] = None) -> dict:
        """What start and the batches would do, from reads only (no record, no lock, no load-balancer change)."""
        original_memberships = {h: list(ms) for h, ms in (original_memberships or {}).items() if ms}
        rollback_of = (rollback or {}).get("rollback_of")
        infos, lb_health = self.classify(hosts, host_states, load_balancer, revision, rollback_of, original_memberships)
        alarm = self.alarms.stop_reason() if self.alarms is not None and not rollback_of else None
        state = inplace_plan(
            application=application, deployment_group=deployment_group, hosts=hosts, infos=infos, config=config,
            revision=revision, appspec=appspec, host_calls=host_calls(bool(self.lb)), load_balancer=load_balancer,
            lb_health=lb_health, host_states=host_states, lock=self.store.get_lock(application, deployment_group),
            alarm_reason=alarm, auto_rollback=AutoRollback.from_dict(auto_rollback).to_dict(),
            last_successful=self.store.last_successful(application, deployment_group), rollback=rollback)
        state["host_revision"] = {k: revision.get(k) for k in HOST_REVISION_KEYS if revision.get(k) is not None}
        return state

    # ------------------------------------------------------------------ helpers
    def _session(self, state: dict) -> DeploymentSession:
        return DeploymentSession.from_state(self.store, state, guard=self.guard, progress=self.progress)

    def _update_inplace_extra(self, deployment_id: str, **fields: Any) -> None:
        """Change some keys of the record's ``extra.inplace`` (what start recorded there stays)."""
        recorded = self.store.get(deployment_id).extra.get("inplace") or {}
        self.store.set_extra(deployment_id, "inplace", dict(recorded, **fields))

    def _heartbeat(self, state: dict) -> None:
        state["lock"] = self._session(state).renew()

    def _alarm_stop(self, state: dict) -> Optional[dict]:
        """When an alarm is in ALARM (or cannot be read, unless ignored): finish as Stopped and return the state."""
        if self.alarms is None or state.get("rollback_of"):
            return None
        reason = self.alarms.stop_reason()
        if not reason:
            return None
        self.progress(f"deployment {state['deployment_id']}: stopping - {reason}")
        return self.finish(state, stop_reason=f"stopped by CloudWatch alarms: {reason}", status="Stopped", cause="alarm")

    def _control_point(self, state: dict) -> Optional[dict]:
        """Before a batch starts (the previous one is back in service): honour stop / pause / resume
        requests. A pause holds here, renewing the lock; a stop finishes as Stopped (with rollback:
        the automatic-rollback path redeploys the last successful revision to the hosts reached)."""
        deployment_id = state["deployment_id"]
        point = control_requests.SafePoint(self.store, deployment_id, control_requests.APPLICABLE["in_place"],
                                           heartbeat=lambda: self._heartbeat(state), progress=self.progress)
        decision = point.check()
        if decision.action != "stop":
            return None
        state["stop_rollback"] = decision.rollback
        self.progress(f"deployment {deployment_id}: {decision.reason}")
        # Done before finish(), which refuses whatever is still open once the deployment has ended.
        point.done(decision, "stopped before the next batch" + (
            "; a rollback deployment follows" if decision.rollback and not state.get("rollback_of") else ""))
        return self.finish(state, stop_reason=decision.reason, status="Stopped", cause="request")

    def _record_events(self, state: dict, host: str, outcome: HostOutcome, call: str) -> None:
        deployment_id = state["deployment_id"]
        seen = set()
        for event in outcome.events:
            seen.add(event.get("name"))
            self.store.event(deployment_id, host, event["name"], event.get("status") or "Failed",
                             start=event.get("start"), end=event.get("end"),
                             scripts=event.get("scripts") or [], message=event.get("message"))
        if not outcome.ok and not outcome.events:
            # Nothing ran (unreachable host): the call's first event failed, the rest never started.
            names = state["host_calls"][call]
            if names:
                self.store.event(deployment_id, host, names[0], "Failed", end=now_iso(), message=outcome.message)

    def _fail_host(self, state: dict, host: str, message: str) -> None:
        planner = dc.BatchPlanner.from_dict(state["planner"])
        planner.record(host, False)
        state["planner"] = planner.to_dict()
        state.setdefault("failures", {})[host] = message
        self.store.update_host(state["deployment_id"], host, status="Failed")
        self.progress(f"{host}: FAILED - {message}")

    @staticmethod
    def with_uncalled(state: dict, call: str, results: dict[str, Optional[dict]]) -> dict[str, Optional[dict]]:
        """The results of a host call, with what the hosts it was not needed on would have reported.

        A host is not called for BeforeBlockTraffic when its last successful revision has no script
        for it (``calls_needed``, worked out at start from what the hosts reported): its events are
        recorded as the host engine records them, without the round trip.
        """
        needed = (state.get("calls_needed") or {}).get(call)
        if needed is None:
            return results
        merged = dict(results)
        for host in state["active"]:
            if host in needed:
                continue
            previous = (state.get("previous_revision") or {}).get(host)
            events = [{"name": name, "status": "Succeeded" if previous else "Skipped",
                       "message": "no scripts for this event" if previous
                       else "first deployment on this host: no previous revision to run scripts of"}
                      for name in state["host_calls"].get(call, [])]
            merged[host] = {"changed": False, "events": events}
        return merged

    def judge(self, state: dict, call: str, results: dict[str, Optional[dict]]) -> list[str]:
        """Record a host-side call's results for the active hosts; return the hosts still fine."""
        still_ok = []
        for host in state["active"]:
            outcome = host_outcome(results.get(host))
            self._record_events(state, host, outcome, call)
            if outcome.ok:
                still_ok.append(host)
            else:
                self._fail_host(state, host, outcome.message)
        state["active"] = still_ok
        return still_ok

    def _mark_in_progress(self, state: dict, call: str, hosts: Optional[list[str]] = None) -> None:
        self.guard()
        started = now_iso()
        for host in state["active"] if hosts is None else hosts:
            for name in state["host_calls"].get(call, []):
                self.store.event(state["deployment_id"], host, name, "InProgress", start=started)

    # ------------------------------------------------------------------ plan
    def plan(self, state: dict, last_results: dict[str, Optional[dict]], within: Optional[list] = None) -> dict:
        """Judge the last host call of the previous batch, then pick the next batch or finish.

        ``within``: the hosts of the Ansible play batch this step runs for (a ``serial`` play over
        ``plan_preview``); the batch is picked among them only. When none of them can go now while
        other hosts wait, the state comes back with an empty batch and not done: a later step without
        ``within`` deploys the rest. ``waiting`` lists the hosts not deployed yet (the current batch aside).
        """
        if not state["batch"]:
            self._heartbeat(state)
        self.close_batch(state, last_results)
        stopped = self._alarm_stop(state)
        if stopped is not None:
            return stopped
        stopped = self._control_point(state)
        if stopped is not None:
            return stopped
        planner = dc.BatchPlanner.from_dict(state["planner"])
        stop_reason = planner.should_stop()
        batch = [] if stop_reason else planner.next_batch(within)
        state["planner"] = planner.to_dict()
        waiting = planner.waiting()
        state["waiting"] = waiting
        if not batch:
            if stop_reason or not waiting:
                return self.finish(state, stop_reason)
            return state  # nothing of this play batch can go now; the rest goes in a later step
        state["batch_number"] += 1
        state["batch"] = list(batch)
        state["active"] = list(batch)
        state["batch_started_at"] = time.time()
        needed = (state.get("calls_needed") or {}).get(PRE_BLOCK)
        state["pre_block_hosts"] = [h for h in batch if needed is None or h in needed]
        for host in batch:
            self.store.update_host(state["deployment_id"], host, status="InProgress")
        first_call = PRE_BLOCK if state["with_load_balancer"] else MAIN
        self._mark_in_progress(state, first_call)
        self.progress(f"batch {state['batch_number']}: {', '.join(batch)}")
        return state

    def close_batch(self, state: dict, last_results: dict[str, Optional[dict]]) -> dict:
        """Judge the last host call of the current batch (if any): its hosts that passed succeeded."""
        if state["batch"]:
            self._heartbeat(state)  # fencing: a step whose controller died or whose lock was taken over stops here
            last_call = POST_ALLOW if state["with_load_balancer"] else MAIN
            ok_hosts = self.judge(state, last_call, last_results)
            planner = dc.BatchPlanner.from_dict(state["planner"])
            for host in ok_hosts:
                planner.record(host, True)
                self.store.update_host(state["deployment_id"], host, status="Succeeded")
            state["planner"] = planner.to_dict()
            state["batch_times"].append(round(time.time() - state.pop("batch_started_at", time.time()), 2))
            state["batch"] = []
            state["active"] = []
        return state

    # ------------------------------------------------------------------ traffic
    def block(self, state: dict, pre_block_results: dict[str, Optional[dict]], drain_timeout: Optional[float]) -> dict:
        """BlockTraffic: record each host's membership, deregister the batch, wait until drained."""
        state = self.begin_block(state, pre_block_results)
        hosts = list(state["active"])
        if state.get("done") or not hosts:
            return state
        leaving = self.block_hosts(state, hosts)
        waited = self.lb.wait_drained(leaving, timeout=drain_timeout, progress=self.progress)
        self.guard()
        self.drained(state, hosts, waited)
        self._mark_in_progress(state, MAIN)
        return state

    def begin_block(self, state: dict, pre_block_results: dict[str, Optional[dict]]) -> dict:
        """The batch's BlockTraffic up to the first deregistration: judge BeforeBlockTraffic, read the alarms, and
        read every host's memberships. ``block_hosts`` then records them and takes the hosts out (all at once, or a
        few at a time: see drain_pacing)."""
        self._heartbeat(state)
        self.judge(state, PRE_BLOCK, self.with_uncalled(state, PRE_BLOCK, pre_block_results))
        stopped = self._alarm_stop(state)  # before any host of the batch leaves its load balancer
        if stopped is not None:
            return stopped
        hosts = state["active"]
        if not hosts:
            return state
        ids = {h: state["instance_ids"][h] for h in hosts}
        actual = self.lb.snapshot(list(ids.values()))
        # A rollback also restores what the failed deployment recorded for the hosts it left out.
        snapshot = merge_original(actual, ids, state.get("original_memberships") or {})
        # The running batch's only (allow() puts them back); each host's stays in the record for recovery. Kept for
        # every host so far, the state every later step carries and copies grew with the fleet.
        state["memberships"] = {h: [m.to_dict() for m in snapshot.get(i, [])] for h, i in ids.items()}
        # Only what is registered now is deregistered.
        state["leaving"] = {h: [m.to_dict() for m in actual.get(i, [])] for h, i in ids.items()}
        return state

    def block_hosts(self, state: dict, hosts: list[str]) -> list:
        """Deregister ``hosts`` (of the batch ``begin_block`` recorded): their BlockTraffic starts now. Returns the
        memberships left, for the wait until they are drained."""
        from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import Membership

        self.store_event_all(state, hosts, "BlockTraffic", "InProgress")
        for host in hosts:
            # Written BEFORE anything changes: recovery restores exactly this.
            self.store.update_host(state["deployment_id"], host, lb_membership=state["memberships"].get(host, []),
                                   lb_restored=False)
        leaving = [Membership.from_dict(m) for h in hosts for m in (state.get("leaving") or {}).get(h, [])]
        self._heartbeat(state)  # fencing: a step whose lock was taken over stops before it writes
        self.lb.block(leaving)
        return leaving

    def drained(self, state: dict, hosts: list[str], waited: Any, ended: Optional[str] = None) -> list[str]:
        """BlockTraffic's end for ``hosts``, from the wait ``waited`` (that ended at ``ended``, now by default): a host
        still draining fails (and stays out, its membership recorded); returns the hosts drained, still active."""
        ended = ended or now_iso()
        deployment_id = state["deployment_id"]
        still_draining = unfinished(waited)
        per_instance = getattr(waited, "states", None) or {}
        failed = []
        for host in hosts:
            instance_id = state["instance_ids"][host]
            if instance_id in still_draining:
                # e.g. "draining (app/web1 on lb1: 3 session(s), DRAIN)": what is still open, and where
                message = f"{instance_id} still draining after the timeout ({per_instance.get(instance_id, 'unknown')})"
                self.store.event(deployment_id, host, "BlockTraffic", "Failed", end=ended, message=message)
                self._fail_host(state, host, f"BlockTraffic: {message}")
                failed.append(host)
            else:
                self.store.event(deployment_id, host, "BlockTraffic", "Succeeded", end=ended)
        state["active"] = [h for h in state["active"] if h not in failed]
        return [h for h in hosts if h not in failed]

    # long function: one event loop (hosts to take out, drains, words, results), easier to read whole
    def paced_main(self, state: dict, pacer: Any, run_main: Callable[..., dict], drain_timeout: Optional[float],
                   clock: Callable[[], float] = time.monotonic) -> dict[str, Optional[dict]]:
        """BlockTraffic and the main group of a batch ``begin_block`` began, its hosts leaving as ``pacer`` (a
        drain_pacing.DrainPacer) says. Each group of hosts taken out is waited for in a thread of its own, while
        ``run_main(hosts, on_results, hold)`` sets their words up (the main group on ``hosts``, saying what they
        reported as they report it): each word, ready, calls ``hold(host)``, which waits for the drain and lets the
        word go at once to a drained host, once the controller is checked, and to no other. Each host that passed
        goes back as its result comes (``put_back``; the results that came together, in one registration). The
        record and the load balancer's changes are made in this thread only, in the order things happened (a
        group's drain is recorded before its results). Returns the main group's results; an error stops further
        hosts from leaving or being told to go on, waits for the hosts already going, then is raised (the hosts out
        are recorded for the stop and recovery)."""
        events: queue.Queue = queue.Queue()
        stopping = threading.Event()
        results: dict[str, Optional[dict]] = {}
        running = 0
        error: Optional[BaseException] = None
        recorded: set[str] = set()  # hosts whose drain is recorded

        def stop(exc: BaseException) -> None:
            """The first error stops further hosts leaving or being told to go on (it is raised at the end)."""
            nonlocal error
            error = error or exc
            stopping.set()

        def put_back(arrived: dict[str, Optional[dict]]) -> None:
            try:
                self.put_back(state, arrived)
            except Exception as exc:  # pylint: disable=broad-except  # the hosts already going end first
                stop(exc)

        def drain_then_run(hosts: list[str], leaving: list) -> None:
            go_ahead: set[str] = set()  # the hosts told to go on, once the drain is known
            known = threading.Event()

            def hold(host: str) -> bool:
                # The word is set up while its host drains (which the pace counts), and sent once the drain is over
                # and the controller still here: to the drained hosts only; the others are told nothing.
                events.put(("ready", [host], clock()))
                known.wait()
                return host in go_ahead

            words = pool.submit(run_main, hosts, lambda arrived: events.put(("results", [], arrived)), hold)
            try:
                try:
                    waited = self.lb.wait_drained(leaving, timeout=drain_timeout, progress=self.progress)
                    draining = unfinished(waited)
                    going = [h for h in hosts if state["instance_ids"][h] not in draining]
                    if not going or stopping.is_set():
                        going = []
                    else:
                        self.guard()  # no host is told to go on once the controller is gone
                    # recorded (by the task's thread, in this order) before any result of the group can come
                    events.put(("drained", hosts, (waited, going, now_iso())))
                    go_ahead.update(going)
                finally:
                    known.set()  # the words not told to go end at once, having sent nothing
                ran = words.result()
                events.put(("ran", hosts, {h: r for h, r in ran.items() if h in go_ahead}))
            except BaseException as exc:  # pylint: disable=broad-except  # raised in the calling thread, below
                events.put(("failed", hosts, exc))

        pool = ThreadPoolExecutor(max_workers=2 * max(1, len(pacer.hosts)))  # a drain's thread, its words' thread
        try:
            while True:
                if error is None:
                    try:
                        leaving_hosts = pacer.take(clock())
                        if leaving_hosts:
                            self.guard()
                            pool.submit(drain_then_run, leaving_hosts, self.block_hosts(state, leaving_hosts))
                            pacer.sent(leaving_hosts, clock())
                            running += 1
                    except Exception as exc:  # pylint: disable=broad-except  # the hosts already going end first
                        stop(exc)
                if running == 0 and (error is not None or not pacer.waiting):
                    break
                wait = pacer.next_take(clock()) if error is None else None
                try:
                    sweep = [events.get(timeout=PACED_LOOK_EVERY if wait is None else min(wait, PACED_LOOK_EVERY))]
                except queue.Empty:
                    continue
                while True:  # everything that came meanwhile, so the hosts back in one registration
                    try:
                        sweep.append(events.get_nowait())
                    except queue.Empty:
                        break
                # Hosts whose drain is recorded go back first, before the record of other groups' drains; a host
                # whose group drained in this sweep goes back after that drain is recorded.
                first = {h: r for kind, _hosts, value in sweep if kind in ("results", "ran")
                         for h, r in value.items() if h in recorded}
                later: dict[str, Optional[dict]] = {}
                put_back(first)
                for kind, hosts, value in sweep:
                    try:
                        if kind == "ready":
                            pacer.reached(hosts[0], value)
                        elif kind == "drained":
                            waited, going, ended = value
                            self.drained(state, hosts, waited, ended)
                            recorded.update(hosts)
                            pacer.done([h for h in hosts if h not in going])
                            if going:
                                self._mark_in_progress(state, MAIN, going)
                        elif kind in ("results", "ran"):
                            results.update(value)
                            later.update((h, r) for h, r in value.items() if h not in first)
                            if kind == "ran":
                                running -= 1
                                pacer.done(hosts)
                        elif kind == "failed":
                            running -= 1
                            pacer.done(hosts)
                            stop(value)
                    except Exception as exc:  # pylint: disable=broad-except  # the hosts already going end first
                        stop(exc)
                put_back(later)
        finally:
            pool.shutdown(wait=False)
        if error is not None:
            raise error
        return results

    def store_event_all(self, state: dict, hosts: list[str], event: str, status: str) -> None:
        started = now_iso()
        for host in hosts:
            self.store.event(state["deployment_id"], host, event, status, start=started)

    def put_back(self, state: dict, main_results: dict[str, Optional[dict]]) -> list[str]:
        """AllowTraffic's registration for the hosts of ``main_results`` (hosts of the batch whose main group just
        ended): each that passed its lifecycle events goes back into its load balancers now, as CodeDeploy puts an
        instance back once its own ValidateService passed, without waiting for the slowest host of its batch.
        Only the fencing check and the registration happen here: this runs while the batch's other hosts are still
        being called, on threads that share this process. ``allow`` records the events (the registration's time
        kept in ``allowed``) and waits for the batch's health. Returns the hosts put back."""
        from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import Membership

        allowed = state.setdefault("allowed", {})  # host -> when it was registered again
        ok = [h for h, result in main_results.items()
              if h in state["active"] and h not in allowed and host_outcome(result).ok]
        if ok:
            self._heartbeat(state)  # fencing: a step whose lock was taken over stops before it writes
            registered_at = now_iso()
            self.lb.allow([Membership.from_dict(m) for h in ok for m in state["memberships"].get(h, [])])
            allowed.update(dict.fromkeys(ok, registered_at))
        return ok

    def allow(self, state: dict, main_results: dict[str, Optional[dict]], healthy_timeout: Optional[float]) -> dict:
        """AllowTraffic for the hosts that passed their lifecycle events (those ``put_back`` registered already, then
        the rest), then the wait until all are healthy; failed hosts stay out."""
        return self.confirm_allowed(self.begin_allow(state, main_results), healthy_timeout)

    def begin_allow(self, state: dict, main_results: dict[str, Optional[dict]]) -> dict:
        """AllowTraffic up to the wait: the hosts that passed their lifecycle events are all registered again (those
        ``put_back`` registered already, then the rest) and recorded as in progress; failed hosts stay out.
        ``confirm_allowed`` then waits until they are healthy (in this step, or in the next batch's: hand-over)."""
        self.put_back(state, {h: main_results.get(h) for h in state["active"]})
        allowed = state.pop("allowed", {})
        state.pop("leaving", None)  # begin_block's, for block_hosts: the batch's hosts have all left by now
        self._heartbeat(state)
        self.judge(state, MAIN, main_results)  # a host that failed was never put back
        for host in state["active"]:
            self.store.event(state["deployment_id"], host, "AllowTraffic", "InProgress", start=allowed.get(host))
        return state

    def confirm_allowed(self, state: dict, healthy_timeout: Optional[float], fence: bool = False) -> dict:
        """AllowTraffic's end: wait until the hosts ``begin_allow`` registered are healthy, and record it; a host
        that is not fails (its membership stays recorded). The alarms are read once they are back. ``fence``: check
        the lock first (a step taking over a batch that an earlier step began)."""
        from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import Membership

        hosts = state["active"]
        if not hosts:
            return state
        if fence:
            self._heartbeat(state)
        deployment_id = state["deployment_id"]
        memberships = [Membership.from_dict(m) for h in hosts for m in state["memberships"].get(h, [])]
        waited = self.lb.wait_healthy(memberships, timeout=healthy_timeout, progress=self.progress)
        self.guard()
        per_instance = getattr(waited, "states", None) or {}
        bad = unfinished(waited)
        still_ok = []
        for host in hosts:
            instance_id = state["instance_ids"][host]
            self.store.update_host(deployment_id, host, lb_restored=True)
            if state.get("rollback_of") and host in (state.get("original_memberships") or {}):
                # The rolled-back deployment left this host out; it is back now (recovery must not redo it).
                self.store.update_host(state["rollback_of"], host, lb_restored=True)
            if instance_id in bad:
                message = f"{instance_id} not healthy after the timeout ({per_instance.get(instance_id, 'unknown')})"
                self.store.event(deployment_id, host, "AllowTraffic", "Failed", end=now_iso(), message=message)
                self._fail_host(state, host, f"AllowTraffic: {message}")
            else:
                self.store.event(deployment_id, host, "AllowTraffic", "Succeeded", end=now_iso())
                still_ok.append(host)
        state["active"] = still_ok
        # Alarms are read after the batch is back in service (it passed ValidateService), so a stop
        # never leaves a healthy host out of its load balancer.
        stopped = self._alarm_stop(state)
        if stopped is not None:
            return stopped
        self._mark_in_progress(state, POST_ALLOW)
        return state

    # ------------------------------------------------------------------ staging
    def staged(self, state: dict, results: dict[str, Optional[dict]]) -> dict:
        """Judge the staging calls, made on every host to deploy before the first batch. Hosts that staged are
        listed in ``staged`` (their batch installs from the staged copy); when one could not stage, the deployment
        fails now, with every host still in service: those hosts are named with the reason, no rollback is due."""
        self._heartbeat(state)
        stage_hosts = list(state.get("stage_hosts") or [])
        failures = {}
        for host in stage_hosts:
            outcome = host_outcome(results.get(host))
            if not outcome.ok:
                failures[host] = outcome.message
        state["staged"] = [h for h in stage_hosts if h not in failures]
        if not failures:
            self.progress(f"deployment {state['deployment_id']}: revision staged on {len(stage_hosts)} host(s)")
            return state
        planner = dc.BatchPlanner.from_dict(state["planner"])
        for host, message in failures.items():
            self.store.event(state["deployment_id"], host, "DownloadBundle", "Failed", end=now_iso(),
                             message=f"staging failed: {message}")
            planner.failed.append(host)  # never in a batch: failed before any host was touched
            state.setdefault("failures", {})[host] = message
            self.store.update_host(state["deployment_id"], host, status="Failed")
            self.progress(f"{host}: staging FAILED - {message}")
        state["planner"] = planner.to_dict()
        named = "; ".join(f"{host}: {message}" for host, message in failures.items())
        reason = (f"staging failed on {len(failures)} of {len(stage_hosts)} host(s) before any host left its load "
                  f"balancer, nothing was changed ({named})")
        state = self.finish(state, stop_reason=reason, status="Failed", cause="staging")
        state["rollback_due"] = False  # every host still runs its previous revision
        return state

    def read_hosts(self, state: dict, host_states: dict[str, Optional[dict]]) -> dict:
        """Plan again with the hosts' deployment states, read by the staging calls (``start`` planned from the load
        balancer's health alone): the order (unknown revision, old, current), the hosts already on the revision
        (skipped: listed in ``unstage``, their staged copy is not needed), which hosts BeforeBlockTraffic calls.
        A host whose state is missing (None) counts as unhealthy and is called for BeforeBlockTraffic, as at the
        start. Nothing has left a load balancer yet."""
        self._heartbeat(state)
        data = dict(state["planner"])
        before = [dc.HostInfo.from_dict(h) for h in data["hosts"]]
        infos = [host_info(i.name, host_states.get(i.name), i.healthy, state["revision"]) for i in before]
        planner = dc.BatchPlanner.from_dict(dict(data, hosts=[i.to_dict() for i in infos]))
        planner.validate()
        preview = dc.plan_preview(planner.config, infos)
        needed, previous = calls_needed(state["host_calls"], {i.name: host_states.get(i.name) for i in infos})
        unstage = [h for h in planner.skipped if h in (state.get("stage_hosts") or [])]
        state.update(planner=planner.to_dict(), calls_needed=needed, previous_revision=previous, hosts_read=True,
                     stage_hosts=[h for h in state.get("stage_hosts") or [] if h not in unstage],
                     staged=[h for h in state.get("staged") or [] if h not in unstage], unstage=unstage)
        if preview != state["plan_preview"]:
            state["plan_preview"] = preview
            # Only the plan changes: the rest is what start recorded (recovery restores memberships from its
            # load-balancer configuration).
            self._update_inplace_extra(state["deployment_id"], plan_preview=preview)
            self.progress(f"deployment {state['deployment_id']}: planned again with the hosts' states: batches {preview}"
                          + (f", {len(unstage)} already on the revision" if unstage else ""))
        return state

    # ------------------------------------------------------------------ finish
    def finish(self, state: dict, stop_reason: Optional[str] = None, status: Optional[str] = None,
               cause: Optional[str] = None) -> dict:
        planner = dc.BatchPlanner.from_dict(state["planner"])
        outcome = planner.outcome()
        final = status or ("Succeeded" if outcome.status == "Succeeded" else "Failed")
        error = None
        if final != "Succeeded":
            error = stop_reason or outcome.reason
        # Hosts already on the revision, and hosts a stopped deployment never reached, are Skipped (as CodeDeploy shows them).
        for host in list(outcome.skipped) + list(outcome.pending):
            self.store.update_host(state["deployment_id"], host, status="Skipped")
        learnt = self.lb.lasting_cache() if self.lb and final == "Succeeded" else {}
        if learnt:  # for the group's next deployment (start)
            self._update_inplace_extra(state["deployment_id"], **{LB_LEARNT: learnt})
        self._session(state).end(final, error=error)
        rollback = AutoRollback.from_dict(state.get("auto_rollback"))
        state["stop_cause"] = cause or ("failure" if final == "Failed" else None)
        requested_rollback = final == "Stopped" and cause == "request" and bool(state.get("stop_rollback"))
        state["rollback_due"] = bool(not state.get("rollback_of") and (rollback.applies(final, cause) or requested_rollback))
        state.update({"done": True, "status": final, "error": error, "batch": [], "active": [],
                      "outcome": {"succeeded": outcome.succeeded, "failed": outcome.failed,
                                  "skipped": outcome.skipped, "pending": outcome.pending,
                                  "reason": outcome.reason}})
        state["duration"] = round(time.time() - state["started_at"], 2)
        state["summary"] = summarise(self.store.get(state["deployment_id"]).to_dict(), state)
        state["summary_text"] = format_summary(state["summary"])
        self.progress(f"deployment {state['deployment_id']}: {final}" + (f" - {error}" if error else ""))
        return state


def _seconds_between(start: Optional[str], end: Optional[str]) -> Optional[float]:
    from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import parse_time

    if not start or not end:
        return None
    return round((parse_time(end) - parse_time(start)).total_seconds(), 2)


def _failure_text(event: Optional[dict], fallback: Optional[str]) -> Optional[str]:
    """A failed event's message with the tail of its failing script's output (the log tail), on one line."""
    if not event:
        return fallback
    message = event.get("message") or fallback
    failing = [s for s in event.get("scripts") or [] if isinstance(s, dict) and s.get("exit_code") != 0]
    tail = (failing[-1].get("output_tail") or "").strip() if failing else ""
    if tail and message and tail not in message:
        message = f"{message}; output: {' | '.join(tail.splitlines()[-5:])}"
    return message


def summarise(record: dict, state: dict) -> dict:
    """The deployment summary a person reads (also printed as a table by the role)."""
    hosts = []
    for host in record.get("hosts", []):
        failed_event = next((e for e in host.get("events", []) if e.get("status") == "Failed"), None)
        hosts.append({
            "name": host["name"],
            "instance_id": host.get("instance_id"),
            "status": host.get("status"),
            "failed_event": failed_event["name"] if failed_event else None,
            "message": _failure_text(failed_event, state.get("failures", {}).get(host["name"])),
            "event_durations": {e["name"]: _seconds_between(e.get("start_time"), e.get("end_time"))
                                for e in host.get("events", []) if e.get("status") in ("Succeeded", "Failed")},
        })
    return {
        "deployment_id": record.get("deployment_id"),
        "application": record.get("application"),
        "deployment_group": record.get("deployment_group"),
        "revision": record.get("revision"),
        "config": state.get("config"),
        "status": record.get("status"),
        "error": record.get("error"),
        "duration": state.get("duration"),
        "batches": state.get("batch_number"),
        "batch_times": state.get("batch_times"),
        "no_load_balancer": state.get("with_load_balancer", True) is False,
        "hosts": hosts,
    }


def format_summary(summary: dict) -> str:
    """A plain-text table of the summary, for the end of a play."""
    lines = [
        f"Deployment {summary['deployment_id']}  {summary['application']}/{summary['deployment_group']}  "
        f"{summary['status']}  config {summary['config']}  {summary.get('duration')} s  "
        f"{summary.get('batches')} batch(es)",
    ]
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    if summary.get("no_load_balancer"):
        lines.append(f"  WARNING {NO_LOAD_BALANCER}")
    name_width = max([len("host")] + [len(h["name"]) for h in summary["hosts"]])
    lines.append(f"  {'host'.ljust(name_width)}  {'status':10}  {'failed at':18}  events (s)")
    for host in summary["hosts"]:
        durations = ", ".join(f"{k} {v}" for k, v in host["event_durations"].items() if v is not None)
        lines.append(f"  {host['name'].ljust(name_width)}  {str(host['status']):10}  "
                     f"{str(host['failed_event'] or '-'):18}  {durations}")
        if host.get("message") and host["status"] == "Failed":
            lines.append(f"  {''.ljust(name_width)}  -> {host['message']}")
    return "\n".join(lines)
