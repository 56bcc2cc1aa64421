# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The record of a Lambda deployment, written through the deployment session while the shift runs.

The function is the record's one host; its lifecycle events are BeforeAllowTraffic, AllowTraffic and
AfterAllowTraffic. :class:`LambdaRecorder` appends them as the engine reports them (hook started and
ended, traffic steps, promote), so that the record shows the shift live; when the shift returns,
:func:`final_events` works out each event from the engine's result (hook results, steps, alarm reads
and rollback carry the real times) and the record gets them with the outcome.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.session import DeploymentSession
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import (
    DeploymentRecord,
    EventRecord,
    HostRecord,
)

LAMBDA_EVENTS = ("BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic")
RECORD_STATUS = {"Succeeded": "Succeeded", "Unchanged": "Succeeded", "Stopped": "Stopped"}
_MILLIS_RE = re.compile(r"\.(\d{3})Z$")


def record_time(value: Optional[str]) -> Optional[str]:
    """The engine's millisecond UTC time in the record's canonical form (microseconds)."""
    return _MILLIS_RE.sub(r".\g<1>000Z", value) if value else None


def record_status(result: dict) -> str:
    """The record's final status for an engine result (a failed task without a status is Failed)."""
    return RECORD_STATUS.get(result.get("status") or "Failed", "Failed")


def new_record(plan: dict, options: dict, application: str, deployment_group: str, lock_ttl: float) -> DeploymentRecord:
    """The record of a planned Lambda deployment (``plan``: the engine's check-mode result)."""
    revision = {"function": plan["function_name"], "alias": plan["alias"], "current_version": plan["current_version"],
                "target_version": plan["target_version"], "publish": bool(options.get("publish"))}
    if plan.get("code_sha256"):
        revision["code_sha256"] = plan["code_sha256"]
    return DeploymentRecord(
        application=application, deployment_group=deployment_group, deployment_type="lambda",
        deployment_id=plan["deployment_id"], revision=revision,
        configuration=options.get("deployment_config") or "CodeDeployDefault.LambdaAllAtOnce",
        hosts=[HostRecord(name=plan["function_name"], status="InProgress",
                          events=[EventRecord(name=name) for name in LAMBDA_EVENTS])],
        extra={"steps_planned": plan["planned_steps"], "deployment_config": plan["deployment_config"],
               "lock_ttl": lock_ttl})


class LambdaRecorder:
    """Appends the function's lifecycle events to the record as the engine reports them."""

    def __init__(self, session: DeploymentSession, function_name: str):
        self.session = session
        self.function = function_name

    def __call__(self, event: dict) -> None:
        kind, at = event.get("event"), record_time(event.get("time"))
        if kind == "hook" and event.get("lifecycle_event") in LAMBDA_EVENTS:
            name = event["lifecycle_event"]
            if event.get("status") is None:
                self.session.event(self.function, name, "InProgress", start=at,
                                   message=f"hook {event.get('function_name')} invoked")
            else:
                status = event["status"] if event["status"] in ("Succeeded", "Failed") else "Failed"
                self.session.event(self.function, name, status, end=at,
                                   message=f"hook {event.get('function_name')} {event['status']}")
        elif kind == "allow_traffic":
            self.session.event(self.function, "AllowTraffic", "InProgress", start=at, message=event.get("message"))
        elif kind == "step":
            step = event.get("step") or {}
            promoted = bool(step.get("promote"))
            self.session.event(self.function, "AllowTraffic", "Succeeded" if promoted else "InProgress",
                               end=at if promoted else None, message=event.get("message"))


def _hook_text(hook: dict) -> str:
    return (f"hook {hook.get('function_name')} {hook.get('status')}" + (f" ({hook['error']})" if hook.get("error") else "")
            + (f"; payload: {hook['payload']}" if hook.get("payload") else ""))


def _alarm_text(events: list) -> str:
    parts = []
    for alarm in events:
        if alarm.get("alarm"):
            parts.append(f"alarm {alarm['alarm']} in {alarm.get('state')} at {alarm.get('time')}"
                         + (f" ({alarm['reason']})" if alarm.get("reason") else ""))
        else:
            parts.append(f"cannot read the alarms at {alarm.get('time')}: {alarm.get('error')}"
                         + (" (ignored)" if alarm.get("ignored") else ""))
    return "; ".join(parts)


def _event(name: str, status: str, start: Optional[str], end: Optional[str], message: str) -> EventRecord:
    return EventRecord(name=name, status=status, start_time=record_time(start), end_time=record_time(end),
                       message=message)


def final_events(result: dict) -> list:
    """The three lifecycle events of a finished shift, worked out from the engine's ``result``."""
    hooks = result.get("hooks") or []
    before = [h for h in hooks if h.get("lifecycle_event") == "BeforeAllowTraffic"]
    return [_before_event(result, before[0] if before else None), _allow_event(result),
            _after_event(result, next((h for h in hooks if h.get("lifecycle_event") == "AfterAllowTraffic"), None))]


def _before_event(result: dict, hook: Optional[dict]) -> EventRecord:
    if hook is not None:
        status = hook.get("status") if hook.get("status") in ("Succeeded", "Failed") else "Failed"
        return _event("BeforeAllowTraffic", status, hook.get("start_time"), hook.get("end_time"), _hook_text(hook))
    if "allow_traffic_start" in result:
        return _event("BeforeAllowTraffic", "Succeeded", result["allow_traffic_start"], result["allow_traffic_start"],
                      "no BeforeAllowTraffic hook")
    return _event("BeforeAllowTraffic", "Skipped", None, None,
                  f"not run: {result.get('msg', 'the deployment ended before it')}")


def _allow_event(result: dict) -> EventRecord:
    """AllowTraffic: the steps, planned vs actual, and what stopped the shift."""
    if "allow_traffic_start" not in result:
        return _event("AllowTraffic", "Skipped", None, None, "no traffic was moved" if "status" in result
                      else f"not recorded: {result.get('msg', 'the task failed')}")
    steps = result.get("steps") or []
    rollback = result.get("rollback")
    promoted = any(s.get("promote") for s in steps)
    parts = [f"step {index} at +{s.get('actual_seconds')}s (planned +{s.get('planned_seconds')}s): "
             + ("promoted" if s.get("promote") else f"{round(s.get('weight') * 100, 1)}%")
             for index, s in enumerate(steps, start=1)]
    shift_alarms = [a for a in result.get("alarm_events") or [] if a.get("phase") == "AllowTraffic"]
    if shift_alarms:
        parts.append(_alarm_text(shift_alarms))
    if rollback and not promoted:
        parts.append(f"rolled back to version {rollback.get('version')}: {rollback.get('reason')}")
    end = steps[-1].get("time") if promoted else (rollback.get("time") if rollback else result.get("end_time"))
    return _event("AllowTraffic", "Succeeded" if promoted else "Failed", result["allow_traffic_start"], end,
                  "; ".join(parts) or "no step ran")


def _after_event(result: dict, hook: Optional[dict]) -> EventRecord:
    """AfterAllowTraffic: the hook, the alarms read after it, and the rollback they caused."""
    steps = result.get("steps") or []
    if not any(s.get("promote") for s in steps):
        return _event("AfterAllowTraffic", "Skipped", None, None, "not run: the target version was never promoted")
    rollback = result.get("rollback")
    late = [a for a in result.get("alarm_events") or [] if a.get("phase") not in ("AllowTraffic", "before start")]
    parts = [_hook_text(hook) if hook else "no AfterAllowTraffic hook"]
    if late:
        parts.append(_alarm_text(late))
    if rollback:
        parts.append(f"rolled back to version {rollback.get('version')}: {rollback.get('reason')}")
    ok = result.get("status", "Failed") in ("Succeeded", "Unchanged") and not rollback
    end = rollback.get("time") if rollback else (hook.get("end_time") if hook else result.get("end_time"))
    return _event("AfterAllowTraffic", "Succeeded" if ok else "Failed",
                  hook.get("start_time") if hook else steps[-1].get("time"), end, "; ".join(parts))


def close(session: DeploymentSession, result: dict, plan: dict) -> str:
    """Record the events, the steps planned and actual, hooks, alarms and the final alias, then end the
    session with the deployment's status (lock released, lease keeper stopped). Returns that status."""
    status = record_status(result)
    function = plan["function_name"]
    session.store.set_hosts(session.deployment_id, [HostRecord(
        name=function, status="Succeeded" if status == "Succeeded" else "Failed", events=final_events(result))])
    extra: dict[str, Any] = {
        "steps_planned": result.get("planned_steps", plan.get("planned_steps")),
        "steps_actual": result.get("steps") or [],
        "hooks": result.get("hooks") or [],
        "alarm_events": result.get("alarm_events") or [],
        "lambda": {key: result.get(key) for key in ("current_version", "target_version", "published_version",
                                                    "code_sha256", "initial_alias", "final_alias", "rollback")},
    }
    extra["lambda"]["rolled_back"] = bool(result.get("rolled_back"))
    if result.get("status") == "Unchanged":
        extra["note"] = "the alias was already on the target version when the shift started; nothing changed"
    for key, value in extra.items():
        session.set_extra(key, value)
    session.end(status, error=None if status == "Succeeded" else result.get("msg", "the shift task failed"),
                note=f"the shift ended ({result.get('status')}) before it was seen")
    return status
