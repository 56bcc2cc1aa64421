# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's side of an EC2 blue/green deployment.

The playbook `rollwright.deploy.bluegreen_ec2` alternates these controller steps (the
`bluegreen_step` action plugin calls them) with host-side calls of `host_lifecycle`:

    start      - inputs, revision, original fleet and its load-balancer membership, record, lock
    provision  - create (or choose) the replacement fleet, wait until it runs; hosts to add
      [replacements: ApplicationStop .. ValidateService]
    ready      - judge the install; optional wait for an explicit continue (Ready -> Stopped on timeout), or,
                 in the split form, hand the deployment over in Ready (the job ends; see hand_over)
    resume     - (split form, a second job) take the handed-over deployment back and go on from Ready
      [replacements: BeforeAllowTraffic; originals: BeforeBlockTraffic]
    reroute    - AllowTraffic / BlockTraffic: targets mode in batches, or one listener swap
      [replacements: AfterAllowTraffic (complete); originals: AfterBlockTraffic]
    finish     - judge, then retire the originals (terminate after a wait, or keep alive); Succeeded
    abort      - an unexpected error: roll back from the record
    recover    - the same, for a deployment whose controller died (run from any controller)

Every change is preceded by a write of what it is about to do to the record's ``extra.bluegreen``
(the ``phase``, the planned Auto Scaling group name, instance ids, memberships, the listener's
actions before the swap), so `rollback` and `recover` work from the record alone:

- before reroute: the replacement fleet is torn down (instances it created terminated, a copied
  group deleted); the originals were never touched;
- during or after reroute: the originals' recorded memberships are registered again (and the
  listener swapped back) and are healthy BEFORE the replacements are deregistered, so no serving
  target group is ever left empty; then the replacement fleet is torn down;
- while retiring (traffic already on the replacements): the retirement is completed.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from typing import Any, Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.session import (  # noqa: F401  (re-exported)
    DEFAULT_LOCK_TTL,
    DeploymentSession,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.dry_run import bluegreen_dry_run
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import config as dc
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import lifecycle
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.fleet_provision import (
    DEPLOYMENT_TAG,
    Ec2Fleet,
    FleetError,
    copy_name,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.inplace import (
    HOST_REVISION_KEYS,
    format_summary,
    host_outcome,
    summarise,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.listener import ListenerError, ListenerSwitch, live_and_idle
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers import (
    LoadBalancerError,
    Membership,
    by_host,
    load_balancer_from_config,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import (
    DeploymentRecord,
    HostRecord,
    Lock,
    RecordStore,
    LockInfo,
    default_owner,
    format_time,
    now_iso,
    utc_now,
)

Progress = Callable[[str], None]

EXTRA_KEY = "bluegreen"
_INSTANCE_ID_RE = re.compile(r"^(?:i|mi)-[0-9a-f]{8,17}$")
CONTINUE_KEY = "bluegreen_continue"
RESUME_KEY = "bluegreen_resume"  # split form: what the job that resumes needs of the first job's state
# The state a resuming job rebuilds from the record (connection variables are not recorded: the
# resuming job brings its own).
RESUME_STATE_KEYS = ("deployment_id", "application", "deployment_group", "config", "revision", "host_revision",
                     "appspec", "options", "host_calls", "originals", "replacements", "inventory_originals",
                     "started", "started_at", "failures", "batch_number", "batch_times")
DEFAULT_CONTINUE_WAIT = 900.0
BLUEGREEN_REQUESTS = ("stop", "promote")  # what a blue/green deployment honours (control_requests.APPLICABLE)
PHASES = ("started", "provisioning", "installing", "ready", "rerouting", "rerouted", "retiring", "finished", "rolled_back")
PRE_REROUTE = ("started", "provisioning", "installing", "ready")
REROUTE_MODES = ("targets", "listener")
READY_ACTIONS = ("continue", "stop")
ORIGINAL_ACTIONS = ("terminate", "keep_alive")

# Connection variables copied from an original host to hosts added during the run.
CONNECTION_VARS = (
    "ansible_connection", "ansible_user", "ansible_port", "ansible_ssh_private_key_file", "ansible_python_interpreter",
    "ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_control_path_dir", "ansible_ssh_pipelining",
    "ansible_ssh_timeout", "ansible_become", "ansible_become_user", "ansible_become_method",
)


class BlueGreenError(RollwrightError):
    """A blue/green deployment cannot start or go on; the message says why and what to do."""


class StopRequested(Exception):
    """A stop request seen at a safe point inside a step (reroute batches, the original-fleet wait)."""

    def __init__(self, decision: control_requests.Decision):
        super().__init__(decision.reason)
        self.decision = decision


def stop_requested(store: RecordStore, deployment_id: str) -> bool:
    """Whether a stop request is open for the deployment (read only)."""
    return any(r.open and r.action == "stop" for r in store.list_requests(deployment_id))


def _iso_after(seconds: float) -> str:
    return format_time(utc_now() + _dt.timedelta(seconds=seconds))


def handed_over(record: DeploymentRecord, lock: Optional[LockInfo]) -> Optional[dict]:
    """The hand-over of a split-form deployment that waits in Ready, when ``lock`` is still the lease it
    was handed over with (no process is meant to be alive: the record holds the lock); else None."""
    bg = record.extra.get(EXTRA_KEY) or {}
    handover = bg.get("handover")
    if (not isinstance(handover, dict) or record.status != "Ready" or bg.get("phase") != "ready" or lock is None
            or lock.deployment_id != record.deployment_id or lock.acquired_at != handover.get("lock_acquired_at")):
        return None
    return handover


def _host_calls() -> dict[str, list[str]]:
    """The host-side event groups: install (to ValidateService), then one event each around the traffic events."""
    replacement = lifecycle.events_for("bluegreen_replacement")
    cut = replacement.index("ValidateService") + 1
    allow = lifecycle.split_host_calls(replacement[cut:])
    block = lifecycle.split_host_calls(lifecycle.events_for("bluegreen_original"))
    return {"install": replacement[:cut], "pre_allow": allow[0], "post_allow": allow[1],
            "pre_block": block[0], "post_block": block[1]}


HOST_CALLS = _host_calls()


def reroute_batches(replacements: list[str], originals: list[str], size: int) -> list[tuple[list[str], list[str]]]:
    """(replacements to register, originals to deregister) per reroute batch, `size` of each at a time.

    The serving group gains a batch of replacements before it loses a batch of originals, so its
    size never drops below the original fleet's, and at most `size` targets beyond it are ever mixed in.
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    out = []
    for i in range(0, max(len(replacements), len(originals)), size):
        out.append((replacements[i:i + size], originals[i:i + size]))
    return out


def plan_fleet(config: Any, replacement_count: int) -> tuple[int, int]:
    """(minimum healthy replacement hosts, reroute batch size) for a replacement fleet of that size."""
    if replacement_count < 1:
        raise BlueGreenError("the replacement fleet would have no instance; nothing to deploy to")
    minimum = dc.minimum_healthy_count(config, replacement_count)
    if minimum >= replacement_count:
        raise BlueGreenError(
            f"rollwright_deployment_config: a minimum of {minimum} healthy host(s) out of {replacement_count} replacement "
            "host(s) leaves no room to reroute traffic in batches; lower the minimum or grow the fleet")
    return minimum, replacement_count - minimum


def current_members(clients: Any, lb_config: dict[str, Any]) -> list[str]:
    """Instance ids now registered (not draining) in the configured target groups and classic ELBs."""
    found: list[str] = []
    for arn in lb_config.get("target_group_arns") or []:
        for desc in clients.client("elbv2").describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]:
            if desc.get("TargetHealth", {}).get("State") not in ("draining", "unused"):
                found.append(desc["Target"]["Id"])
    names = lb_config.get("classic_elb_names") or []
    if names:
        for lb in clients.client("elb").describe_load_balancers(LoadBalancerNames=names)["LoadBalancerDescriptions"]:
            found += [i["InstanceId"] for i in lb.get("Instances", [])]
    return list(dict.fromkeys(found))


class BlueGreenRun:
    """One blue/green deployment, step by step; between steps the whole state is a plain dict."""

    def __init__(self, store: RecordStore, clients: Any, progress: Optional[Progress] = None,
                 sleep: Callable[[float], None] = time.sleep, now: Callable[[], float] = time.monotonic):
        self.store = store
        self.clients = clients
        self.progress = progress or (lambda message: None)
        self.sleep = sleep
        self.now = now
        self.fleet = Ec2Fleet(clients, sleep=sleep, now=now)

    # ------------------------------------------------------------------ helpers
    def _lb(self, bg: dict, only: Optional[str] = None) -> Any:
        if only:
            return load_balancer_from_config({"target_group_arns": [only]}, self.clients)
        return load_balancer_from_config(bg["lb_config"], self.clients)

    def _save(self, state: dict) -> None:
        self.store.set_extra(state["deployment_id"], EXTRA_KEY, state["bg"])

    def _phase(self, state: dict, phase: str) -> None:
        state["bg"]["phase"] = phase
        state["bg"]["phase_time"] = now_iso()
        history = state["bg"].setdefault("phases", [])  # the timeline report draws the phases from it
        if not history or history[-1]["phase"] != phase:
            history.append({"phase": phase, "time": state["bg"]["phase_time"]})
        self._save(state)

    def _session(self, state: dict) -> DeploymentSession:
        return DeploymentSession.from_state(self.store, state, progress=self.progress)

    def _heartbeat(self, state: dict) -> None:
        state["lock"] = self._session(state).renew()

    def _requests(self, state: dict) -> control_requests.Decision:
        """A safe point: the open control requests, each acknowledged once. Every point acts on a stop; a
        promote is acted on by the next wait (ready, or original fleet) and stays acknowledged until then."""
        return control_requests.take(self.store, state["deployment_id"], allowed=BLUEGREEN_REQUESTS,
                                     progress=self.progress)

    def _stopped(self, state: dict, decision: control_requests.Decision) -> dict:
        """Honour a stop: traffic back on the originals (if it moved), the replacement fleet torn down, Stopped."""
        return self.rollback(state, decision.reason, status="Stopped", answering=decision)

    def _events(self, state: dict, hosts: list[str], event: str, status: str, message: Optional[str] = None) -> None:
        stamp = now_iso()
        for host in hosts:
            if status == "InProgress":
                self.store.event(state["deployment_id"], host, event, status, start=stamp)
            else:
                self.store.event(state["deployment_id"], host, event, status, end=stamp, message=message)

    def judge(self, state: dict, hosts: list[str], call: str, results: dict[str, Optional[dict]]) -> dict[str, str]:
        """Record a host-side call's events; return {host: failure message} for the hosts that failed."""
        failures = {}
        for host in hosts:
            outcome = host_outcome(results.get(host))
            for event in outcome.events:
                self.store.event(state["deployment_id"], host, event["name"], event.get("status") or "Failed",
                                 start=event.get("start"), end=event.get("end"), scripts=event.get("scripts") or [],
                                 message=event.get("message"))
            if not outcome.ok:
                if not outcome.events and HOST_CALLS[call]:
                    self.store.event(state["deployment_id"], host, HOST_CALLS[call][0], "Failed", end=now_iso(),
                                     message=outcome.message)
                failures[host] = outcome.message
                self.store.update_host(state["deployment_id"], host, status="Failed")
                self.progress(f"{host}: FAILED - {outcome.message}")
        state.setdefault("failures", {}).update(failures)
        return failures

    def replacement_names(self, state: dict) -> list[str]:
        return [h["name"] for h in state["replacements"]]

    def original_names(self, state: dict) -> list[str]:
        return [h["name"] for h in state["originals"]]

    # ------------------------------------------------------------------ start
    def start(self, *, application: str, deployment_group: str, revision: dict, appspec: dict, config: Any,
              lb_config: Optional[dict], reroute: dict, ready: dict, original: dict, replacement_spec: dict,
              original_spec: dict, inventory_ids: dict[str, str], options: dict, creator: str = "user",
              rollback_of: Optional[str] = None, owner: Optional[str] = None, force_lock: bool = False,
              lock_ttl: float = DEFAULT_LOCK_TTL, dry_run: bool = False) -> dict:
        """Validate everything and record the original fleet's membership; nothing is changed yet.

        With ``dry_run`` nothing is recorded or locked either: the returned state is the plan (done).
        """
        resolved = dc.resolve_config(config)
        if not lb_config or not (lb_config.get("target_group_arns") or lb_config.get("classic_elb_names")):
            raise BlueGreenError("rollwright_load_balancer: a blue/green deployment needs target groups or classic ELBs "
                                 "to reroute traffic (target_group_arns, classic_elb_names)")
        if lb_config.get("haproxy"):
            raise BlueGreenError("rollwright_load_balancer.haproxy: EC2 blue/green reroutes ELB traffic only")
        mode = reroute.get("mode") or "targets"
        if mode not in REROUTE_MODES:
            raise BlueGreenError(f"bluegreen_ec2_reroute_mode: expected one of {', '.join(REROUTE_MODES)}, got {mode!r}")
        bg: dict[str, Any] = {"phase": "started", "mode": mode, "lb_config": dict(lb_config), "listener_swapped": False}
        serving = dict(lb_config)
        if mode == "listener":
            if not reroute.get("listener_arn"):
                raise BlueGreenError("bluegreen_ec2_listener_arn: required when bluegreen_ec2_reroute_mode is listener")
            pair = list(lb_config.get("target_group_arns") or [])
            if lb_config.get("classic_elb_names"):
                raise BlueGreenError("rollwright_load_balancer.classic_elb_names: listener mode swaps ALB target groups only")
            switch = ListenerSwitch(self.clients.client("elbv2"))
            try:
                before = switch.read(reroute["listener_arn"], reroute.get("rule_arn"))
                blue, green = live_and_idle(before, pair)
            except ListenerError as exc:
                raise BlueGreenError(f"bluegreen_ec2_listener_arn: {exc}") from exc
            leftovers = current_members(self.clients, {"target_group_arns": [green]})
            if leftovers:
                raise BlueGreenError(f"the idle (green) target group {green} still has registered targets "
                                     f"{', '.join(leftovers)}; deregister them before a listener-mode deployment")
            bg.update(listener_arn=reroute["listener_arn"], rule_arn=reroute.get("rule_arn") or None,
                      blue_tg=blue, green_tg=green, listener_before=before)
            serving = {"target_group_arns": [blue]}
        bg["serving_lb"] = serving

        # The original fleet and its membership, recorded before anything changes.
        kind = original_spec["kind"]
        if kind == "hosts":
            ids_by_name = {name: iid for iid, name in inventory_ids.items()}
            missing = [h for h in original_spec["hosts"] if h not in ids_by_name]
            if missing:
                raise BlueGreenError(f"bluegreen_ec2_original_hosts: host(s) without an EC2 instance id: {', '.join(missing)}")
            original_ids = [ids_by_name[h] for h in original_spec["hosts"]]
        elif kind == "tags":
            original_ids = self.fleet.find(original_spec["tags"], states=("running",))
        elif kind == "auto_scaling_group":
            original_ids = self.fleet.asg_instance_ids(original_spec["auto_scaling_group"])
        else:
            original_ids = current_members(self.clients, serving)
        if not original_ids:
            raise BlueGreenError(f"the original fleet ({kind}: {original_spec.get(kind) or 'members of the load balancer'}) "
                                 "has no instance; nothing serves that a replacement fleet could take over from")
        lb = self._lb(bg) if mode == "targets" else self._lb(bg, only=bg["blue_tg"])
        try:
            snapshot = lb.snapshot(original_ids)
        except LoadBalancerError as exc:
            raise BlueGreenError(str(exc)) from exc
        if not any(snapshot.values()):
            raise BlueGreenError(f"none of the original instances ({', '.join(original_ids)}) is registered in "
                                 f"{serving}; nothing to reroute from")

        # The replacement fleet's expected size (exact for a launch template and for chosen instances).
        rkind = replacement_spec["kind"]
        replacement_ids: list[str] = []
        if rkind == "copy_auto_scaling_group":
            source = self.fleet.describe_asg(replacement_spec["auto_scaling_group"])
            expected = int(source.get("DesiredCapacity") or 0)
        elif rkind == "launch_template":
            expected = int(replacement_spec["count"])
        else:
            replacement_ids = self.fleet.find(replacement_spec["tags"], states=("running",))
            overlap = sorted(set(replacement_ids) & set(original_ids))
            if overlap:
                raise BlueGreenError(f"bluegreen_ec2_instance_tags: instance(s) {', '.join(overlap)} are in both the "
                                     "original and the replacement fleet")
            expected = len(replacement_ids)
        minimum, batch = plan_fleet(resolved, expected)

        original_asg = original_spec.get("auto_scaling_group") if kind == "auto_scaling_group" else None
        if original_asg:
            attached_tgs = [a for a in self.fleet.attached_target_groups(original_asg) if a in (serving.get("target_group_arns") or [])]
            attached_elbs = [n for n in self.fleet.attached_classic_elbs(original_asg) if n in (serving.get("classic_elb_names") or [])]
            bg["original_asg_attachments"] = {"target_group_arns": attached_tgs, "classic_elb_names": attached_elbs}
        names = {iid: inventory_ids.get(iid, iid) for iid in original_ids}
        if dry_run:
            bg["replacement_ids"] = replacement_ids
            return bluegreen_dry_run(application=application, deployment_group=deployment_group, revision=revision,
                                     config_name=resolved.name, mode=mode, serving=serving, originals=names,
                                     replacement=replacement_spec, expected=expected, minimum=minimum, batch=batch,
                                     ready=ready, original=original, bg=bg,
                                     lock=self.store.get_lock(application, deployment_group))
        record = DeploymentRecord(
            application=application, deployment_group=deployment_group, deployment_type="blue_green_ec2",
            revision=dict(revision), configuration=config if isinstance(config, (str, dict)) else resolved.name,
            creator=creator, rollback_of=rollback_of, status="Created",
            hosts=[HostRecord(name=names[iid], instance_id=iid, lb_membership=[m.to_dict() for m in snapshot.get(iid, [])])
                   for iid in original_ids],
        )
        bg.update(
            original_ids=original_ids, original_names=names, original_asg=original_asg,
            original_memberships={iid: [m.to_dict() for m in snapshot.get(iid, [])] for iid in original_ids},
            original_action=original["action"], original_wait=float(original["wait"]),
            delete_original_asg=bool(original.get("delete_auto_scaling_group")),
            replacement_kind=rkind, replacement_spec=replacement_spec, created=rkind != "instances",
            replacement_asg=None, replacement_ids=replacement_ids, replacement_asg_attached=False,
            original_asg_detached=False, green_memberships=[], originals_deregistered=[],
            minimum=minimum, batch_size=batch, ready=dict(ready),
        )
        record.extra = {EXTRA_KEY: bg}
        session = DeploymentSession.open(self.store, record, ttl=lock_ttl, owner=owner, force=force_lock,
                                         progress=self.progress)
        deployment_id = session.deployment_id
        session.mark_in_progress()
        state = {
            "deployment_id": deployment_id, "application": application, "deployment_group": deployment_group,
            "config": resolved.name, "lock": session.lock, "lease_interval": session.interval, "revision": dict(revision),
            "host_revision": {k: revision.get(k) for k in HOST_REVISION_KEYS if revision.get(k) is not None},
            "appspec": appspec, "options": dict(options), "host_calls": HOST_CALLS, "bg": bg,
            "originals": [{"name": names[iid], "instance_id": iid} for iid in original_ids],
            "replacements": [], "new_hosts": [], "done": False, "status": "InProgress",
            "started": now_iso(), "started_at": time.time(), "batch_number": 0, "batch_times": [],
        }
        self.progress(f"deployment {deployment_id}: blue/green ({mode}), {len(original_ids)} original instance(s), "
                      f"replacement {rkind} of {expected}, minimum healthy {minimum}, reroute batches of {batch}")
        return state

    # ------------------------------------------------------------------ provision
    def provision(self, state: dict, timeout: float = 600.0) -> dict:
        """Create (or take) the replacement fleet and wait until every instance runs with an address."""
        bg = state["bg"]
        deployment_id = state["deployment_id"]
        spec = bg["replacement_spec"]
        self._heartbeat(state)
        if spec["kind"] == "copy_auto_scaling_group":
            bg["replacement_asg"] = copy_name(spec["auto_scaling_group"], deployment_id)
            self._phase(state, "provisioning")  # the name is on record before the group exists
            self.progress(f"creating Auto Scaling group {bg['replacement_asg']} from {spec['auto_scaling_group']}")
            self.fleet.create_copy(spec["auto_scaling_group"], bg["replacement_asg"], deployment_id)
            ids = self.fleet.wait_asg_instances(bg["replacement_asg"], timeout, progress=self.progress)
        elif spec["kind"] == "launch_template":
            self._phase(state, "provisioning")  # instances carry the deployment tag from launch on
            lt = spec["launch_template"]
            self.progress(f"launching {spec['count']} instance(s) from launch template {lt.get('name') or lt.get('id')} "
                          f"version {lt['version']}")
            ids = self.fleet.launch(lt, spec["count"], spec["subnets"], deployment_id)
        else:
            self._phase(state, "provisioning")
            ids = list(bg["replacement_ids"])
        bg["replacement_ids"] = ids
        self._save(state)
        for iid in ids:
            self.store.update_host(deployment_id, iid, instance_id=iid, status="Pending")
        described = self.fleet.wait_running(ids, timeout, progress=self.progress)
        minimum, batch = plan_fleet(state["config"], len(ids))
        bg.update(minimum=minimum, batch_size=batch)
        state["replacements"] = [{"name": iid, "instance_id": iid, "address": described[iid]["private_ip"]} for iid in ids]
        for iid in ids:
            self.store.update_host(deployment_id, iid, status="InProgress")
        self._phase(state, "installing")
        listing = ", ".join(f"{h['name']} ({h['address']})" for h in state["replacements"])
        self.progress(f"replacement fleet: {listing}")
        return state

    # ------------------------------------------------------------------ ready
    def ready(self, state: dict, install_results: dict[str, Optional[dict]], poll: float = 2.0) -> dict:
        """Judge the install; then wait for an explicit continue when ready.action_on_timeout is stop."""
        self._heartbeat(state)
        failures = self.judge(state, self.replacement_names(state), "install", install_results)
        if failures:
            return self.rollback(state, "replacement host(s) failed before traffic was rerouted: "
                                 + "; ".join(f"{h}: {m}" for h, m in failures.items()))
        bg = state["bg"]
        deployment_id = state["deployment_id"]
        ready = bg["ready"]
        waits = ready.get("action") == "stop"
        requested = self._requests(state)
        if requested.action == "stop":
            return self._stopped(state, requested)
        self.store.update_status(deployment_id, "Ready")
        self._phase(state, "ready")
        if waits and ready.get("split"):
            return self.hand_over(state, float(ready.get("wait") or 0))
        if waits:
            wait = float(ready.get("wait") or 0)
            if requested.action != "promote":
                self.progress(f"deployment {deployment_id} is Ready: waiting up to {wait:.0f}s for a continue "
                              f"(playbook rollwright.deploy.continue -e rollwright_deployment_id={deployment_id}; "
                              "rollwright.deploy.promote ends the wait, rollwright.deploy.stop stops)")
                requested = self._wait_for_continue(state, wait, poll)
            if requested is None:
                return self.rollback(state, f"no continue within {wait:.0f}s of the replacement fleet becoming ready",
                                     status="Stopped")
            if requested.action == "stop":
                return self._stopped(state, requested)
            if requested.action == "promote":
                self.progress(f"deployment {deployment_id}: {requested.reason}: the ready wait ends now")
                control_requests.complete(self.store, deployment_id, requested.requests, "promoted: the ready wait ended")
        self.store.update_status(deployment_id, "InProgress")
        return state

    def hand_over(self, state: dict, window: float) -> dict:
        """Split form: end this job with the deployment Ready and its lock held by the record.

        The lock is taken over from ourselves (a new token, so nothing of this job can write any more)
        with a ttl of the approval window: a lease that needs no live process. Inside the window only
        the job that resumes it (continue: approve) or a stop (deny) may take it over; once the window
        has passed the lease is stale and `recover` tears the replacement fleet down (Stopped).
        """
        deployment_id = state["deployment_id"]
        held = Lock.from_dict(state["lock"])
        window = max(window, 60.0)
        self._session(state).stop_lease()  # no process holds the lease from here: the record does
        lease = self.store.take_over(held.application, held.deployment_group, deployment_id,
                                     owner=f"{held.owner} (awaiting approval)", ttl=window, live=True, token=held.token)
        until = _iso_after(window)
        state["bg"]["handover"] = {"at": now_iso(), "until": until, "window": window,
                                   "lock_acquired_at": lease.acquired_at}
        saved = {k: state.get(k) for k in RESUME_STATE_KEYS}
        saved["options"] = {k: v for k, v in (state.get("options") or {}).items() if k != "host_vars"}
        self.store.set_extra(deployment_id, RESUME_KEY, saved)
        self._save(state)
        self.progress(f"deployment {deployment_id} is Ready and handed over until {until} (its lock is a lease of "
                      f"{window:.0f}s): approve with rollwright.deploy.continue, deny with rollwright.deploy.stop "
                      f"(-e rollwright_deployment_id={deployment_id})")
        state.update(lock=lease.to_dict(), lease_keeper=None)
        return self._summarise(state, "Ready")

    def resume(self, deployment_id: str, host_vars: Optional[dict] = None, owner: Optional[str] = None) -> dict:
        """Split form, the approving job: take the handed-over deployment's lease and go on from Ready."""
        record = self.store.get(deployment_id)
        bg = dict(record.extra.get(EXTRA_KEY) or {})
        saved = record.extra.get(RESUME_KEY)
        handover = bg.get("handover")
        if record.deployment_type != "blue_green_ec2" or not handover or not isinstance(saved, dict):
            raise BlueGreenError(f"deployment {deployment_id} was not handed over in Ready (split form); "
                                 "nothing to resume")
        if record.status != "Ready" or bg.get("phase") != "ready":
            raise BlueGreenError(f"deployment {deployment_id} is {record.status} (phase {bg.get('phase')}), no longer "
                                 "Ready and handed over: it was approved, denied or recovered already")
        info = self.store.get_lock(record.application, record.deployment_group)
        if info is None or info.deployment_id != deployment_id or info.acquired_at != handover.get("lock_acquired_at"):
            holder = "nobody" if info is None else f"{info.deployment_id} ({info.owner})"
            raise BlueGreenError(f"deployment {deployment_id} no longer holds the lease it was handed over with (the "
                                 f"group's lock is held by {holder}): it was approved, denied or recovered already")
        if info.stale:
            raise BlueGreenError(f"the approval window of deployment {deployment_id} ended at {handover.get('until')}: "
                                 "too late to approve; rollwright.deploy.recover tears its replacement fleet down "
                                 "(status Stopped)")
        lock = self.store.take_over(record.application, record.deployment_group, deployment_id, owner=owner,
                                    ttl=DEFAULT_LOCK_TTL, live=True, acquired_at=info.acquired_at)
        state = dict(saved)
        state["options"] = dict(saved.get("options") or {}, host_vars=dict(host_vars or {}))
        handover["resumed_at"] = now_iso()
        handover["resumed_by"] = lock.owner
        state.update(lock=lock.to_dict(), lease_keeper=None, bg=bg, done=False, status="InProgress", new_hosts=[],
                     failures=dict(saved.get("failures") or {}), batch_times=list(saved.get("batch_times") or []))
        self._save(state)
        self.store.update_status(deployment_id, "InProgress")
        self.progress(f"deployment {deployment_id}: approved, resumed from Ready by {lock.owner}")
        return state

    def _wait_for_continue(self, state: dict, wait: float, poll: float) -> Optional[control_requests.Decision]:
        """The ready wait: a Decision (no action: a continue came; stop or promote: a request), None at its end."""
        deadline = self.now() + wait
        last_beat = last_note = self.now()
        while True:
            extra = self.store.get(state["deployment_id"]).extra
            signal = extra.get(CONTINUE_KEY)
            if signal:
                self.progress(f"continue received from {signal.get('by') or 'someone'} at {signal.get('at')}")
                return control_requests.Decision()
            requested = self._requests(state)
            if requested.action:
                return requested
            if self.now() >= deadline:
                return None
            if self.now() - last_beat >= 30:
                self._heartbeat(state)
                last_beat = self.now()
            if self.now() - last_note >= 30:
                self.progress(f"still waiting for a continue; {deadline - self.now():.0f}s left")
                last_note = self.now()
            self.sleep(max(0.05, min(poll, deadline - self.now())))

    # ------------------------------------------------------------------ reroute
    def reroute(self, state: dict, pre_results: dict[str, Optional[dict]]) -> dict:
        self._heartbeat(state)
        requested = self._requests(state)
        if requested.action == "stop":
            return self._stopped(state, requested)
        replacements, originals = self.replacement_names(state), self.original_names(state)
        failures = self.judge(state, replacements, "pre_allow", pre_results)
        failures.update(self.judge(state, originals, "pre_block", pre_results))
        if failures:
            return self.rollback(state, "BeforeAllowTraffic/BeforeBlockTraffic failed: "
                                 + "; ".join(f"{h}: {m}" for h, m in failures.items()))
        bg = state["bg"]
        self._phase(state, "rerouting")
        try:
            if bg["mode"] == "targets":
                error = self._reroute_targets(state)
            else:
                error = self._reroute_listener(state)
            if error is None:
                error = self._swap_group_attachments(state)
        except (LoadBalancerError, ListenerError, FleetError) as exc:
            error = str(exc)
        except StopRequested as stop:
            return self._stopped(state, stop.decision)
        if error:
            return self.rollback(state, error)
        self._phase(state, "rerouted")
        return state

    def _allow(self, state: dict, lb: Any, names: list[str]) -> Optional[str]:
        """Register replacements (recorded first) and wait healthy; an error message or None."""
        bg = state["bg"]
        ids = [self._iid(state, n) for n in names]
        wanted = lb.desired(ids)
        bg["green_memberships"] = bg["green_memberships"] + [m.to_dict() for m in wanted]
        self._save(state)
        self._events(state, names, "AllowTraffic", "InProgress")
        self._heartbeat(state)  # fencing: a controller that lost its lock stops before writing
        lb.allow(wanted)
        waited = lb.wait_healthy(wanted, timeout=state["options"].get("healthy_timeout"), progress=self.progress)
        if not waited.ok:
            self._events(state, names, "AllowTraffic", "Failed", message=waited.message())
            return f"AllowTraffic: {waited.message()}"
        self._events(state, names, "AllowTraffic", "Succeeded")
        return None

    def _block(self, state: dict, lb: Any, names: list[str]) -> Optional[str]:
        """Deregister originals (recorded first) and wait until drained; an error message or None."""
        bg = state["bg"]
        ids = [self._iid(state, n) for n in names]
        members = [Membership.from_dict(m) for iid in ids for m in bg["original_memberships"].get(iid, [])]
        bg["originals_deregistered"] = bg["originals_deregistered"] + ids
        self._save(state)
        self._events(state, names, "BlockTraffic", "InProgress")
        if members:
            self._heartbeat(state)
            lb.block(members)
            waited = lb.wait_drained(members, timeout=state["options"].get("drain_timeout"), progress=self.progress)
            if not waited.ok:
                self._events(state, names, "BlockTraffic", "Failed", message=waited.message())
                # CodeDeploy: if even one original instance fails to deregister, the deployment fails.
                return f"BlockTraffic: original instance(s) failed to deregister: {waited.message()}"
        self._events(state, names, "BlockTraffic", "Succeeded")
        return None

    def _iid(self, state: dict, name: str) -> str:
        for host in state["replacements"] + state["originals"]:
            if host["name"] == name:
                return host["instance_id"]
        raise BlueGreenError(f"unknown host {name!r}")

    def _reroute_targets(self, state: dict) -> Optional[str]:
        bg = state["bg"]
        lb = self._lb(bg)
        originals = [h["name"] for h in state["originals"]]
        for number, (green, blue) in enumerate(reroute_batches(self.replacement_names(state), originals, bg["batch_size"]), 1):
            started = time.time()
            state["batch_number"] = number
            if number > 1:  # a safe point between batches: a stop reroutes back from here
                requested = self._requests(state)
                if requested.action == "stop":
                    raise StopRequested(requested)
            self.progress(f"reroute batch {number}: register {', '.join(green) or '-'}; deregister {', '.join(blue) or '-'}")
            self._heartbeat(state)
            if green:
                error = self._allow(state, lb, green)
                if error:
                    return error
            if blue:
                error = self._block(state, lb, blue)
                if error:
                    return error
            state["batch_times"].append(round(time.time() - started, 2))
        return None

    def _reroute_listener(self, state: dict) -> Optional[str]:
        bg = state["bg"]
        error = self._allow(state, self._lb(bg, only=bg["green_tg"]), self.replacement_names(state))
        if error:
            return error
        originals = self.original_names(state)
        self._events(state, originals, "BlockTraffic", "InProgress")
        bg["listener_swapped"] = "pending"  # a crash from here on: recovery compares the listener with listener_before
        self._save(state)
        self._heartbeat(state)
        swap = ListenerSwitch(self.clients.client("elbv2")).swap(bg["listener_arn"], bg.get("rule_arn"), bg["blue_tg"], bg["green_tg"])
        bg["listener_swapped"] = True
        bg["listener_after"] = swap["after"]
        self._save(state)
        state["batch_number"] = 1
        self.progress(f"listener {bg.get('rule_arn') or bg['listener_arn']} now forwards to {bg['green_tg']}")
        # The originals leave the (now idle) blue group, so the next deployment finds it empty.
        return self._block(state, self._lb(bg, only=bg["blue_tg"]), originals)

    def _swap_group_attachments(self, state: dict) -> Optional[str]:
        """The copied group takes the serving attachments (so scale-outs join), the original group drops them."""
        bg = state["bg"]
        self._heartbeat(state)
        if bg.get("original_asg") and any((bg.get("original_asg_attachments") or {}).values()):
            bg["original_asg_detached"] = True
            self._save(state)
            att = bg["original_asg_attachments"]
            self.fleet.detach(bg["original_asg"], att["target_group_arns"], att["classic_elb_names"])
        if bg.get("replacement_asg"):
            serving = {"target_group_arns": [bg["green_tg"]]} if bg["mode"] == "listener" else bg["lb_config"]
            bg["replacement_asg_attached"] = True
            self._save(state)
            self.fleet.attach(bg["replacement_asg"], serving.get("target_group_arns") or [], serving.get("classic_elb_names") or [])
        return None

    # ------------------------------------------------------------------ finish
    def finish(self, state: dict, post_results: dict[str, Optional[dict]]) -> dict:
        self._heartbeat(state)
        requested = self._requests(state)
        if requested.action == "stop":
            return self._stopped(state, requested)
        replacements, originals = self.replacement_names(state), self.original_names(state)
        failures = self.judge(state, replacements, "post_allow", post_results)
        failures.update(self.judge(state, originals, "post_block", post_results))
        if failures:
            return self.rollback(state, "AfterAllowTraffic/AfterBlockTraffic failed: "
                                 + "; ".join(f"{h}: {m}" for h, m in failures.items()))
        for host in replacements + originals:
            self.store.update_host(state["deployment_id"], host, status="Succeeded")
        self._phase(state, "retiring")
        try:
            self.retire(state["deployment_id"], state["bg"], state=state)
        except StopRequested as stop:  # during the original-fleet wait: the originals still run, traffic goes back
            return self._stopped(state, stop.decision)
        return self._end(state, "Succeeded")

    def retire(self, deployment_id: str, bg: dict, state: Optional[dict] = None, wait: bool = True,
               fence: Optional[Callable[[], None]] = None) -> None:
        """The originals after a successful reroute: terminate them after the wait, or keep them running.
        ``fence`` (default: renew the step's lock) runs right before the terminating calls."""
        fence = fence or (lambda: self._heartbeat(state) if state is not None else None)
        if bg["original_action"] == "keep_alive":
            self.progress(f"original instances kept running, out of the load balancer: {', '.join(bg['original_ids'])}")
        else:
            if wait and bg.get("original_wait"):
                self._wait(state, float(bg["original_wait"]), "before terminating the original instances")
            fence()
            if bg.get("original_asg"):
                if bg.get("delete_original_asg"):
                    self.progress(f"deleting Auto Scaling group {bg['original_asg']} and its instances")
                    self.fleet.delete_asg(bg["original_asg"])
                else:
                    self.progress(f"scaling Auto Scaling group {bg['original_asg']} to 0 (its instances terminate)")
                    self.fleet.scale_to_zero(bg["original_asg"])
            others = list(bg["original_ids"])
            self.progress(f"terminating original instances {', '.join(others)}")
            self.fleet.terminate(others)
        bg["retired"] = True
        bg["phase"] = "finished"
        self.store.set_extra(deployment_id, EXTRA_KEY, bg)

    def _wait(self, state: Optional[dict], seconds: float, what: str) -> None:
        """The original-fleet wait, a safe point: a promote ends it now, a stop raises StopRequested."""
        deadline = self.now() + seconds
        last = self.now()
        self.progress(f"waiting {seconds:.0f}s {what} (rollwright.deploy.promote ends the wait, rollwright.deploy.stop "
                      "puts the traffic back on them)")
        while self.now() < deadline:
            self.sleep(max(0.05, min(1.0, deadline - self.now())))
            if state is None:
                continue
            requested = self._requests(state)
            if requested.action == "stop":
                raise StopRequested(requested)
            if requested.action == "promote":
                self.progress(f"deployment {state['deployment_id']}: {requested.reason}: the wait ends now")
                control_requests.complete(self.store, state["deployment_id"], requested.requests,
                                          "promoted: the original-fleet wait ended")
                return
            if self.now() - last >= 30:
                self._heartbeat(state)
                self.progress(f"{deadline - self.now():.0f}s left {what}")
                last = self.now()

    # ------------------------------------------------------------------ rollback
    def rollback(self, state: dict, reason: str, status: str = "Failed",
                 answering: Optional[control_requests.Decision] = None) -> dict:
        self.progress(f"rolling back: {reason}")
        restore(self.store, self.clients, state["deployment_id"], state["bg"], progress=self.progress, fleet=self.fleet,
                healthy_timeout=state["options"].get("healthy_timeout"), fence=lambda: self._heartbeat(state))
        for host in self.replacement_names(state) + self.original_names(state):
            if host not in state.get("failures", {}):
                self.store.update_host(state["deployment_id"], host, status="Skipped")
        if answering is not None:
            control_requests.complete(self.store, state["deployment_id"], answering.requests,
                                      "stopped: the original fleet serves, the replacement fleet is torn down")
        return self._end(state, status, reason)

    def abort(self, state: dict, reason: str) -> dict:
        """An unexpected error in the playbook: roll back from what the record says."""
        state["bg"] = dict(self.store.get(state["deployment_id"]).extra.get(EXTRA_KEY) or state["bg"])
        if state["bg"].get("phase") in ("retiring", "finished"):
            self.retire(state["deployment_id"], state["bg"], state=state, wait=False)
            return self._end(state, "Succeeded")
        return self.rollback(state, reason)

    def _end(self, state: dict, status: str, error: Optional[str] = None) -> dict:
        deployment_id = state["deployment_id"]
        self.store.update_status(deployment_id, status, error=error)
        try:  # requests closed, lock released, lease keeper stopped
            self._session(state).end(status, error=error, note=f"the deployment ended {status} before it could act")
        except Exception as exc:  # pylint: disable=broad-except
            self.progress(f"could not release the lock: {exc}")
        return self._summarise(state, status, error)

    def _summarise(self, state: dict, status: str, error: Optional[str] = None) -> dict:
        """The job's end: the summary of the record (the deployment itself may go on, split form)."""
        deployment_id = state["deployment_id"]
        state.update(done=True, status=status, error=error)
        state["duration"] = round(time.time() - state["started_at"], 2)
        state["summary"] = summarise(self.store.get(deployment_id).to_dict(), state)
        state["summary"]["bluegreen"] = {k: state["bg"].get(k) for k in (
            "mode", "phase", "replacement_asg", "replacement_ids", "original_ids", "original_asg", "original_action",
            "blue_tg", "green_tg")}
        state["summary_text"] = format_summary(state["summary"])
        self.progress(f"deployment {deployment_id}: {status}" + (f" - {error}" if error else ""))
        return state


# ---------------------------------------------------------------------------------------------- restore


def _groups_of(bg: dict) -> set:
    """Target groups and classic ELBs of the deployment's configuration (recorded at its start)."""
    config = bg.get("lb_config") if isinstance(bg.get("lb_config"), dict) else {}
    groups = set(config.get("target_group_arns") or []) | set(config.get("classic_elb_names") or [])
    return groups | {g for g in (bg.get("blue_tg"), bg.get("green_tg")) if isinstance(g, str) and g}


def _id_list(value: Any, field: str, problems: list) -> list:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(i, str) and _INSTANCE_ID_RE.match(i) for i in value):
        problems.append(f"bluegreen.{field}: expected a list of EC2 instance ids, got {value!r}")
        return []
    return value


def ownership_problems(fleet: Ec2Fleet, deployment_id: str, bg: dict) -> list:
    """What in a blue/green record a restore must not act on (checked before any change).

    The record is writable by whoever can write the records table, so it is not trusted to say what
    to delete: the replacement Auto Scaling group and every recorded replacement instance that still
    exists must carry ``rollwright:deployment-id = <this deployment>``; recorded memberships must
    be in the deployment's target groups / classic ELBs and name an instance the record lists on
    that side (originals for the originals' memberships, replacements for the green ones)."""
    problems: list = []
    groups = _groups_of(bg)
    replacement_ids = _id_list(bg.get("replacement_ids"), "replacement_ids", problems)
    original_ids = _id_list(bg.get("original_ids"), "original_ids", problems)
    asg = bg.get("replacement_asg")
    if asg is not None and (not isinstance(asg, str) or not asg or len(asg) > 255):
        problems.append(f"bluegreen.replacement_asg: expected an Auto Scaling group name, got {asg!r}")
        asg = None
    if asg:
        group = fleet.describe_asg(asg, missing_ok=True)
        tags = {t.get("Key"): t.get("Value") for t in (group or {}).get("Tags") or []}
        if group is not None and tags.get(DEPLOYMENT_TAG) != deployment_id:
            problems.append(f"bluegreen.replacement_asg: Auto Scaling group {asg} does not carry the tag "
                            f"{DEPLOYMENT_TAG}={deployment_id} (it has {tags.get(DEPLOYMENT_TAG) or 'no such tag'}): "
                            "it is not this deployment's, so it is not deleted")
    if bg.get("created", True) and replacement_ids:
        described = fleet.describe(replacement_ids)
        for iid in replacement_ids:
            info = described.get(iid)
            if info is None or info.get("state") in ("terminated", "shutting-down"):
                continue
            owner = (info.get("tags") or {}).get(DEPLOYMENT_TAG)
            if owner != deployment_id:
                problems.append(f"bluegreen.replacement_ids: instance {iid} does not carry the tag "
                                f"{DEPLOYMENT_TAG}={deployment_id} (it has {owner or 'no such tag'}): it is not "
                                "terminated")
    originals = bg.get("original_memberships") or {}
    if not isinstance(originals, dict):
        problems.append(f"bluegreen.original_memberships: expected a mapping of instance id to memberships, got {originals!r}")
        originals = {}
    sides = [(f"original_memberships[{iid}]", iid, ms, set(original_ids) | {iid} if not original_ids else set(original_ids))
             for iid, ms in originals.items()]
    sides.append(("green_memberships", None, bg.get("green_memberships") or [], set(replacement_ids)))
    for path, key, items, allowed_hosts in sides:
        if not isinstance(items, list):
            problems.append(f"bluegreen.{path}: expected a list of memberships, got {items!r}")
            continue
        for index, data in enumerate(items):
            try:
                member = Membership.from_dict(data, f"bluegreen.{path}[{index}]")
            except LoadBalancerError as exc:
                problems.append(str(exc))
                continue
            if member.group not in groups:
                problems.append(f"bluegreen.{path}[{index}]: {member.label()} is not in a load balancer of the "
                                f"deployment's configuration ({', '.join(sorted(groups)) or 'none'})")
            if (key is not None and member.host != key) or member.host not in allowed_hosts:
                problems.append(f"bluegreen.{path}[{index}]: {member.label()} names an instance that is not one of "
                                f"the deployment's {'original' if key is not None else 'replacement'} instances")
    return problems


def restore(store: RecordStore, clients: Any, deployment_id: str, bg: dict, progress: Optional[Progress] = None,
            fleet: Optional[Ec2Fleet] = None, healthy_timeout: Optional[float] = None,
            fence: Optional[Callable[[], None]] = None) -> dict:
    """Put traffic back on the originals and tear the replacement fleet down, from the record alone.

    Order: listener back, originals registered and healthy, original group re-attached, then the
    replacements detached/deregistered, then the fleet torn down. Returns what was done. First,
    :func:`ownership_problems` must find nothing (else BlueGreenError, nothing changed); ``fence``
    (the lock still ours) runs before each group of writes.
    """
    say = progress or (lambda message: None)
    fleet = fleet or Ec2Fleet(clients)
    fence = fence or (lambda: None)
    problems = ownership_problems(fleet, deployment_id, bg)
    if problems:
        raise BlueGreenError(f"the record of {deployment_id} names resources that are not this deployment's, so "
                             f"nothing was changed (restore refused): {'; '.join(problems)}")
    done: dict[str, Any] = {}
    phase = bg.get("phase")
    fence()
    if bg.get("mode") == "listener" and bg.get("listener_swapped"):
        switch = ListenerSwitch(clients.client("elbv2"))
        now = switch.read(bg["listener_arn"], bg.get("rule_arn"))
        if bg["green_tg"] in _forwards(now):
            switch.write(bg["listener_arn"], bg.get("rule_arn"), bg["listener_before"])
            done["listener_restored"] = True
            say(f"listener {bg.get('rule_arn') or bg['listener_arn']} forwards to {bg['blue_tg']} again")
    lb = load_balancer_from_config(bg["lb_config"], clients)
    originals = [Membership.from_dict(m) for ms in (bg.get("original_memberships") or {}).values() for m in ms]
    if originals and (bg.get("originals_deregistered") or phase not in PRE_REROUTE):
        lb.allow(originals)
        waited = lb.wait_healthy(originals, timeout=healthy_timeout, progress=say)
        done["originals_registered"] = sorted(by_host(originals))
        if not waited.ok:
            say(f"WARNING: originals registered again but not all healthy: {waited.message()}")
            done["originals_unhealthy"] = waited.message()
    if bg.get("original_asg_detached") and bg.get("original_asg"):
        att = bg.get("original_asg_attachments") or {}
        fleet.attach(bg["original_asg"], att.get("target_group_arns") or [], att.get("classic_elb_names") or [])
        done["original_asg_attached"] = bg["original_asg"]
    if bg.get("replacement_asg_attached") and bg.get("replacement_asg"):
        serving = {"target_group_arns": [bg["green_tg"]]} if bg.get("mode") == "listener" else bg["lb_config"]
        fleet.detach(bg["replacement_asg"], serving.get("target_group_arns") or [], serving.get("classic_elb_names") or [])
    greens = [Membership.from_dict(m) for m in bg.get("green_memberships") or []]
    fence()
    if greens:
        registered = [m for m, (st, _reason) in lb.states(greens).items() if st not in ("unused", "draining")]
        if registered:
            lb.block(registered)
            done["replacements_deregistered"] = sorted(by_host(registered))
    # Tear down what the deployment created (recorded ids, and anything carrying its tag).
    if bg.get("replacement_asg"):
        if fleet.delete_asg(bg["replacement_asg"]):
            done["replacement_asg_deleted"] = bg["replacement_asg"]
            say(f"deleted Auto Scaling group {bg['replacement_asg']}")
    if bg.get("created", True):
        ids = list(dict.fromkeys(list(bg.get("replacement_ids") or []) + fleet.created_by(deployment_id)))
        if ids:
            fleet.terminate(ids)
            done["terminated"] = ids
            say(f"terminated replacement instance(s) {', '.join(ids)}")
    bg["phase"] = "rolled_back"
    bg["restored"] = done
    store.set_extra(deployment_id, EXTRA_KEY, bg)
    return done


def _forwards(actions: list[dict]) -> list[str]:
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.listener import forwarded_target_groups

    return forwarded_target_groups(actions)


def _approval_wait_outcome(store: RecordStore, record: DeploymentRecord, info: Optional[LockInfo], force: bool,
                           stop_reason: Optional[str]) -> tuple[Optional[dict], Optional[str]]:
    """For a split-form deployment waiting for approval: refuse a recovery within its window (unless forced or
    denied), else the hand-over and why it ends Stopped. (None, stop_reason) for any other deployment."""
    handover = handed_over(record, info)
    if handover is None:
        return None, stop_reason
    denied = stop_requested(store, record.deployment_id)  # a deny of the split form
    if not info.stale and not force and not stop_reason and not denied:
        raise BlueGreenError(
            f"deployment {record.deployment_id} is Ready and waits for approval until {handover.get('until')} (split "
            "form: its lock is a lease held by the record, no process is meant to be alive). Approve it with "
            "rollwright.deploy.continue, deny it with rollwright.deploy.stop, or recover with force=true to tear its "
            "replacement fleet down now")
    if not stop_reason:
        stop_reason = (f"no approval within the approval window (until {handover.get('until')}): replacement fleet torn "
                       "down" if info.stale else "stopped by a forced recovery while waiting for approval")
    return handover, stop_reason


def recover(store: RecordStore, clients: Any, deployment_id: str, progress: Optional[Progress] = None,
            force: bool = False, owner: Optional[str] = None, stop_reason: Optional[str] = None) -> dict:
    """Finish a blue/green deployment whose controller died, from its record.

    Before or during the reroute: roll back (originals serve, replacements torn down) and end Failed
    (Stopped with ``stop_reason``: a stop honoured for a controller that is gone).
    A split-form deployment handed over in Ready is not dead: within its approval window it is
    refused unless force or ``stop_reason`` (a deny); after the window it is torn down, Stopped.
    While retiring: complete the retirement at once (no second wait) and end Succeeded. A finished
    deployment is left alone (its lock is released if still held). A live lock (fresh heartbeat) is
    refused unless force=True.
    """
    say = progress or (lambda message: None)
    record = store.get(deployment_id)
    if record.deployment_type != "blue_green_ec2":
        raise BlueGreenError(f"deployment {deployment_id} is a {record.deployment_type} deployment, not blue_green_ec2")
    bg = dict(record.extra.get(EXTRA_KEY) or {})
    info = store.get_lock(record.application, record.deployment_group)
    lock = None
    handover, stop_reason = _approval_wait_outcome(store, record, info, force, stop_reason)
    if info is not None and info.deployment_id == deployment_id:
        if not info.stale and not force and not handover:
            raise BlueGreenError(f"{info.describe()}; it looks alive - recover only a deployment whose controller died "
                                 "(wait until the lock is stale, or pass force=true)")
        ended = record.status in ("Succeeded", "Failed", "Stopped") and bg.get("phase") in ("finished", "rolled_back")
        if not ended and bg.get("phase") not in ("retiring", "finished"):
            problems = ownership_problems(Ec2Fleet(clients), deployment_id, bg)  # before the lock changes hands
            if problems:
                raise BlueGreenError(f"the record of {deployment_id} names resources that are not this deployment's, "
                                     f"so nothing was changed (recovery refused): {'; '.join(problems)}")
        # taken over by its token (stale: judged by the store), so a surviving step of the dead
        # controller fails its next fencing check; released by our token at the end
        lock = store.take_over(record.application, record.deployment_group, deployment_id,
                               owner=owner or f"recovery of {deployment_id} by {default_owner()}", live=not info.stale,
                               acquired_at=info.acquired_at)

    def fence() -> None:
        if lock is not None:
            store.heartbeat(lock)

    result: dict[str, Any] = {"deployment_id": deployment_id, "phase_before": bg.get("phase"), "status_before": record.status}
    # A stop asked of a controller that is gone (or of a split-form deployment, which has none) is carried out here.
    requested = control_requests.take(store, deployment_id, allowed=("stop",), progress=say, handled_by="recover")
    if requested.action == "stop":
        stop_reason = requested.reason
    run = BlueGreenRun(store, clients, progress=say)
    if record.status in ("Succeeded", "Failed", "Stopped") and bg.get("phase") in ("finished", "rolled_back"):
        result["action"] = "none"
    elif bg.get("phase") in ("retiring", "finished"):
        run.retire(deployment_id, bg, wait=False, fence=fence)
        if record.status not in ("Succeeded", "Failed", "Stopped"):
            store.update_status(deployment_id, "Succeeded")
        result["action"] = "retired"
    else:
        result["restored"] = restore(store, clients, deployment_id, bg, progress=say, fleet=run.fleet, fence=fence)
        if record.status not in ("Succeeded", "Failed", "Stopped"):
            if stop_reason:
                store.update_status(deployment_id, "Stopped", error=stop_reason)
            else:
                store.update_status(deployment_id, "Failed",
                                    error=f"recovered after its controller stopped in phase {result['phase_before']}: "
                                          "traffic restored to the original instances, replacement fleet torn down")
        result["action"] = "rolled_back"
    if lock is not None:
        store.release_lock(lock)
    control_requests.complete(store, deployment_id, requested.requests, f"carried out by recovery: {result['action']}",
                              handled_by="recover")
    control_requests.close_open(store, deployment_id, "the deployment ended before it could act", handled_by="recover")
    result["status"] = store.get(deployment_id).status
    say(f"recovery of {deployment_id}: {result['action']}, status {result['status']}")
    return result


def ready_for_continue(record: DeploymentRecord) -> bool:
    """A continue approves a validated replacement fleet only: Ready, and handed over in the split form."""
    bg = record.extra.get(EXTRA_KEY) or {}
    return (record.status == "Ready" and bg.get("phase") == "ready"
            and (not (bg.get("ready") or {}).get("split") or bool(bg.get("handover"))))


def request_continue(store: RecordStore, deployment_id: Optional[str] = None, application: Optional[str] = None,
                     deployment_group: Optional[str] = None, by: Optional[str] = None,
                     wait: float = DEFAULT_CONTINUE_WAIT, poll: float = 1.0, progress: Optional[Progress] = None,
                     sleep: Callable[[float], None] = time.sleep, now: Callable[[], float] = time.monotonic) -> dict:
    """Let a deployment waiting in Ready go on (the `continue` playbook, an AWX approval's next job).

    A continue that comes before the replacement fleet is Ready (or before the deployment holds its
    group's lock) waits for Ready up to ``wait`` seconds, then is refused: the signal is recorded only
    against a fleet that is installed and validated. A deployment that ends meanwhile refuses it at once.
    """
    say = progress or (lambda message: None)
    group = deployment_group or application
    deadline = now() + wait
    last_note: Optional[float] = None
    while True:
        current = deployment_id
        if not current:
            if not application:
                raise BlueGreenError("rollwright_deployment_id or rollwright_application (and rollwright_deployment_group): "
                                     "required to find the deployment to continue")
            info = store.get_lock(application, group)
            current = info.deployment_id if info else None
        record = store.get(current) if current else None
        if record is not None:
            if record.deployment_type != "blue_green_ec2":
                raise BlueGreenError(f"deployment {current} is a {record.deployment_type} deployment; only blue/green "
                                     "EC2 deployments wait for a continue")
            if record.status in ("Succeeded", "Failed", "Stopped"):
                raise BlueGreenError(f"deployment {current} already ended {record.status}; nothing to continue")
            if ready_for_continue(record):
                break
        if now() >= deadline:
            if record is None:
                raise BlueGreenError(f"no deployment is in progress in {application}/{group} (waited {wait:.0f}s for one)")
            phase = (record.extra.get(EXTRA_KEY) or {}).get("phase")
            raise BlueGreenError(f"deployment {current} is not Ready (status {record.status}, phase {phase}) after "
                                 f"{wait:.0f}s: a continue approves an installed and validated replacement fleet only; "
                                 "nothing was recorded (raise rollwright_continue_wait to wait longer)")
        if last_note is None or now() - last_note >= 30:
            say(f"waiting up to {deadline - now():.0f}s for "
                f"{'deployment ' + current if current else f'a deployment of {application}/{group}'} to be Ready")
            last_note = now()
        sleep(max(0.05, min(poll, deadline - now())))
    bg = record.extra.get(EXTRA_KEY) or {}
    signal = {"by": by or "user", "at": now_iso()}
    already = record.extra.get(CONTINUE_KEY)
    if not already:
        store.set_extra(current, CONTINUE_KEY, signal)
    return {"deployment_id": current, "status": record.status, "changed": not already, "phase": bg.get("phase"),
            "continue": already or signal, "split": bool((bg.get("ready") or {}).get("split"))}
