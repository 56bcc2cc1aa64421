# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side steps of an in-place deployment, run in-process so waits print progress live."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from contextlib import contextmanager
from typing import Iterator

from ansible.errors import AnsibleActionFail

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import inputs as deploy_inputs
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.session import (
    DeploymentSession,
    LeaseSettings,
    lease_dir,
    lease_interval,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.alarms import (
    AlarmWatch,
    AutoRollback,
    parse_auto_rollback,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import ControllerGone, error_result
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.drain_pacing import DrainPacer, ReachRate, pace_ceiling, start_pace
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.inplace import (
    DEFAULT_LOCK_TTL,
    MAIN,
    POST_ALLOW,
    PRE_BLOCK,
    InPlaceRun,
    haproxy_servers_by_lb_id,
    plan_rollback,
    revision_source,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import LockLost, now_iso
from ansible_collections.rollwright.deploy.plugins.module_utils.host.session import session_dir, validate_session_name
from ansible_collections.rollwright.deploy.plugins.module_utils.host.staging import INLINE_BUNDLE_MAX
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import DEFAULT_STATE_ROOT, HostState, StateError
from ansible_collections.rollwright.deploy.plugins.plugin_utils.host_calls import HostCaller, responsive_threads
from ansible_collections.rollwright.deploy.plugins.plugin_utils.host_session import SESSION_CONNECTIONS, BatchSessions
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import RollwrightAction, state_result
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import progress as _progress

# The variables the inplace role registers the hosts' results under, read when a task does not name them (host_results).
DRY_RUN_RESULT_VAR = "_rollwright_r_dry_run"
STAGE_RESULT_VAR = "_rollwright_r_stage"
HOST_INFO_VAR = "_rollwright_host_info"
HOST_MODULE = "rollwright.deploy.host_lifecycle"
HOST_INFO_MODULE = "rollwright.deploy.host_deployment_info"
# What the batch step returns of each host call (the rest, e.g. the module's invocation, stays out of the job log).
HOST_RESULT_KEYS = ("changed", "failed", "lifecycle_failed", "unreachable", "skipped", "msg", "events")
RESULT_VARS = {PRE_BLOCK: "_rollwright_r_pre_block", MAIN: "_rollwright_r_main", POST_ALLOW: "_rollwright_r_post_allow"}
# Which event group of a host session each host call is (the first runs at once, the others at their gate).
SESSION_GROUP = {PRE_BLOCK: 0, MAIN: 1, POST_ALLOW: 2}
# Sessions a batch starts ahead for the next one, at most this many per controller core. Each start costs about
# what its call costs, paid inside the running batch's AllowTraffic wait, which is short (the registration): a few
# fill that wait for free, fifty took the CPU the running batch's hosts needed (they stayed out of service 31 s
# instead of 17 s at 100 hosts half at a time). The rest of a large batch start in the batch's own turn.
AHEAD_PER_CORE = 3


def ahead_limit() -> int:
    """How many of the next batch's sessions a batch starts ahead (AHEAD_PER_CORE per controller core)."""
    return AHEAD_PER_CORE * max(1, os.cpu_count() or 1)


def context_forks() -> int:
    """The run's --forks (how many hosts Ansible calls at once)."""
    from ansible import context

    return int((context.CLIARGS or {}).get("forks") or 5)


@contextmanager
def timed(seconds: dict, phase: str) -> Iterator[None]:
    """Adds the seconds the block took to ``seconds[phase]``."""
    started = time.monotonic()
    try:
        yield
    finally:
        seconds[phase] = round(seconds.get(phase, 0.0) + time.monotonic() - started, 3)


def args_digest(host_args: dict) -> str:
    """What a host's session runs, whatever its name: a session started ahead is adopted only when it matches."""
    relevant = dict(host_args, session=dict(host_args.get("session") or {}, name=None))
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def prestarted_for(prestarted: dict | None, batch_number: int, per_host: dict) -> dict:
    """The sessions started ahead that this batch adopts: started for this batch, for a host of it, with the
    arguments it would give them."""
    if not prestarted or prestarted.get("batch_number") != batch_number:
        return {}
    return {h: v for h, v in (prestarted.get("hosts") or {}).items()
            if h in per_host and v.get("args") == args_digest(per_host[h]) and valid_session_name(v.get("name"))}


def session_path(deployment_id: str, where: dict, name) -> str:
    """Where session ``name`` of a deployment lives on its hosts, built from checked parts (``where``: the hosts'
    absolute state root, application and deployment group, as the host calls give them; a session name): never a
    path taken as it is from the state."""
    root = str(where.get("state_root") or DEFAULT_STATE_ROOT)
    if not os.path.isabs(root) or "$" in root or "~" in root:
        raise StateError(f"session: the hosts' state root must be an absolute path, got {root!r}")
    host_state = HostState(root, str(where.get("application")), str(where.get("deployment_group")))
    return session_dir(host_state, deployment_id, name)


def session_place(host_args: dict) -> dict:
    """The parts of a host call's arguments that say where its sessions live."""
    return {k: host_args.get(k) for k in ("state_root", "application", "deployment_group")}


def valid_session_name(name) -> bool:
    try:
        validate_session_name(name)
    except StateError:
        return False
    return True


def bundle_travels_in_call(state: dict) -> bool:
    """Whether the revision's bundle goes in a host call's arguments (at most INLINE_BUNDLE_MAX bytes), rather than
    pushed to a temporary directory that goes when the call returns."""
    try:
        return os.path.getsize(state["revision"]["path"]) <= INLINE_BUNDLE_MAX
    except (KeyError, TypeError, OSError):
        return False


def reported_state(result: dict | None, key: str | None = None) -> dict | None:
    """A host's deployment state from a call's result: host_deployment_info's result, or its ``key`` (host_lifecycle's
    ``host_state`` with report_state). None when the host could not be read, or said something that is not a state."""
    if not isinstance(result, dict) or result.get("unreachable") or result.get("failed"):
        return None
    info = result.get(key) if key else result
    return info if isinstance(info, dict) and info else None


def pre_block_hosts(state: dict, hosts: list) -> list:
    """The hosts of a batch of ``hosts`` that run BeforeBlockTraffic (their last revision has scripts for it), as
    the step's plan marks them."""
    if not state["host_calls"].get(PRE_BLOCK):
        return []
    needed = (state.get("calls_needed") or {}).get(PRE_BLOCK)
    return [h for h in hosts if needed is None or h in needed]


def kept(results: dict) -> dict:
    """What a step's result keeps of each host call's result (HOST_RESULT_KEYS)."""
    return {h: {k: r[k] for k in HOST_RESULT_KEYS if k in (r or {})} for h, r in results.items()}


def next_planned(state: dict, within) -> list | None:
    """The planned batch after ``within`` (this step's chunk of the plan), or None: the chunk is not a planned
    batch (hosts left after failures), or it is the last one. Only then does a later batch step surely follow."""
    preview = [list(b) for b in state.get("plan_preview") or []]
    current = [str(h) for h in within] if within is not None else None
    if current is None or current not in preview or preview.index(current) + 1 >= len(preview):
        return None
    return preview[preview.index(current) + 1]


def refuse_handed_over(state: dict, step: str) -> None:
    """Only step=batch takes over a batch handed over (and step=stop ends it): the separate steps would skip it."""
    if state.get("handed_over") and step in ("plan", "block", "allow"):
        raise AnsibleActionFail(f"state: batch {state.get('batch_number')} was handed over to the next step=batch (its "
                                f"hosts back in their load balancers); step={step} cannot take it over: run step=batch, "
                                "or step=stop")


def checked_hand_over(state: dict) -> dict:
    """The batch an earlier step handed over (``handed_over``), checked before this step acts on it: the current
    batch's number, its active hosts, and for each a session by a valid name and gate count (or none at all: the
    batch ran a module call per group). Raises AnsibleActionFail naming what is wrong."""
    handed = state.get("handed_over")
    where = "state: handed_over"
    if not isinstance(handed, dict):
        raise AnsibleActionFail(f"{where}: expected the batch a batch step handed over (a dict), got {type(handed).__name__}")
    active, batch = state.get("active"), state.get("batch")
    if not (isinstance(active, list) and isinstance(batch, list) and active and set(active) <= set(batch)):
        raise AnsibleActionFail(f"{where}: expected a batch in progress with hosts back in their load balancers, got "
                                f"batch {batch!r} with active hosts {active!r}")
    if handed.get("batch_number") != state.get("batch_number"):
        raise AnsibleActionFail(f"{where}: batch {handed.get('batch_number')!r} was handed over, but the state is at "
                                f"batch {state.get('batch_number')!r}")
    sessions = handed.get("sessions")
    if not isinstance(sessions, dict) or (sessions and set(sessions) != set(active)):
        raise AnsibleActionFail(f"{where}.sessions: expected a session for each of {', '.join(active)} (or none), got "
                                f"{sorted(sessions) if isinstance(sessions, dict) else type(sessions).__name__}")
    for host, session in sessions.items():
        gates = session.get("gates") if isinstance(session, dict) else None
        if not (isinstance(session, dict) and valid_session_name(session.get("name")) and isinstance(gates, int)
                and not isinstance(gates, bool) and SESSION_GROUP[POST_ALLOW] <= gates <= len(SESSION_GROUP)):
            raise AnsibleActionFail(f"{where}.sessions.{host}: expected a session name and its gate count "
                                    f"({SESSION_GROUP[POST_ALLOW]} to {len(SESSION_GROUP)}), got {session!r}")
    if sessions and not isinstance(handed.get("where"), dict):
        raise AnsibleActionFail(f"{where}.where: expected where the sessions live (a dict), got {handed.get('where')!r}")
    return handed


class ActionModule(RollwrightAction):
    """See plugins/modules/inplace_step.py for the documentation."""

    MODULE = "inplace_step"
    WARM_IMPORTS = ("records", "records.creator", "records.sqlite", "records.dynamodb", "deployments.notifications",
                    "traffic.loadbalancers", "revisions.revision", "revisions.appspec", "deployments.dry_run")
    WARM_SPECS = ("host_lifecycle",)  # every host call of a batch validates its arguments against it

    def _store(self, args: dict, clients, task_vars: dict):
        from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
        from ansible_collections.rollwright.deploy.plugins.module_utils.records.creator import store_context

        record = dict(args.get("record") or {})
        backend = record.pop("backend", None) or "sqlite"
        # who runs it (the AWX job, or user@host) and whether SQLite suits where it runs
        return open_store(backend, record, client_factory=clients.client,
                          **store_context(task_vars, self._templar.template))

    def _load_balancer(self, lb_config, clients):
        if not lb_config:
            return None
        from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers import (
            CompositeLoadBalancer,
            adapters_from_config,
        )

        return CompositeLoadBalancer(adapters_from_config(lb_config, clients))

    @staticmethod
    def _host_results(task_vars: dict, hosts: list, var_name: str) -> dict:
        """Each host's result registered as ``var_name`` (the step's ``host_results``: the role names it)."""
        hostvars = task_vars.get("hostvars", {})
        results = {}
        for host in hosts:
            try:
                results[host] = hostvars[host].get(var_name)
            except KeyError:
                results[host] = None
        return results

    def _fetch_revision(self, revision: dict, clients, cache_dir: str, appspec_name: str):
        from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import revision as rev
        from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.appspec import parse_appspec

        if "s3" in revision:
            s3 = revision["s3"]
            fetched = rev.fetch_s3_bundle(clients.client("s3"), s3["bucket"], s3["key"], cache_dir,
                                          version=s3.get("version"), etag=s3.get("etag"))
        else:
            fetched = rev.local_bundle(revision["path"], cache_dir=cache_dir)
        bundle_type = revision.get("bundle_type") or fetched.bundle_type
        text, inner_path = rev.read_appspec_text(fetched.path, bundle_type, appspec_name=appspec_name)
        spec = parse_appspec(text, filename=inner_path)
        identity = {
            "source": "s3" if "s3" in revision else "local",
            "path": fetched.path,
            "bundle_type": bundle_type,
            "sha256": fetched.sha256,
            "size": fetched.size,
            "etag": fetched.etag,
            "version": fetched.version,
        }
        if "s3" in revision:
            identity.update(bucket=revision["s3"]["bucket"], key=revision["s3"]["key"])
        else:
            identity["local_path"] = revision["path"]
        return identity, spec.to_dict()

    @staticmethod
    def _alarm_watch(settings: AutoRollback, clients):
        if not settings.alarms:
            return None
        return AlarmWatch(clients.client("cloudwatch"), settings.alarms, settings.ignore_poll_alarm_failure)

    def lease_settings(self, args: dict) -> LeaseSettings:
        """What the detached lease keeper needs (record options, AWS options that are never a secret)."""
        return LeaseSettings.for_task(args.get("record"), self.aws_options(args), self.task_environment())

    def _start_lease(self, args: dict, lock, controller: tuple) -> dict:
        if not self._marker:
            self._mark_step(lock.deployment_id)
        return DeploymentSession(None, lock.deployment_id, lock=lock.to_dict()).start_lease(
            self.lease_settings(args), controller)

    def _keep_lease(self, args: dict, state: dict) -> None:
        """Start the lease keeper again if it died; stop it when the deployment is done."""
        session = DeploymentSession.from_state(None, state)
        session.keep_lease(self.lease_settings(args), done=bool(state.get("done")))
        state["lease_keeper"] = session.keeper

    def run_step(self, result: dict, args: dict, task_vars: dict) -> dict:
        step = args["step"]
        self._guard = lease.controller_guard()
        self._guard()  # a worker orphaned before its step began (its controller killed) changes nothing
        self._marker = None
        try:
            return self._run_step(result, task_vars, args, step)
        finally:
            if self._marker:
                lease.clear_step_marker(self._marker)

    def _mark_step(self, deployment_id: str) -> None:
        """Leave this worker's pid where the lease keeper looks (it waits for an orphaned step to end)."""
        self._marker = lease.step_marker(lease_dir(), deployment_id)
        lease.write_step_marker(self._marker)

    def _run_step(self, result: dict, task_vars: dict, args: dict, step: str) -> dict:
        clients = self.clients(args)
        store = self._store(args, clients, task_vars)
        if step in ("start", "rollback"):
            result["seconds"] = {}
            state = self._start(args, task_vars, clients, store, rollback=step == "rollback", seconds=result["seconds"])
            if state.get("dry_run"):
                if args.get("host_args") is not None:  # the step asks the hosts what they would run itself
                    state = self._dry_run_hosts(state, self._read_dry_run(state, args))
                return self._shape(result, state, changed=False)
            self._keep_lease(args, state)
        else:
            state = dict(args.get("state") or {})
            if not state.get("deployment_id"):
                raise AnsibleActionFail("state: expected the deployment state returned by step=start")
            if state.get("dry_run"):
                results = self._host_results(task_vars, state.get("hosts") or [], args["host_results"] or DRY_RUN_RESULT_VAR)
                return self._shape(result, self._dry_run_hosts(state, results), changed=False)
            if self.check_mode:
                raise AnsibleActionFail(f"step={step} in check mode takes the dry-run state of step=start run in "
                                        "check mode; with a real deployment's state it would change it")
            if state.get("done") and step != "stop":
                return self._shape(result, state, changed=False)
            if state.get("hosts_read") is False and step not in ("staged", "stop"):
                raise AnsibleActionFail(f"state: the hosts' deployment states are not read yet (step=start with "
                                        f"read_hosts=staging): step=staged reads them, before step={step}")
            self._mark_step(state["deployment_id"])
            lb = self._load_balancer(state["options"].get("load_balancer"), clients)
            if lb is not None:
                lb.import_cache(state.get("lb_cache"))  # what start learnt about the target groups
            settings = AutoRollback.from_dict(state.get("auto_rollback"))
            run = InPlaceRun(store, lb, progress=_progress, alarms=self._alarm_watch(settings, clients),
                             guard=self._guard)
            refuse_handed_over(state, step)
            if state.get("done"):
                pass  # stop after the end: nothing left to stop
            elif step == "plan":
                within = args.get("within")
                results = args["host_results"] or RESULT_VARS[POST_ALLOW if state["with_load_balancer"] else MAIN]
                state = run.plan(state, self._host_results(task_vars, state["batch"], results),
                                 within=None if within is None else [str(h) for h in within])
            elif step == "block":
                results = args["host_results"] or RESULT_VARS[PRE_BLOCK]
                state = run.block(state, self._host_results(task_vars, state["active"], results),
                                  drain_timeout=state["options"].get("drain_timeout"))
            elif step == "allow":
                results = args["host_results"] or RESULT_VARS[MAIN]
                state = run.allow(state, self._host_results(task_vars, state["active"], results),
                                  healthy_timeout=state["options"].get("healthy_timeout"))
            elif step == "batch" and args.get("all_batches"):
                state = self._all_batches(run, state, args, result)
            elif step == "batch":
                state = self._batch(run, state, args, result)
            elif step == "staged":
                stage_hosts = state.get("stage_hosts") or []
                first = None
                if args.get("host_args") is not None:
                    with timed(result.setdefault("seconds", {}), "stage"):
                        results, first = self._stage(state, args, stage_hosts)
                else:
                    results = self._host_results(task_vars, stage_hosts, args["host_results"] or STAGE_RESULT_VAR)
                if state.get("hosts_read") is False:
                    self._check_reported(results)
                state = run.staged(state, results)
                if first is not None:
                    self._first_batch_ready(state, first, results)
                if state.get("hosts_read") is False and not state.get("done"):
                    state = self._plan_with_host_states(run, state, args, results, result.setdefault("seconds", {}))
            elif step == "stop":
                if state.get("handed_over"):
                    self._drop_handed_over(state, args, "the deployment stopped")
                state = run.finish(state, stop_reason=args.get("reason") or "stopped on request", status="Stopped")
            if state.get("done") and state.get("prestarted"):
                self._drop_prestarted(state, args, "the deployment ended")
            if lb is not None:
                state["lb_cache"] = lb.export_cache()
            self._keep_lease(args, state)
        return self._shape(result, state, changed=True)

    def _batch(self, run: InPlaceRun, state: dict, args: dict, result: dict) -> dict:
        """A whole batch in this one task: pick it, call its hosts around BlockTraffic and AllowTraffic, judge it."""
        within = args.get("within")
        seconds = result["seconds"] = {}  # where the batch's time went, by phase
        if state.get("handed_over"):  # the batch before, its hosts back in their load balancers: finish it first
            checked_hand_over(state)
            state = self._stopping_on_error(run, state, args, lambda: self._take_over(run, state, args, result))
        if not state.get("done"):
            with timed(seconds, "plan"):
                state = run.plan(state, {}, within=None if within is None else [str(h) for h in within])
        if state.get("prestarted") and (state.get("done") or not state["batch"]):
            self._drop_prestarted(state, args, "the deployment ended before this batch" if state.get("done")
                                  else "no host of this batch can go now")
        if state["batch"] and not state.get("done"):
            result.setdefault("host_results", {})
            state = self._stopping_on_error(run, state, args, lambda: self._deploy_batch(run, state, args, result))
        if args.get("last") and not state.get("done"):
            with timed(seconds, "finish"):
                state = run.plan(state, {}, within=[])  # judged already: finishes when no host waits
        return state

    def _stopping_on_error(self, run: InPlaceRun, state: dict, args: dict, work) -> dict:
        """``work()``'s state; an unexpected error in it ends the deployment as Stopped, as the role's rescue did."""
        try:
            return work()
        except (ControllerGone, LockLost):
            raise  # not this step's deployment to change any more: recovery works from the record
        except Exception as exc:  # pylint: disable=broad-except  # ends the deployment, as the role's rescue did
            # The role's rescue would stop the deployment with the state from before this task; stop it here, with
            # the batch in progress (hosts out of their load balancer stay recorded for recovery).
            reason = (error_result(exc, self.step_label(args)) or {}).get("msg") or f"unexpected error: {exc}"
            # a hand-over that failed half-way: the batch's finally told its sessions to stop; its hosts are registered
            state.pop("handed_over", None)
            return run.finish(state, stop_reason=reason, status="Stopped")

    def _all_batches(self, run: InPlaceRun, state: dict, args: dict, result: dict) -> dict:
        """Every batch left, in this one task, as the playbook's batches would run them: each planned batch (the next
        one's sessions started ahead, as between tasks), then the hosts they left one batch at a time, then the
        judgement of the last batch (finished when no host waits)."""
        seconds: dict = {}
        per_batch = result["batch_seconds"] = []
        started_ahead = result["started_ahead"] = []
        host_results: dict = {}

        def one(within: list | None) -> None:
            nonlocal state
            batch_result: dict = {}
            state = self._batch(run, state, dict(args, within=within, last=False), batch_result)
            if "host_results" in batch_result:  # a batch was deployed (not only judged)
                per_batch.append(batch_result["seconds"])
            started_ahead.extend(batch_result.get("started_ahead") or [])
            for call, by_host in (batch_result.get("host_results") or {}).items():  # main, post_allow, ...: per host
                host_results.setdefault(call, {}).update(by_host)
            for phase, spent in batch_result["seconds"].items():
                seconds[phase] = round(seconds.get(phase, 0.0) + spent, 3)

        try:
            for planned in [list(b) for b in state.get("plan_preview") or []]:
                if state.get("done"):
                    break
                one(planned)
            for _host in list(state.get("waiting") or []):  # each round deploys at least one host, or ends
                if state.get("done") or not state.get("waiting"):
                    break
                one(None)
            if not state.get("done"):
                with timed(seconds, "finish"):
                    state = run.plan(state, {}, within=[])  # the last batch judged: finishes when no host waits
        finally:
            result["seconds"], result["host_results"] = seconds, host_results
        return state

    def _host_states(self, args: dict, task_vars: dict, hosts: list) -> dict:
        """Each host's deployment state (host_deployment_info): read now from this task, on every host in parallel,
        when the task gives ``host_args``; else the results a task registered (``host_results``). A host that cannot
        be read counts as unhealthy (deployed first) and is called for BeforeBlockTraffic."""
        host_args = args.get("host_args")
        if host_args is None:
            return self._host_results(task_vars, hosts, args.get("host_results") or HOST_INFO_VAR)
        read = self._read_identity(args)
        if host_args.get("state_root"):
            read["state_root"] = host_args["state_root"]
        return self._host_caller(args).call(HOST_INFO_MODULE, {h: read for h in hosts})

    @staticmethod
    def _bundle_source(state: dict, host: str) -> dict:
        """Where a batch host installs the revision from: a host whose revision was staged installs from that copy
        (nothing to transfer); any other gets the bundle with its call."""
        return {"bundle_transfer": "push"} if host in (state.get("staged") or []) else {"src": state["revision"]["path"]}

    @staticmethod
    def _read_identity(args: dict) -> dict:
        """The application and deployment group a host read names: the task's host_args, else the step's own."""
        host_args = args.get("host_args") or {}
        return {"application": host_args.get("application") or args.get("application"),
                "deployment_group": host_args.get("deployment_group") or args.get("deployment_group") or args.get("application")}

    @staticmethod
    def _host_args(state: dict, args: dict) -> dict:
        """What every host call of this deployment passes (the task's host_args and the deployment's identity)."""
        return dict(args.get("host_args") or {}, deployment_id=state["deployment_id"], appspec=state["appspec"],
                    revision=state["host_revision"], failure_handled=True)

    def _host_caller(self, args: dict) -> HostCaller:
        """Calls hosts on behalf of this task, at most the task's forks (the run's --forks by default) at once. One
        caller per task: it keeps each host's variables for the task's later calls (all_batches makes many)."""
        forks = int(args.get("forks") or context_forks())
        callers = self.__dict__.setdefault("_host_callers", {})
        if forks not in callers:
            callers[forks] = HostCaller(self._task, forks=forks)
        return callers[forks]

    def _stage(self, state: dict, args: dict, hosts: list) -> tuple[dict, object]:
        """Stage the revision on ``hosts`` from this task (in parallel, at most forks at once): each host's result.
        The first batch's hosts, when that batch will run in host sessions, stage in the call that starts their
        session (one run of the host engine for both; the session waits for the batch): then also those
        sessions (see ``_first_batch_ready``)."""
        common = self._host_args(state, args)
        stage_args = dict(common, events=["DownloadBundle"], staging="stage", src=state["revision"]["path"],
                          progress_after=0)
        if state.get("hosts_read") is False:
            # The same call reads the host's state, before it stages. The first batch is then the one planned from the
            # load balancer's health; its sessions hold BeforeBlockTraffic wherever it may be due (see _sessions).
            stage_args["report_state"] = True
        caller = self._host_caller(args)
        per_host = {h: stage_args for h in hosts}
        first = self._first_batch_sessions(state, args, common, caller, hosts)
        if first is not None:
            for host in first[1]:  # the bundle comes as it does for staging; the session installs the staged copy
                per_host[host] = dict(first[0].args_by_host[host], staging="stage", src=state["revision"]["path"],
                                      bundle_transfer=stage_args.get("bundle_transfer") or "push",
                                      report_state=stage_args.get("report_state", False))
            first[0].adopt(list(first[1]))  # started by the call below
        return caller.call(HOST_MODULE, per_host), first

    @staticmethod
    def _check_reported(results: dict) -> None:
        """Staging calls that had to read the hosts' states said them (a task of the playbook's may not have)."""
        answered = [h for h, r in results.items() if isinstance(r, dict) and not r.get("failed") and not r.get("unreachable")]
        silent = [h for h in answered if not isinstance(results[h].get("host_state"), dict)]
        if silent:
            raise AnsibleActionFail(
                f"host_results: the staging results of {', '.join(sorted(silent))} hold no host_state, and the hosts' "
                "states were left to the staging calls (read_hosts=staging): stage with host_lifecycle's "
                "report_state=true, or start with read_hosts=start")

    def _plan_with_host_states(self, run: InPlaceRun, state: dict, args: dict, results: dict, seconds: dict) -> dict:
        """After staging calls that also read each host's state (read_hosts=staging): plan again with those states,
        discard the staged copies of hosts already on the revision, and start the first batch's host sessions."""
        with timed(seconds, "plan"):
            state = run.read_hosts(state, {h: reported_state(r, "host_state") for h, r in results.items()})
        if args.get("host_args") is None:
            return state  # the staging was a task of the playbook's: so are the rest (unstage.yml)
        common = self._host_args(state, args)
        caller = self._host_caller(args)
        prestarted = state.get("prestarted") or {}
        idle = {h: v for h, v in (prestarted.get("hosts") or {}).items() if h in (state.get("unstage") or [])}
        if idle:  # started in the staging call of a host that turned out to be on the revision already
            # ended before its staged copy (and the session's directory in it) is discarded
            self._abort_sessions(caller, state, dict(prestarted, hosts=idle), "the host is on the revision already",
                                 wait=True)
            state["prestarted"] = dict(prestarted, hosts={h: v for h, v in prestarted["hosts"].items() if h not in idle})
        if state.get("unstage"):
            discard = {k: common.get(k) for k in ("application", "deployment_group", "deployment_id", "state_root")}
            discard.update(events=["DownloadBundle"], staging="discard", progress_after=0)
            for host, outcome in caller.call(HOST_MODULE, {h: discard for h in state["unstage"]}).items():
                if not outcome or outcome.get("failed") or outcome.get("unreachable"):
                    _progress(f"{host}: the unused staged copy stays until the next staging: "
                              f"{(outcome or {}).get('msg') or 'no result'}")
        if (state.get("prestarted") or {}).get("hosts"):
            return state  # the staging calls started the first batch's sessions
        with timed(seconds, "sessions"):
            first = self._first_batch_sessions(state, args, common, caller, list(state.get("staged") or []),
                                               in_staging_call=False)
            if first is not None:
                run.guard()  # no host is called once the controller is gone
                first[0].start()
                state["prestarted"] = self._hand_over(first, state)
        return state

    def _first_batch_sessions(self, state: dict, args: dict, common: dict, caller: HostCaller, hosts: list,
                              in_staging_call: bool = True):
        """The first planned batch's sessions (not started yet), when it will run in host sessions: started in the
        staging calls of ``hosts`` (the hosts to stage), or after them (``hosts``: the hosts that staged)."""
        preview = [list(b) for b in state.get("plan_preview") or []]
        batch = [h for h in (preview[0] if preview else []) if h in hosts]
        if not (state.get("with_load_balancer") and args.get("host_sessions", True) and batch):
            return None
        as_staged = dict(state, staged=list(hosts))  # as the batch will see them: installing from the staged copy
        if in_staging_call and common.get("bundle_transfer") != "presigned" and not bundle_travels_in_call(state):
            return None  # staging pushes it to a temporary directory: not for a detached engine
        if not self._sessions_apply(as_staged, common, caller, batch):
            return None
        per_host, paths = self._session_args(as_staged, common, batch, pre_block_hosts(state, batch), 1)
        return BatchSessions(caller, HOST_MODULE, per_host, paths, progress=_progress), per_host, 1

    def _first_batch_ready(self, state: dict, first, results: dict) -> None:
        """After staging: hand the first batch the sessions the staging calls started, or abort them when the
        deployment will not go on."""
        sessions, per_host, batch_number = first
        started = {h: a for h, a in per_host.items()
                   if ((results.get(h) or {}).get("session") or {}).get("detached")}
        sessions.release()
        if state.get("done"):
            sessions.close("the deployment ended at staging", hosts=list(started))
            return
        state["prestarted"] = self._hand_over((sessions, started, batch_number), state)

    def _deploy_batch(self, run: InPlaceRun, state: dict, args: dict, result: dict) -> dict:
        """BeforeBlockTraffic, BlockTraffic, the main group, AllowTraffic, AfterAllowTraffic and the judgement of one
        batch. Each group of host events is a module call per host, or a word to the host sessions of the batch.
        Fills the step result's ``host_results``, ``seconds`` and ``started_ahead``."""
        with responsive_threads():  # this thread's record and load-balancer calls, between the host calls' set-ups
            return self._deploy_batch_calls(run, state, args, result)

    def _deploy_batch_calls(self, run: InPlaceRun, state: dict, args: dict, result: dict) -> dict:
        calls, seconds = result["host_results"], result["seconds"]
        common = self._host_args(state, args)
        with_lb = state["with_load_balancer"]
        options = state["options"]
        caller = self._host_caller(args)
        events = state["host_calls"]
        pre_hosts = [h for h in state.get("pre_block_hosts", state["active"]) if h in state["active"]] \
            if with_lb and events.get(PRE_BLOCK) else []
        sessions = ahead = None
        in_sessions = with_lb and args.get("host_sessions", True) and self._sessions_apply(state, common, caller)
        if in_sessions:
            run.guard()  # no host is called once the controller is gone
            with timed(seconds, "sessions"):
                sessions = self._sessions(state, common, caller, pre_hosts)
        elif state.get("prestarted"):
            self._drop_prestarted(state, args, "this batch runs without host sessions")

        def group(name: str, hosts: list, on_results=None, hold=None) -> dict:
            return self._group_call(state, common, caller, sessions, name, hosts, on_results=on_results, hold=hold)

        def keep(name: str, results: dict) -> dict:
            calls.setdefault(name, {}).update(kept(results))  # a batch handed over: its results are in this step's too
            return results

        def call(name: str, hosts: list) -> dict:
            if not hosts:
                return {}
            run.guard()  # no host is called once the controller is gone
            # Each host whose main group passed goes back into its load balancers at once, not with the slowest.
            put_back = (lambda arrived: run.put_back(state, arrived)) if name == MAIN and with_lb else None
            with timed(seconds, name):
                return keep(name, group(name, hosts, on_results=put_back))

        reason: str | None = "the controller stopped the batch"  # None: handed over, its sessions kept
        handed: dict = {"sessions": {}}
        try:
            if with_lb:
                state, results = self._block_and_main(run, state, pre_hosts, sessions is not None, (call, group, keep),
                                                      seconds)
                if state.get("done"):
                    return state
            else:
                results = call(MAIN, state["active"])
            if with_lb:
                if sessions is not None:
                    # The next batch's engines start while this one's hosts become healthy; they wait at gate 0.
                    issued = now_iso()
                    ahead = self._start_ahead(state, args, common, caller)
                    if ahead is not None:
                        result["started_ahead"] = [{"batch_number": ahead[2], "hosts": list(ahead[1]), "time": issued}]
                with timed(seconds, "allow"):
                    state = run.begin_allow(state, results)
                if self._may_hand_over(state, args):
                    handed = self._hand_over_batch(state, common, sessions, ahead, result)
                    ahead = reason = None
                    return state
                with timed(seconds, "allow"):
                    state = run.confirm_allowed(state, healthy_timeout=options.get("healthy_timeout"))
                if state.get("done"):
                    return state
                results = call(POST_ALLOW, state["active"])
            reason = "the batch is over"
            with timed(seconds, "judge"):
                state = run.close_batch(state, results)
            if ahead is not None:
                state["prestarted"] = self._hand_over(ahead, state)
                ahead = None
            return state
        finally:
            if sessions is not None:
                # Hosts the batch left behind (failed, still draining, or the deployment stopped) run nothing more;
                # a batch handed over keeps its hosts' sessions for the next step.
                sessions.close(reason or "the batch is over",
                               None if reason else [h for h in sessions.args_by_host if h not in handed["sessions"]])
            if ahead is not None:  # the batch did not end as planned: the next batch starts its own
                ahead[0].wait_started()
                ahead[0].close("the batch before stopped")

    def _group_call(self, state: dict, common: dict, caller: HostCaller, sessions: BatchSessions | None, name: str,
                    hosts: list, on_results=None, hold=None) -> dict:
        """One group of a batch's host events (PRE_BLOCK, MAIN, POST_ALLOW) on ``hosts``: a word to their host
        sessions, or a module call per host."""
        events = state["host_calls"]
        if sessions is not None:
            label = events[name][0] if len(events[name]) == 1 else f"{events[name][0]}..{events[name][-1]}"
            return sessions.results(SESSION_GROUP[name], hosts, label, on_results=on_results, hold=hold)
        complete = name == POST_ALLOW or not state["with_load_balancer"]
        per_host = {h: dict(common, events=events[name], complete=complete) for h in hosts}
        if name == MAIN:
            for host, host_args in per_host.items():
                host_args.update(self._bundle_source(state, host))
        return caller.call(HOST_MODULE, per_host, on_results=on_results, hold=hold)

    @staticmethod
    def _may_hand_over(state: dict, args: dict) -> bool:
        """Whether this batch hands its hosts' health wait and AfterAllowTraffic over to the next batch's step: only
        when a batch step surely follows (this step runs a planned batch with another after it, one task per batch)
        and some of its hosts are back in their load balancers."""
        return bool(state["active"] and not state.get("done") and not args.get("all_batches") and not args.get("last")
                    and next_planned(state, args.get("within")) is not None)

    def _hand_over_batch(self, state: dict, common: dict, sessions: BatchSessions | None, ahead, result: dict) -> dict:
        """Hand this batch, its hosts registered again, over to the next batch's step, which waits until they are
        healthy and runs their AfterAllowTraffic: Ansible's move to the next task then happens during the
        registration, not after it. Kept in the state: the batch's number and each active host's session (its engine
        waits at the AfterAllowTraffic gate; the next step keeps it alive from now on), and the next batch's sessions
        started ahead. Returns what was handed over."""
        handed: dict = {"batch_number": state["batch_number"], "sessions": {}}
        if sessions is not None:
            sessions.release()
            handed["where"] = session_place(common)
            handed["sessions"] = {h: {"name": sessions.args_by_host[h]["session"]["name"], "gates": sessions.last_gate[h]}
                                  for h in state["active"]}
        state["handed_over"] = handed
        result["handed_over"] = {"batch_number": state["batch_number"], "hosts": list(state["active"]), "time": now_iso()}
        if ahead is not None:
            state["prestarted"] = self._hand_over(ahead, state)
        return handed

    def _take_over(self, run: InPlaceRun, state: dict, args: dict, result: dict) -> dict:
        """Finish the batch the step before handed over (its hosts back in their load balancers): wait until they are
        healthy, run their AfterAllowTraffic, judge the batch. Only then is this step's own batch planned."""
        handed = state.pop("handed_over")
        calls = result.setdefault("host_results", {})
        seconds = result["seconds"]
        common = self._host_args(state, args)
        caller = self._host_caller(args)
        sessions = None
        if handed["sessions"]:  # at the AfterAllowTraffic gate: the earlier gates were said by the step before
            sessions = self._adopted_sessions(caller, state, handed["where"], handed["sessions"], SESSION_GROUP[POST_ALLOW])
        result["took_over"] = {"batch_number": handed["batch_number"], "hosts": list(state["active"])}
        _progress(f"batch {handed['batch_number']}: taken over, its hosts back in their load balancers")
        reason = "the controller stopped the batch"
        try:
            with timed(seconds, "allow"):
                state = run.confirm_allowed(state, healthy_timeout=state["options"].get("healthy_timeout"), fence=True)
            if state.get("done"):
                return state
            run.guard()  # no host is called once the controller is gone
            with timed(seconds, POST_ALLOW):
                results = self._group_call(state, common, caller, sessions, POST_ALLOW, state["active"])
            calls.setdefault(POST_ALLOW, {}).update(kept(results))
            reason = "the batch is over"
            with timed(seconds, "judge"):
                return run.close_batch(state, results)
        finally:
            if sessions is not None:
                sessions.close(reason)

    def _block_and_main(self, run: InPlaceRun, state: dict, pre_hosts: list, in_sessions: bool, calls: tuple,
                        seconds: dict) -> tuple[dict, dict]:
        """BeforeBlockTraffic, BlockTraffic and the main group of a batch behind load balancers: the new state and
        the main group's results (none when the deployment ended before it)."""
        call, group, keep = calls
        drain_timeout = state["options"].get("drain_timeout")
        pre_block = call(PRE_BLOCK, pre_hosts)
        if not in_sessions:
            with timed(seconds, "block"):
                state = run.block(state, pre_block, drain_timeout=drain_timeout)
            return state, ({} if state.get("done") else call(MAIN, state["active"]))
        with timed(seconds, "block"):
            state = run.begin_block(state, pre_block)
        if state.get("done"):
            return state, {}
        return state, self._paced_main(run, state, group, keep, seconds, drain_timeout)

    @staticmethod
    def _paced_main(run: InPlaceRun, state: dict, group, keep, seconds: dict, drain_timeout) -> dict:
        """BlockTraffic and the main group of a batch in host sessions, its hosts leaving their load balancers paced
        to the controller (drain_pacing): as many at a time as the controller gets words ready for in one drain, at
        the pace the batch before measured (or a start pace per core, never above it), then at the pace this batch's
        words get ready. Each word is set up while its host drains and goes as the drain ends."""
        from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import (
            memberships_from_list,
        )

        hosts = list(state["active"])
        if not hosts:
            return keep(MAIN, {})
        leaving = [m for h in hosts for m in (state.get("leaving") or {}).get(h, [])]
        drain = run.lb.drain_seconds(memberships_from_list(leaving)) if leaving else None
        cores = os.cpu_count()
        pacer = DrainPacer(hosts, drain, ReachRate(), start_pace(state.get("reach_pace"), cores),
                           ceiling=pace_ceiling(cores))
        if pacer.paced():
            _progress(f"batch {state.get('batch_number')}: {pacer.depth()} of {len(hosts)} hosts out at a time at first, "
                      f"each about {drain:.0f}s before its word goes (the controller takes about "
                      f"{pacer.pace():.1f} hosts/s through)")
        run.guard()  # no host is called once the controller is gone
        with timed(seconds, MAIN):
            results = run.paced_main(state, pacer, lambda batch, on_results, hold: group(
                MAIN, batch, on_results=on_results, hold=hold), drain_timeout)
        pace = pacer.rate.per_second()
        if pace:
            state["reach_pace"] = round(pace, 3)  # the next batch starts at this pace (checked when read back)
        return keep(MAIN, results)

    def _sessions_apply(self, state: dict, common: dict, caller: HostCaller, hosts: list | None = None) -> bool:
        """Whether a batch of ``hosts`` (this batch's by default) runs in host sessions (docs/inplace.md, Host
        sessions): at most forks hosts, each reached through a connection that keeps the session's run alive while
        other calls come and go (ssh, local), the hosts' state root known here as they know it, and every bundle
        in the start call's arguments or staged already (a detached engine outlives its call's temporary files;
        a presigned URL signed at a session's start could expire during a long drain)."""
        hosts = state["active"] if hosts is None else hosts
        if not 0 < len(hosts) <= caller.forks or not self._session_state_root(common):
            return False
        staged = set(state.get("staged") or [])
        if any(h not in staged for h in hosts) and (common.get("bundle_transfer") == "presigned"
                                                    or not bundle_travels_in_call(state)):
            return False
        return all(caller.connection(h) in SESSION_CONNECTIONS for h in hosts)

    @staticmethod
    def _session_state_root(common: dict) -> str | None:
        """The hosts' state root when the controller knows it as the hosts will (absolute, nothing to expand): the
        session's directory is named after it; otherwise each group is a call of its own."""
        root = str(common.get("state_root") or DEFAULT_STATE_ROOT)
        return root if os.path.isabs(root) and "$" not in root and "~" not in root else None

    def _session_args(self, state: dict, common: dict, hosts: list, pre_hosts: list,
                      batch_number: int) -> tuple[dict, dict]:
        """Each host's host_lifecycle arguments for its session of batch ``batch_number``, and the session's
        directory on the host: BeforeBlockTraffic where it is due (an empty first group elsewhere), a gate before
        every group, the main group, AfterAllowTraffic."""
        events = state["host_calls"]
        batch_name = f"b{batch_number}-{secrets.token_hex(6)}"
        per_host, paths = {}, {}
        for number, host in enumerate(hosts):
            name = f"{batch_name}-{number}"  # one per host: two inventory names of one machine never share it
            host_args = dict(common, events=events[PRE_BLOCK] if host in pre_hosts else [], session={
                "name": name, "groups": [{"events": events[MAIN]}, {"events": events[POST_ALLOW], "complete": True}]})
            host_args.update(self._bundle_source(state, host))
            per_host[host] = host_args
            paths[host] = session_path(state["deployment_id"], session_place(common), name)
        return per_host, paths

    def _sessions(self, state: dict, common: dict, caller: HostCaller, pre_hosts: list) -> BatchSessions:
        """The batch's host sessions: the ones the batch before started for it (when they are what this batch
        runs), the others started now. Each waits at gate 0 until the batch says run."""
        per_host, paths = self._session_args(state, common, state["active"], pre_hosts, state["batch_number"])
        prestarted = state.pop("prestarted", None)
        ready = prestarted_for(prestarted, state["batch_number"], per_host)
        if state["host_calls"].get(PRE_BLOCK):
            # A session started before the hosts were read has BeforeBlockTraffic in its first group wherever it
            # might be due. On a host that turned out not to need it (its previous revision has no scripts for it,
            # or there is none) it is taken over all the same: no call for that group; the main group's word opens
            # both gates, and the group runs no script (the step records it as for any host not called).
            as_pre = {h: dict(a, events=state["host_calls"][PRE_BLOCK]) for h, a in per_host.items()
                      if h not in ready and h not in pre_hosts}
            also = prestarted_for(prestarted, state["batch_number"], as_pre)
            for host in also:
                per_host[host] = as_pre[host]
            ready.update(also)
        for host, session in ready.items():
            per_host[host] = dict(per_host[host], session=dict(per_host[host]["session"], name=session["name"]))
            paths[host] = session_path(state["deployment_id"], session_place(common), session["name"])
        leftover = dict((prestarted or {}).get("hosts") or {})
        for host in ready:
            leftover.pop(host)
        if leftover:
            self._abort_sessions(caller, state, dict(prestarted, hosts=leftover), "not in this batch as planned")
        sessions = BatchSessions(caller, HOST_MODULE, per_host, paths, progress=_progress)
        sessions.adopt(list(ready))
        sessions.start([h for h in per_host if h not in ready])
        if ready:
            _progress(f"batch {state['batch_number']}: host sessions started ahead on {len(ready)} of "
                      f"{len(per_host)} host(s)")
        return sessions

    def _start_ahead(self, state: dict, args: dict, common: dict, caller: HostCaller):
        """Start the next planned batch's sessions now (in the background), or None when there is none to start:
        no next batch, or one that would not run in sessions. They wait at gate 0, so nothing runs there before
        the next batch's turn (the minimum-healthy rule)."""
        following = next_planned(state, args.get("within"))
        if following is None:
            return None
        waiting = set(state.get("waiting") or [])
        hosts = [h for h in following if h in waiting]
        if not self._sessions_apply(state, common, caller, hosts):
            return None
        hosts = hosts[:ahead_limit()]  # the others start in their batch's turn
        per_host, paths = self._session_args(state, common, hosts, pre_block_hosts(state, hosts),
                                             state["batch_number"] + 1)
        ahead = BatchSessions(caller, HOST_MODULE, per_host, paths, progress=_progress)
        ahead.start()
        return ahead, per_host, state["batch_number"] + 1

    def _hand_over(self, ahead, state: dict) -> dict:
        """What the next batch's task needs to adopt the sessions started ahead (their start calls waited for:
        a task that ended during a call would leave no session)."""
        sessions, per_host, batch_number = ahead
        failed = sessions.wait_started()
        sessions.release()  # the next batch keeps them alive from now on
        hosts = {h: {"name": a["session"]["name"], "gates": sessions.last_gate[h], "args": args_digest(a)}
                 for h, a in per_host.items() if h not in failed}
        # Where they live, for a later step that may not know the hosts' options (a stop).
        where = session_place(next(iter(per_host.values()))) if per_host else {}
        return {"batch_number": batch_number, "where": where, "hosts": hosts}

    @staticmethod
    def _adopted_sessions(caller: HostCaller, state: dict, where: dict, by_host: dict, from_gate: int = 0,
                          skip_unknown: bool = False) -> BatchSessions:
        """The sessions an earlier step started (``by_host``: each one's name and gate count; ``where``: the hosts'
        state root, application and group), taken over at gate ``from_gate``. Each path is built from checked parts
        (session_path); with ``skip_unknown``, a session it refuses is left out (nothing of ours waits there)."""
        gates, paths = {}, {}
        for host, session in by_host.items():
            try:
                paths[host] = session_path(state["deployment_id"], where or {}, session.get("name"))
            except StateError:
                if not skip_unknown:
                    raise
                continue
            gates[host] = {"session": {"groups": [{}] * int(session.get("gates") or 0)}}
        sessions = BatchSessions(caller, HOST_MODULE, gates, paths, progress=_progress)
        sessions.adopt(list(gates))
        for host in gates:
            sessions.next_gate[host] = from_gate
        return sessions

    def _abort_sessions(self, caller: HostCaller, state: dict, prestarted: dict, reason: str, wait: bool = False,
                        from_gate: int = 0) -> None:
        """Tell sessions an earlier step started (ahead of their batch, or a batch handed over at ``from_gate``) that
        nothing more runs; with ``wait``, until their engines stopped."""
        sessions = self._adopted_sessions(caller, state, prestarted.get("where") or {}, prestarted.get("hosts") or {},
                                          from_gate, skip_unknown=True)
        sessions.close(reason)
        if wait:
            sessions.wait_ended(list(sessions.paths))

    def _drop_handed_over(self, state: dict, args: dict, reason: str) -> None:
        """A stop with a batch handed over: its hosts are registered again already (recovery confirms them from the
        record); their sessions, checked, are told that nothing more runs (unchecked, they expire unattended)."""
        try:
            handed = checked_hand_over(state)
        except AnsibleActionFail as exc:
            _progress(f"the handed-over batch's sessions are left to expire: {exc}")
            handed = {}
        state.pop("handed_over", None)
        if handed.get("sessions"):
            self._abort_sessions(self._host_caller(args), state, {"where": handed["where"], "hosts": handed["sessions"]},
                                 reason, from_gate=SESSION_GROUP[POST_ALLOW])

    def _drop_prestarted(self, state: dict, args: dict, reason: str) -> None:
        prestarted = state.pop("prestarted", None) or {}
        if prestarted.get("hosts"):
            self._abort_sessions(self._host_caller(args), state, prestarted, reason)

    def _read_dry_run(self, state: dict, args: dict) -> dict:
        """What each host of a dry run would run, asked from this task (check mode: nothing runs or changes there):
        each group of host events is a call to every host at once; a host's results are gathered as a loop's."""
        common = dict(args.get("host_args") or {}, **self._read_identity(args), deployment_id=state["deployment_id"],
                      appspec=state["appspec"], revision=state["host_revision"], src=state["revision"]["path"])
        caller = self._host_caller(args)
        hosts = list(state.get("hosts") or [])
        gathered: dict[str, list] = {h: [] for h in hosts}
        for events in (state.get("host_calls") or {}).values():
            for host, host_result in caller.call(HOST_MODULE, {h: dict(common, events=events) for h in hosts}).items():
                gathered[host].append(host_result or {"failed": True, "msg": "no result"})
        results = {}
        for host, items in gathered.items():
            lost = next((r for r in items if r.get("unreachable")), None)  # a host not reached was not read
            results[host] = lost or {"results": items, "failed": any(r.get("failed") for r in items)}
        return results

    def _dry_run_hosts(self, state: dict, results: dict) -> dict:
        """A dry run's plan with what each host reported in check mode (events, scripts, and with diff the files)."""
        from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.dry_run import format_host_plans

        state = dict(state)
        if any(results.values()) and "per host" not in state["summary_text"]:
            state["summary_text"] += "\n" + format_host_plans(results, diff=self.diff_mode)
            state["host_plans"] = {h: (r or {}).get("plan") for h, r in results.items()}
        return state

    @staticmethod
    def _shape(result: dict, state: dict, changed: bool) -> dict:
        result["batch"] = state.get("batch", [])
        return state_result(result, state, "_rollwright", changed=changed)

    @staticmethod
    def _record_unstartable(store, application: str, group: str, revision: dict, targets: list, trigger: dict,
                            exc: Exception) -> None:
        """A triggered deployment that cannot start (bundle not fetched, invalid appspec) is recorded as Failed."""
        from ansible_collections.rollwright.deploy.plugins.module_utils.records import DeploymentRecord, HostRecord
        s3 = revision.get("s3") or {}
        identity = ({"source": "s3", "bucket": s3.get("bucket"), "key": s3.get("key"), "version": s3.get("version"),
                     "etag": s3.get("etag")} if s3 else {"source": "local", "local_path": revision.get("path")})
        record = store.create(DeploymentRecord(
            application=application, deployment_group=group, deployment_type="in_place",
            revision={k: v for k, v in identity.items() if v is not None}, status="Failed", error=str(exc),
            start_time=now_iso(), end_time=now_iso(),
            hosts=[HostRecord(name=t["name"], instance_id=t.get("instance_id"), status="Skipped") for t in targets],
            extra={"trigger": dict(trigger)}))
        _progress(f"deployment {record.deployment_id} recorded as Failed, nothing was touched: {exc}")

    def _start(self, args: dict, task_vars: dict, clients, store, rollback: bool = False,
               seconds: dict | None = None) -> dict:
        seconds = {} if seconds is None else seconds
        hosts = list(args.get("hosts") or [])
        if not hosts:
            raise AnsibleActionFail("hosts: expected at least one host to deploy to")
        application = args.get("application")
        if not application:
            raise AnsibleActionFail("application: expected the application name (rollwright_application)")
        group = args.get("deployment_group") or application
        settings = parse_auto_rollback(args.get("auto_rollback"), on_failure=args.get("auto_rollback_on_failure"),
                                       on_alarm=args.get("auto_rollback_on_alarm"), alarms=args.get("auto_rollback_alarms"),
                                       ignore_poll_alarm_failure=args.get("auto_rollback_ignore_poll_alarm_failure"))
        plan = None
        if rollback:
            plan = plan_rollback(store, application, group, rollback_of=args.get("rollback_of") or None,
                                 rollback_to=args.get("rollback_to") or None,
                                 hosts=None if args.get("rollback_auto") else hosts)
            unknown = [h for h in plan.hosts if h not in task_vars.get("hostvars", {})]
            if unknown:
                raise AnsibleActionFail(f"rollback: hosts {', '.join(unknown)} of {plan.rollback_of} are not in the inventory")
            hosts = plan.hosts
            revision = deploy_inputs.normalise_revision(revision_source(plan.revision))
            _progress(f"rollback of {plan.rollback_of} to the revision of {plan.target_deployment_id} on {', '.join(hosts)}")
        else:
            if not args.get("revision"):
                raise AnsibleActionFail("revision: expected the revision to deploy (rollwright_revision)")
            revision = deploy_inputs.normalise_revision(args.get("revision"))
        lb_config = deploy_inputs.normalise_load_balancer(args.get("load_balancer"),
                                                          args.get("target_group_arns"), args.get("classic_elb_names"))
        id_var = args.get("instance_id_var") or "ec2_instance_id"
        hostvars = task_vars.get("hostvars", {})
        targets = []
        for host in hosts:
            hv = hostvars[host]
            targets.append({"name": host, "instance_id": hv.get(id_var) or hv.get("instance_id")})
        # HAProxy servers are named by inventory hostname; the engine addresses hosts by lb id.
        lb_config = haproxy_servers_by_lb_id(lb_config, targets)
        read_hosts = args.get("read_hosts") or "start"
        if rollback and read_hosts != "start":
            raise AnsibleActionFail(f"read_hosts: {read_hosts!r} is for step=start; a rollback reads its hosts itself "
                                    "(expected 'start' or nothing)")
        host_states = None  # read by the staging calls (read_hosts=staging); a dry run stages nothing, it reads now
        if read_hosts == "start" or self.check_mode:
            with timed(seconds, "read_hosts"):
                read = self._host_states(args, task_vars, hosts)
            host_states = {h: reported_state(info) for h, info in read.items()}
        cache_dir = os.path.expanduser(args.get("cache_dir") or "~/.cache/rollwright/bundles")
        trigger = args.get("trigger") or None
        if trigger is not None and not isinstance(trigger, dict):
            raise AnsibleActionFail(f"trigger: expected a dict saying what triggered the deployment, got {trigger!r}")
        try:
            with timed(seconds, "revision"):
                identity, appspec = self._fetch_revision(revision, clients, cache_dir,
                                                         args.get("appspec_name") or "appspec.yml")
        except Exception as exc:
            if trigger and not plan:
                self._record_unstartable(store, application, group, revision, targets, trigger, exc)
            raise
        if plan is not None and plan.revision.get("sha256") and identity["sha256"] != plan.revision["sha256"]:
            raise AnsibleActionFail(
                f"rollback: the bundle fetched for {plan.target_deployment_id}'s revision has SHA-256 {identity['sha256']}, "
                f"not the recorded {plan.revision['sha256']}: it changed since, so it is not rolled back to")
        if plan is not None and identity.get("source") == "local":
            identity["local_path"] = plan.revision.get("local_path") or identity.get("local_path")
        options = {
            "load_balancer": lb_config,
            "drain_timeout": args.get("drain_timeout"),
            "healthy_timeout": args.get("healthy_timeout"),
        }
        lb = self._load_balancer(lb_config, clients)
        run = InPlaceRun(store, lb, progress=_progress, alarms=self._alarm_watch(settings, clients), guard=self._guard)
        if self.check_mode:
            return run.dry_run(application=application, deployment_group=group, hosts=targets, host_states=host_states,
                               revision=identity, appspec=appspec, config=args.get("deployment_config"),
                               load_balancer=lb_config, auto_rollback=settings.to_dict(),
                               rollback=plan.to_dict() if plan else None,
                               original_memberships=plan.original_memberships if plan else None)
        ttl = float(args.get("lock_ttl") or DEFAULT_LOCK_TTL)
        controller = lease.find_controller()
        with timed(seconds, "record"):
            state = run.start(application=application, deployment_group=group, hosts=targets, host_states=host_states,
                              revision=identity, appspec=appspec, config=args.get("deployment_config"),
                              load_balancer=lb_config, options=options,
                              creator="rollback" if plan else (args.get("creator") or "user"),
                              rollback_of=plan.rollback_of if plan else args.get("rollback_of"),
                              force_lock=bool(args.get("force_lock")), lock_ttl=ttl, auto_rollback=settings.to_dict(),
                              original_memberships=plan.original_memberships if plan else None,
                              on_locked=lambda lock: self._start_lease(args, lock, controller),
                              trigger=trigger)
        state["lease_interval"] = lease_interval(ttl)
        if lb is not None:
            # Later steps run in other processes: spare them describing the target groups again.
            state["lb_cache"] = lb.export_cache()
        if plan is not None:
            state["rollback_plan"] = plan.to_dict()
        return state
