# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Requests that control a running deployment: stop (optionally with rollback), promote, pause, resume.

A requester (``rollwright.deploy.deployment_control``) writes a Pending request next to the deployment
record (its own row/item, ``RecordStore.add_request``). The running controller reads them at its safe
points (:func:`take`): it acknowledges each one (a conditional move Pending -> Acknowledged, so a
request is handled once even when ``recover`` looks at the same time), folds them into one
:class:`Decision`, acts, then marks them Done (:func:`complete`) or Refused. A pause holds in
:func:`hold`, renewing the lock, until a resume, a stop, a promote or its maximum pause.

Who wins when several are open: stop, then promote, then pause; a resume ends the pause before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import (
    REQUEST_ACTIONS,
    TERMINAL_STATUSES,
    ControlRequest,
    DeploymentRecord,
    RecordError,
    RecordStore,
    RequestConflict,
    check_deployment_id,
)

# What each deployment type honours. Extended, never narrowed, by the engines that learn more.
APPLICABLE = {
    "in_place": ("stop", "pause", "resume"),
    "lambda": ("stop", "promote", "pause", "resume"),
    "blue_green_ec2": ("stop", "promote"),
}
DEFAULT_MAX_PAUSE = 3600.0
MAX_MAX_PAUSE = 7 * 24 * 3600.0
HOLD_POLL_SECONDS = 1.0

Progress = Callable[[str], None]


class RequestRefused(RecordError):
    """The request does not apply to this deployment now (ended, wrong type, not paused, ...)."""


@dataclass
class Decision:
    """What a safe point must do. ``action`` is "stop", "promote", "pause" or None (go on)."""

    action: Optional[str] = None
    rollback: bool = False  # stop: also redeploy the last successful revision (in-place) / nothing more (Lambda)
    max_pause: float = DEFAULT_MAX_PAUSE
    reason: str = ""
    requests: list = field(default_factory=list)  # the Acknowledged requests this decision answers
    pause: Optional[ControlRequest] = None  # the pause being held
    held_seconds: float = 0.0  # how long SafePoint.check held a pause before this decision

    def to_dict(self) -> dict:
        return {"action": self.action, "rollback": self.rollback, "max_pause": self.max_pause, "reason": self.reason,
                "requests": [r.request_id for r in self.requests]}


# ------------------------------------------------------------------------------ requester side

def describe(request: ControlRequest) -> str:
    """``stop (with rollback) r-... by alice@ctl pid 42``."""
    extra = ""
    if request.action == "stop" and request.options.get("rollback"):
        extra = " (with rollback)"
    elif request.action == "pause":
        extra = f" (at most {int(request.options.get('max_pause') or DEFAULT_MAX_PAUSE)} s)"
    return f"{request.action}{extra} {request.request_id} by {request.requested_by}"


def active_pause(requests: Iterable[ControlRequest]) -> Optional[ControlRequest]:
    """The open pause request not yet ended by a later resume, stop or promote (None when not paused)."""
    current = None
    for request in requests:
        if not request.open:
            continue
        if request.action == "pause":
            current = current or request
        elif request.action in ("resume", "stop", "promote"):
            current = None
    return current


def check_max_pause(value) -> float:
    if value is None or value == "":
        return DEFAULT_MAX_PAUSE
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds <= MAX_MAX_PAUSE:
        raise RequestRefused(f"max_pause: expected seconds between 1 and {int(MAX_MAX_PAUSE)}, got {value!r}")
    return seconds


def plan_request(record: DeploymentRecord, requests: list, action: str, rollback: bool = False,
                 max_pause=None) -> ControlRequest:
    """The request to write, or RequestRefused naming why it does not apply (reads only)."""
    if action not in REQUEST_ACTIONS:
        raise RequestRefused(f"action: expected one of {', '.join(REQUEST_ACTIONS)}, got {action!r}")
    did = record.deployment_id
    if lease.awaiting_recovery(record):  # "nothing to do" would be wrong: recovery still has to run
        raise RequestRefused(f"{action}: deployment {did} was marked Stopped when its controller died; "
                             f"{lease.recovery_hint(record)} (that closes the requests still open)")
    if record.status in TERMINAL_STATUSES:
        raise RequestRefused(f"{action}: deployment {did} already ended as {record.status}; nothing to {action}")
    applicable = APPLICABLE.get(record.deployment_type, ())
    if action not in applicable:
        raise RequestRefused(f"{action}: does not apply to a {record.deployment_type} deployment ({did}); "
                             f"it takes {', '.join(applicable)}")
    if rollback and action != "stop":
        raise RequestRefused(f"rollback: only a stop takes rollback=true, not a {action}")
    open_requests = [r for r in requests if r.open]
    if any(r.action == "stop" for r in open_requests):
        raise RequestRefused(f"{action}: deployment {did} already has a stop pending "
                             f"({describe(next(r for r in open_requests if r.action == 'stop'))})")
    paused = active_pause(requests)
    if action == "resume" and paused is None:
        raise RequestRefused(f"resume: deployment {did} is not paused (no pause request is open)")
    if action == "pause" and paused is not None:
        raise RequestRefused(f"pause: deployment {did} is already paused or about to be ({describe(paused)})")
    options: dict = {}
    if action == "stop":
        options["rollback"] = bool(rollback)
    if action == "pause":
        options["max_pause"] = check_max_pause(max_pause)
    return ControlRequest(action=action, options=options)


def submit(store: RecordStore, deployment_id: str, action: str, *, rollback: bool = False, max_pause=None,
           requested_by: Optional[str] = None, check_mode: bool = False) -> ControlRequest:
    """Check that ``action`` applies to the deployment now and write it as a Pending request.
    In check mode nothing is written and the planned request (without id) is returned."""
    check_deployment_id(deployment_id)
    record = store.get(deployment_id)
    request = plan_request(record, store.list_requests(deployment_id), action, rollback, max_pause)
    if rollback and record.deployment_type == "in_place" and \
            store.last_successful(record.application, record.deployment_group) is None:
        raise RequestRefused(f"rollback: {record.application}/{record.deployment_group} has no successful deployment "
                             f"to roll back to; stop {deployment_id} without rollback")
    request.requested_by = requested_by or store.lock_owner()
    if check_mode:
        return request
    return store.add_request(deployment_id, request)


def find_deployment(store: RecordStore, deployment_id: Optional[str] = None, application: Optional[str] = None,
                    deployment_group: Optional[str] = None) -> DeploymentRecord:
    """The deployment named by id, or the running deployment of application + group (the one holding the
    group's lock, else the newest not ended)."""
    if deployment_id:
        return store.get(check_deployment_id(deployment_id))
    if not application:
        raise RequestRefused("deployment_id: name the deployment by deployment_id, or by application "
                             "(and deployment_group, default the application)")
    group = deployment_group or application
    lock = store.get_lock(application, group)
    if lock is not None:
        return store.get(lock.deployment_id)
    for record in store.list(application, group, limit=20):
        if record.status not in TERMINAL_STATUSES:
            return store.get(record.deployment_id)
    raise RequestRefused(f"deployment_group: {application}/{group} has no running deployment (no lock held, "
                         "none in progress); name one by deployment_id to see why a request does not apply")


# ------------------------------------------------------------------------------ controller side

def _move(store: RecordStore, deployment_id: str, request: ControlRequest, state: str, expected: tuple,
          message: Optional[str], handled_by: str) -> Optional[ControlRequest]:
    try:
        return store.update_request(deployment_id, request.request_id, state, expected, message=message,
                                    handled_by=handled_by)
    except RequestConflict:
        return None  # another process (recover, another step) moved it first: theirs to finish


def take(store: RecordStore, deployment_id: str, *, allowed: Iterable[str], progress: Optional[Progress] = None,
         handled_by: str = "controller", held: Optional[ControlRequest] = None) -> Decision:
    """At a safe point: acknowledge the Pending requests (each seen once, a progress line each), refuse
    those this point cannot honour, and fold the open ones into a :class:`Decision`.

    ``held`` is the pause being held (from :func:`hold`): a resume then ends it."""
    say = progress or (lambda message: None)
    allowed = tuple(allowed)
    requests = store.list_requests(deployment_id)
    mine: list = []
    for request in requests:
        if request.state == "Pending":
            if request.action not in allowed and request.action != "resume":
                _move(store, deployment_id, request, "Refused", ("Pending",),
                      f"{request.action} does not apply at this point of the deployment", handled_by)
                say(f"deployment {deployment_id}: request {describe(request)} refused: does not apply here")
                continue
            moved = _move(store, deployment_id, request, "Acknowledged", ("Pending",), None, handled_by)
            if moved is None:
                continue
            say(f"deployment {deployment_id}: request {describe(moved)} seen")
            mine.append(moved)
        elif request.state == "Acknowledged":
            mine.append(request)
    decision = Decision()
    pause = held
    for request in mine:
        if request.action == "stop":
            decision.action = "stop"
            decision.rollback = decision.rollback or bool(request.options.get("rollback"))
            decision.requests.append(request)
        elif request.action == "promote" and decision.action != "stop":
            decision.action = "promote"
            decision.requests.append(request)
        elif request.action == "pause":
            if pause is None or pause.request_id == request.request_id:
                pause = request
            else:  # a second pause while one is held: nothing more to do
                complete(store, deployment_id, [request], f"already paused by {pause.request_id}", handled_by)
        elif request.action == "resume":
            if pause is not None:
                complete(store, deployment_id, [pause], f"resumed by {request.request_id}", handled_by)
                complete(store, deployment_id, [request], f"resumed {pause.request_id}", handled_by)
                say(f"deployment {deployment_id}: resumed ({describe(request)})")
                pause = None
            else:
                _move(store, deployment_id, request, "Refused", ("Pending", "Acknowledged"),
                      "the deployment was not paused", handled_by)
    if decision.action is None and pause is not None:
        decision.action = "pause"
        decision.max_pause = float(pause.options.get("max_pause") or DEFAULT_MAX_PAUSE)
    decision.pause = pause
    if decision.action == "stop":
        decision.reason = "stopped on request (" + ", ".join(describe(r) for r in decision.requests) + ")"
    elif decision.action == "promote":
        decision.reason = "promoted on request (" + ", ".join(describe(r) for r in decision.requests) + ")"
    elif decision.action == "pause":
        decision.reason = f"paused on request ({describe(pause)})"
    return decision


def complete(store: RecordStore, deployment_id: str, requests: Iterable[ControlRequest], message: str,
             handled_by: str = "controller", state: str = "Done") -> None:
    """Mark requests Done (or Refused) once their effect is done; a request already ended stays as it is."""
    for request in requests:
        _move(store, deployment_id, request, state, ("Pending", "Acknowledged"), message, handled_by)


def close_open(store: RecordStore, deployment_id: str, message: str, handled_by: str = "controller") -> None:
    """When the deployment has ended: refuse the requests still open (they came too late to act on)."""
    complete(store, deployment_id, [r for r in store.list_requests(deployment_id) if r.open], message, handled_by,
             state="Refused")


def settle_by_recovery(store: RecordStore, deployment_id: str, rollback_hint: str = "",
                       promote_outcome: str = "the deployment was rolled back instead") -> list:
    """``recover`` of a deployment whose controller is gone: close its open requests, as recovery did them.

    stop - Done: recovery is the stop (hosts back in their load balancers / alias back, status Stopped); a stop
    with rollback is Done with ``rollback_hint`` (the command that redeploys the last successful revision:
    recovery has no connection to the hosts). pause, resume - Done (nothing holds any more). promote - Refused:
    the rest of the shift and its AfterAllowTraffic hook need the controller (``promote_outcome`` says what
    happened instead). Returns the requests as closed."""
    closed = []
    for request in store.list_requests(deployment_id):
        if not request.open:
            continue
        if request.action == "promote":
            state, message = "Refused", f"the controller was gone before the promote; {promote_outcome}"
        elif request.action == "stop":
            state, message = "Done", "carried out by recovery: status Stopped"
            if request.options.get("rollback"):
                message += "; the rollback was not run by recovery" + (f": {rollback_hint}" if rollback_hint else "")
        else:
            state, message = "Done", "the controller was gone; recovery ended the deployment as Stopped"
        moved = _move(store, deployment_id, request, state, ("Pending", "Acknowledged"), message, "recover")
        if moved is not None:
            closed.append(moved)
    return closed


def end_paused(store: RecordStore, deployment_id: str, decision: Decision, message: str,
               handled_by: str = "controller") -> None:
    """Close the held pause (if any) when a stop or a promote ends it."""
    if decision.pause is not None:
        complete(store, deployment_id, [decision.pause], message, handled_by)


def hold(store: RecordStore, deployment_id: str, decision: Decision, *, allowed: Iterable[str],
         heartbeat: Callable[[], None], progress: Optional[Progress] = None, poll: float = HOLD_POLL_SECONDS,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Decision:
    """Hold a pause: renew the lock (``heartbeat``, which also raises when the lock is lost) every ``poll``
    seconds and read the requests, until a resume (returns a Decision with action None), a stop or a
    promote (that Decision), or the maximum pause (a stop decision). The pause request is closed."""
    say = progress or (lambda message: None)
    pause = decision.pause
    limit = decision.max_pause
    started = clock()
    say(f"deployment {deployment_id}: paused; resume with rollwright.deploy.control "
        f"(stops by itself after {int(limit)} s)")
    while True:
        heartbeat()
        current = take(store, deployment_id, allowed=allowed, progress=progress, held=pause)
        if current.action != "pause":
            end_paused(store, deployment_id, current, f"ended by {current.action}" if current.action else "resumed")
            return current
        if clock() - started >= limit:
            message = f"maximum pause of {int(limit)} s reached"
            complete(store, deployment_id, [pause], message + "; stopped")
            say(f"deployment {deployment_id}: {message}; stopping")
            return Decision(action="stop", reason=f"stopped: {message} ({describe(pause)})")
        sleep(max(0.05, min(poll, limit - (clock() - started))))


class SafePoint:
    """One engine's safe point: :func:`take`, holding a pause with :func:`hold`, at most every ``min_interval``
    seconds (a wait loop may call it often). Engines that know no store get one of these, or None."""

    def __init__(self, store: RecordStore, deployment_id: str, allowed: Iterable[str], heartbeat: Callable[[], None],
                 progress: Optional[Progress] = None, min_interval: float = 0.5, poll: float = HOLD_POLL_SECONDS,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 guard: Optional[Callable[[], None]] = None):
        self.store, self.deployment_id, self.allowed = store, deployment_id, tuple(allowed)
        # guard() raises once the controller died: an orphaned worker must not act on requests (recovery does)
        self.guard = guard or (lambda: None)
        self.heartbeat, self.progress, self.min_interval, self.poll = heartbeat, progress, min_interval, poll
        self.clock, self.sleep = clock, sleep
        self._last: Optional[float] = None

    def check(self, force: bool = False) -> Decision:
        """The decision now (action None: go on). A pause is held here; ``held_seconds`` says how long."""
        now = self.clock()
        if not force and self._last is not None and now - self._last < self.min_interval:
            return Decision()
        self.guard()
        self._last = now
        decision = take(self.store, self.deployment_id, allowed=self.allowed, progress=self.progress)
        if decision.action == "pause":
            started = self.clock()
            decision = hold(self.store, self.deployment_id, decision, allowed=self.allowed, heartbeat=self.heartbeat,
                            progress=self.progress, poll=self.poll, clock=self.clock, sleep=self.sleep)
            decision.held_seconds = self.clock() - started
            self._last = self.clock()
        return decision

    def done(self, decision: Decision, message: str) -> None:
        complete(self.store, self.deployment_id, decision.requests, message)


def status(store: RecordStore, record: DeploymentRecord) -> dict:
    """What ``deployment_info`` shows: open requests, whether paused, and whether the controller is alive
    (the group's lock is held by this deployment and its lease is not stale)."""
    requests = store.list_requests(record.deployment_id)
    lock = store.get_lock(record.application, record.deployment_group)
    holds = lock is not None and lock.deployment_id == record.deployment_id
    pause = active_pause(requests)
    # late import: bluegreen builds on this module. A split-form blue/green deployment waiting for approval
    # holds a fresh lease with no process behind it, so its lease alone does not mean a live controller.
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import bluegreen
    awaiting = bool(holds and bluegreen.handed_over(record, lock))
    return {
        "requests": [r.to_dict() for r in requests],
        "pending_requests": [r.to_dict() for r in requests if r.open],
        "paused": bool(pause is not None and pause.state == "Acknowledged"),
        "controller_alive": bool(holds and not lock.stale and not awaiting),
        "awaiting_approval": awaiting,
        "lease": None if not holds else {"owner": lock.owner, "heartbeat_age": round(lock.heartbeat_age, 3),
                                         "ttl": lock.ttl, "stale": lock.stale},
    }
