# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One deployment's record, lock and lease, for in-place, blue/green and Lambda alike.

A :class:`DeploymentSession` creates the record, takes the group's lock (one ttl default,
:data:`DEFAULT_LOCK_TTL`, for every deployment type), keeps it renewed by the lease keeper
(deployments/lease.py, a detached process that also notices a dead controller), renews it itself before
each write to AWS (fencing), appends events as they happen, and at the end writes the final
status, closes the open control requests and releases the lock. :func:`recover` is the one
dispatch of a recovery on the deployment type (the ``deployment_recover`` action calls it).

The session is plain data between steps: :meth:`DeploymentSession.to_state` goes into the
step's JSON state (keys ``lock``, ``lease_keeper``, ``lease_interval``) and
:meth:`DeploymentSession.from_state` picks it up in the next step's process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import (
    TERMINAL_STATUSES,
    DeploymentRecord,
    Lock,
    LockHeld,
    LockLost,
    RecordNotFound,
    RecordStore,
)

# The group lock's lease, for every deployment type: renewed every few seconds by the lease keeper
# and by every controller step, so a dead controller's lock is recognisably stale after a minute.
DEFAULT_LOCK_TTL = 60.0

# Options the detached lease keeper may get: never a secret (it finds credentials as boto3 does).
KEEPER_AWS_OPTIONS = ("region", "endpoint_url", "profile", "validate_certs", "aws_ca_bundle")

Progress = Callable[[str], None]


def lease_interval(ttl: float) -> float:
    """How often the lease keeper renews a lock of ``ttl`` seconds (six renewals per ttl, 1 to 10 s)."""
    return max(1.0, min(10.0, float(ttl) / 6.0))


def lease_dir() -> str:
    """Where lease keepers keep their logs and controller steps their pid markers."""
    return os.path.expanduser("~/.cache/rollwright/lease")


@dataclass
class LeaseSettings:
    """What the lease keeper needs to open the record store on its own (no secret: see KEEPER_AWS_OPTIONS)."""

    record_options: dict
    aws_options: dict = field(default_factory=dict)
    work_dir: str = field(default_factory=lease_dir)

    def __post_init__(self) -> None:
        self.aws_options = {k: v for k, v in (self.aws_options or {}).items() if k in KEEPER_AWS_OPTIONS and v}

    @classmethod
    def for_task(cls, record_options: Optional[dict], aws_options: dict, environ: dict) -> "LeaseSettings":
        """The settings of a task: region and endpoint resolved from the task's environment when the
        options leave them out (so that ``environment:`` and module_defaults still apply to the keeper)."""
        options = dict(aws_options)
        for name, variables in (("region", ("AWS_REGION", "AWS_DEFAULT_REGION")),
                                ("endpoint_url", ("AWS_URL", "AWS_ENDPOINT_URL"))):
            found = next((environ[v] for v in variables if environ.get(v)), None)
            if not options.get(name) and found:
                options[name] = found
        return cls(dict(record_options or {}), options)


def lock_refusal(store: RecordStore, exc: LockHeld) -> str:
    """The store's lock message, and what the holder's record says when its controller is known dead."""
    message = str(exc)
    try:
        holder = store.get(exc.info.deployment_id)
    except RecordNotFound:
        return message
    if holder.status in TERMINAL_STATUSES:
        message += (f". Deployment {holder.deployment_id} is already {holder.status} ({holder.error or 'no error recorded'}) "
                    f"but still holds the lock: its controller died. {recovery_command_hint(holder)}")
    return message


def recovery_command_hint(record: DeploymentRecord) -> str:
    if record.deployment_type == "lambda":
        return ("Recover it with the rollwright.deploy.lambda playbook and -e rollwright_lambda_recover=true (alias back "
                "on its current version, lock released)")
    return ("Run the rollwright.deploy.recover playbook for it (it restores its hosts' load-balancer membership and "
            "releases the lock)")


class DeploymentSession:
    """The record, lock and lease of one deployment (see the module documentation)."""

    def __init__(self, store: RecordStore, deployment_id: str, lock: Optional[dict] = None,
                 keeper: Optional[dict] = None, interval: Optional[float] = None,
                 guard: Optional[Callable[[], None]] = None, progress: Optional[Progress] = None):
        self.store = store
        self.deployment_id = deployment_id
        self.lock = dict(lock) if lock else None
        self.keeper = dict(keeper) if keeper else None
        self.interval = interval or lease_interval((lock or {}).get("ttl") or DEFAULT_LOCK_TTL)
        self.guard = guard or (lambda: None)
        self.progress = progress or (lambda message: None)

    # ------------------------------------------------------------------ start
    @classmethod
    def open(cls, store: RecordStore, record: DeploymentRecord, *, ttl: Optional[float] = None,
             owner: Optional[str] = None, force: bool = False, lease_settings: Optional[LeaseSettings] = None,
             record_refusal: bool = True, guard: Optional[Callable[[], None]] = None,
             progress: Optional[Progress] = None) -> "DeploymentSession":
        """Create the record and take the group's lock (``ttl`` default :data:`DEFAULT_LOCK_TTL`), then
        start the lease keeper when ``lease_settings`` are given. A lock held by another deployment
        raises LockHeld (its message says what the holder's record says); with ``record_refusal`` the
        refused deployment is recorded as Failed, else the lock is taken first and nothing is recorded."""
        ttl = float(ttl or DEFAULT_LOCK_TTL)
        if record_refusal:
            record = store.create(record)
            session = cls(store, record.deployment_id, guard=guard, progress=progress)
            try:
                session.lock = store.acquire_lock(record.application, record.deployment_group, record.deployment_id,
                                                  owner=owner, ttl=ttl, force=force).to_dict()
            except LockHeld as exc:
                message = lock_refusal(store, exc)
                store.update_status(record.deployment_id, "Failed", error=message)
                raise LockHeld(message, exc.info) from exc
            except Exception as exc:
                store.update_status(record.deployment_id, "Failed", error=str(exc))
                raise
        else:
            record.prepare_for_create()
            try:
                lock = store.acquire_lock(record.application, record.deployment_group, record.deployment_id,
                                          owner=owner, ttl=ttl, force=force)
            except LockHeld as exc:
                raise LockHeld(lock_refusal(store, exc), exc.info) from exc
            session = cls(store, record.deployment_id, lock=lock.to_dict(), guard=guard, progress=progress)
            try:
                store.create(record)
            except Exception:
                session.release()
                raise
        session.interval = lease_interval(ttl)
        if lease_settings is not None:
            session.start_lease(lease_settings)
        return session

    @classmethod
    def from_state(cls, store: RecordStore, state: dict, guard: Optional[Callable[[], None]] = None,
                   progress: Optional[Progress] = None) -> "DeploymentSession":
        """The session a step's state carries (see :meth:`to_state`)."""
        return cls(store, state["deployment_id"], lock=state.get("lock"), keeper=state.get("lease_keeper"),
                   interval=state.get("lease_interval"), guard=guard, progress=progress)

    def to_state(self, state: dict) -> dict:
        """Put the lock and the lease keeper into a step's state (the next step picks them up)."""
        state.update(lock=self.lock, lease_keeper=self.keeper, lease_interval=self.interval)
        return state

    # ------------------------------------------------------------------ during
    def mark_in_progress(self) -> None:
        self.store.update_status(self.deployment_id, "InProgress")

    def renew(self) -> dict:
        """Renew the lock by its token: the fencing check before a write (LockLost once it was taken over)."""
        self.guard()
        self.lock = self.store.heartbeat(Lock.from_dict(self.lock)).to_dict()
        return self.lock

    def event(self, host: str, name: str, status: str, **fields: Any) -> None:
        """Append (or update) one lifecycle event as it happens."""
        self.store.event(self.deployment_id, host, name, status, **fields)

    def set_extra(self, key: str, value: Any) -> None:
        self.store.set_extra(self.deployment_id, key, value)

    def record(self) -> DeploymentRecord:
        return self.store.get(self.deployment_id)

    # ------------------------------------------------------------------ end
    def end(self, status: str, error: Optional[str] = None, note: Optional[str] = None) -> DeploymentRecord:
        """Write the final status (unless already ended: a recovery or the lease keeper may have), close
        the open control requests, release the lock (a lock taken over is not ours any more) and stop the
        lease keeper. Returns the final record (its summary)."""
        if self.store.get(self.deployment_id).status not in TERMINAL_STATUSES:
            self.store.update_status(self.deployment_id, status, error=error)
        control_requests.close_open(self.store, self.deployment_id,
                                    note or f"the deployment ended ({status}) before it was seen")
        self.release()
        return self.store.get(self.deployment_id)

    def release(self) -> bool:
        """Release the lock and stop the lease keeper; False when the lock was not ours any more."""
        released = False
        if self.lock:
            try:
                released = self.store.release_lock(Lock.from_dict(self.lock))
            except LockLost as exc:  # taken over after going stale: not ours to release any more
                self.progress(f"deployment {self.deployment_id}: {exc}")
        self.stop_lease()
        return released

    # ------------------------------------------------------------------ lease keeper
    def start_lease(self, settings: LeaseSettings, controller: Optional[tuple] = None) -> dict:
        """Start the detached lease keeper for this lock (it renews it while the controller lives)."""
        controller = tuple(controller or (self.keeper or {}).get("controller") or lease.find_controller())
        keeper = lease.spawn_lease_keeper(
            dict(settings.record_options), dict(settings.aws_options), dict(self.lock or {}), controller,
            interval=self.interval, work_dir=settings.work_dir,
            log_path=os.path.join(settings.work_dir, f"{self.deployment_id}.log"))
        keeper["controller"] = list(controller)
        self.keeper = keeper
        return keeper

    def keep_lease(self, settings: LeaseSettings, done: bool) -> None:
        """Between steps: start the keeper again if it died; stop it once the deployment is done."""
        if done:
            self.stop_lease()
            return
        if self.keeper and lease.process_alive(int(self.keeper["pid"]), self.keeper.get("start")):
            return
        self.start_lease(settings)

    def stop_lease(self) -> None:
        lease.stop_lease_keeper(self.keeper)


# ---------------------------------------------------------------------------------------------- recovery


def recover(store: RecordStore, clients: Any, record: DeploymentRecord, *, force: bool = False,
            check_mode: bool = False, load_balancer: Optional[dict] = None, healthy_timeout: float = 300.0,
            record_options: Optional[dict] = None, aws_options: Optional[dict] = None,
            progress: Optional[Progress] = None) -> dict:
    """Recover a deployment whose controller died, as its type requires: in-place (deployments/recovery.py: hosts
    back into their recorded memberships), blue/green EC2 (``bluegreen.recover``), Lambda (refused with
    the Lambda playbook command that recovers it, :func:`recover_lambda`). Returns ``changed``,
    ``plan``, ``report`` and ``message``; raises RecoveryError when recovery is refused."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery

    say = progress or (lambda message: None)
    lock = store.get_lock(record.application, record.deployment_group)
    if record.deployment_type == "blue_green_ec2":
        return _recover_bluegreen(store, clients, record, lock, force, check_mode, say)
    if record.deployment_type == "lambda":
        refusal = recovery.lambda_refusal(record, lock, record_options, aws_options)
        if refusal:
            raise recovery.RecoveryError(refusal)
        return {"changed": False, "report": None, "plan": {"deployment_type": "lambda", "refused": None},
                "message": f"{record.deployment_id} (Lambda, {record.status}): nothing to do, it ended and does not "
                           "hold the group's lock"}
    return _recover_inplace(store, clients, record, lock, force, check_mode, load_balancer, healthy_timeout, say)


def _settle(store: RecordStore, record: DeploymentRecord, say: Progress) -> list:
    """Close the dead controller's open control requests as recovery carried them out."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery

    settled = control_requests.settle_by_recovery(store, record.deployment_id,
                                                  rollback_hint=recovery.inplace_rollback_command(record))
    for request in settled:
        say(f"recover {record.deployment_id}: request {control_requests.describe(request)} {request.state} - "
            f"{request.message}")
    return [r.to_dict() for r in settled]


def _recover_inplace(store: RecordStore, clients: Any, record: DeploymentRecord, lock: Any, force: bool,
                     check_mode: bool, override: Optional[dict], healthy_timeout: float, say: Progress) -> dict:
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers import load_balancer_from_config

    # the load balancer given overrides what the deployment recorded at its start; the recorded
    # memberships are checked against the configuration used
    lb_config = recovery.load_balancer_config(record, override)
    plan = recovery.plan_recovery(record, lock, force=force, lb_config=lb_config)
    out: dict = {"plan": plan.to_dict()}
    if plan.refused:
        raise recovery.RecoveryError(plan.refused)
    if not plan.needs_action:
        settled = [] if check_mode else _settle(store, record, say)
        out.update(changed=bool(settled), report={"requests": settled} if settled else None,
                   message=f"{record.deployment_id} ({record.status}): nothing to do, every host it took out "
                           "of a load balancer is back (or its install failed) and the lock is free"
                           + (f"; left out: {', '.join(sorted(plan.left_out))}" if plan.left_out else ""))
        return out
    if check_mode:
        restore = "; ".join(f"{host} into {len(ms)} recorded membership(s)" for host, ms in sorted(plan.restore.items()))
        out.update(changed=True, report=None, message=(
            f"DRY RUN - {record.deployment_id} ({record.status}): would restore {restore or 'no host'}"
            + (f"; leave out (install failed): {', '.join(sorted(plan.left_out))}" if plan.left_out else "")
            + (", mark it Stopped" if plan.mark_stopped else "") + ", release the group's lock. Nothing was changed"))
        return out
    lb = load_balancer_from_config(lb_config, clients) if plan.restore else None
    report = recovery.recover(store, lb, record, plan, healthy_timeout=healthy_timeout, progress=say)
    report["requests"] = _settle(store, record, say)
    out.update(changed=report["changed"], report=report,
               message=(f"{record.deployment_id}: restored {', '.join(report['restored']) or 'no host'}; "
                        + (f"left out (install failed): {', '.join(sorted(report['left_out']))}; "
                           if report["left_out"] else "")
                        + (f"not healthy yet: {report['unhealthy']}; " if report["unhealthy"] else "")
                        + f"status {report['status']}; lock {'released' if report['lock_released'] else 'free'}"))
    return out


def _recover_bluegreen(store: RecordStore, clients: Any, record: DeploymentRecord, lock: Any, force: bool,
                       check_mode: bool, say: Progress) -> dict:
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.bluegreen import stop_requested

    plan = recovery.bluegreen_plan(record, lock, force=force, stop_requested=stop_requested(store, record.deployment_id))
    out: dict = {"plan": plan}
    if plan["refused"]:
        raise recovery.RecoveryError(plan["refused"])
    what = {"rolled_back": "roll back (originals back in service, replacement fleet torn down, status Failed; "
                           "Stopped when a stop was asked or it waited for approval)",
            "retired": "finish retiring the original fleet (status Succeeded)",
            "none": "nothing (it finished)"}[plan["action"]]
    if not plan["needs_action"]:
        out.update(changed=False, report=None,
                   message=f"{record.deployment_id} (blue/green, {record.status}, phase {plan['phase']}): "
                           "nothing to do, it finished and the lock is free")
        return out
    if check_mode:
        out.update(changed=True, report=None,
                   message=f"DRY RUN - {record.deployment_id} (blue/green, phase {plan['phase']}): would {what}. "
                           "Nothing was changed")
        return out
    report = recovery.recover_bluegreen(store, clients, record, plan, progress=say)
    done = {"rolled_back": "rolled back (originals serve, replacement fleet torn down)",
            "retired": "original fleet retired", "none": "nothing to undo"}[report["action"]]
    out.update(changed=report["changed"], report=report,
               message=(f"{record.deployment_id} (blue/green, phase {report.get('phase_before')}): {done}; "
                        f"status {report['status']}; lock {'released' if report['lock_released'] else 'free'}"))
    return out


def recover_lambda(store: RecordStore, application: str, deployment_group: str, put_back: Callable[[Optional[str]], dict],
                   *, force: bool = False, current_version: Optional[str] = None, function_name: str = "") -> dict:
    """Recover a Lambda deployment whose controller died mid-shift: the alias back on the interrupted
    deployment's recorded current version (``put_back(version)``: the Lambda engine's ``recover``),
    its record Stopped with the recovery in ``extra.recovery``, its lock released.

    Refused while the group's lock is held, unless ``force``: nothing can tell from here whether its
    controller still runs (the lease keeper marks a dead one's record Stopped, and leaves the lock)."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery

    info = store.get_lock(application, deployment_group)
    if info is not None and not force:
        raise recovery.RecoveryError(
            f"deployment group {application}/{deployment_group} is locked by deployment {info.deployment_id} (started by "
            f"{info.owner} at {info.acquired_at}, last heartbeat {int(info.heartbeat_age)} s ago, "
            f"{'stale' if info.stale else 'not stale yet'}). If its controller is gone, run the recovery again with "
            "-e rollwright_force_lock=true: the alias goes back to that deployment's current version, the deployment "
            "is marked Stopped and the lock released.")
    held = None
    if info is not None:
        try:
            held = store.get(info.deployment_id)
        except RecordNotFound:  # the controller may have died between taking the lock and creating the record
            held = None
    version = current_version or ((held.revision or {}).get("current_version") if held else None) or None
    result = put_back(None if version is None else str(version))
    if held is not None and (held.status not in TERMINAL_STATUSES or lease.awaiting_recovery(held)):
        store.set_extra(held.deployment_id, "recovery", {
            "alias_before": result.get("before"), "alias_after": result.get("final_alias"),
            "changed": result.get("changed"), "lock": info.to_dict() if info else None})
        store.update_host(held.deployment_id, (held.revision or {}).get("function") or function_name, status="Failed")
        if held.status not in TERMINAL_STATUSES:
            store.update_status(held.deployment_id, "Stopped", error=(
                f"recovered after its controller was lost mid-deployment: {result.get('msg')} (lock held by "
                f"{info.owner} since {info.acquired_at})"))
    if info is not None:
        store.break_lock(application, deployment_group, info.deployment_id, live=True)
    result["recovered_deployment_id"] = info.deployment_id if info else None
    result["recovered_record"] = held.deployment_id if held else None
    return result
