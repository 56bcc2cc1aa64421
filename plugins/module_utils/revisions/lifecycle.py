# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CodeDeploy lifecycle events: their order per deployment type and the previous-revision rule.

Pure and stdlib-only: imported by the controller (to plan module calls) and by the host modules
(to validate the events they are asked to run).
"""

from __future__ import annotations
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

# The nine events an appspec may attach scripts to.
SCRIPTABLE_EVENTS = (
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "BeforeInstall",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
)

# Events done by the engine itself; an appspec may not attach scripts to them.
RESERVED_EVENTS = ("BlockTraffic", "DownloadBundle", "Install", "AllowTraffic")

# Reserved events done on the controller (load balancer calls) and on the host.
CONTROLLER_EVENTS = frozenset({"BlockTraffic", "AllowTraffic"})
HOST_RESERVED_EVENTS = frozenset({"DownloadBundle", "Install"})

# Events that run the scripts of the LAST SUCCESSFUL revision on the host (the new bundle is not
# there yet); skipped on a host's first deployment.
PREVIOUS_REVISION_EVENTS = ("BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop")

TRAFFIC_EVENTS = (
    "BeforeBlockTraffic",
    "BlockTraffic",
    "AfterBlockTraffic",
    "BeforeAllowTraffic",
    "AllowTraffic",
    "AfterAllowTraffic",
)

# In-place with a load balancer: the full order, which every other host order is a slice of.
INPLACE_WITH_LB = (
    "BeforeBlockTraffic",
    "BlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AllowTraffic",
    "AfterAllowTraffic",
)
ALL_EVENTS = INPLACE_WITH_LB

# In-place without a load balancer: the six traffic events are skipped.
INPLACE_WITHOUT_LB = tuple(e for e in INPLACE_WITH_LB if e not in TRAFFIC_EVENTS)

# EC2 blue/green: replacement instances install and take traffic (the in-place order from ApplicationStop on);
# originals only give it up.
BLUEGREEN_REPLACEMENT = INPLACE_WITH_LB[INPLACE_WITH_LB.index("ApplicationStop"):]
BLUEGREEN_ORIGINAL = ("BeforeBlockTraffic", "BlockTraffic", "AfterBlockTraffic")

# Lambda: hooks are functions, each run once per deployment.
LAMBDA_EVENTS = ("BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic")

# The event orders events_for() knows (not the record's deployment_type: records/base.py has those).
EVENT_ORDER_KINDS = ("inplace", "bluegreen_replacement", "bluegreen_original", "lambda")


class LifecycleError(RollwrightError, ValueError):
    """A requested list of lifecycle events is not valid."""


def inplace_events(with_load_balancer: bool) -> list[str]:
    """The in-place event order, with or without the six traffic events."""
    return list(INPLACE_WITH_LB if with_load_balancer else INPLACE_WITHOUT_LB)


def events_for(deployment_type: str, with_load_balancer: bool = True) -> list[str]:
    """The event order of one deployment type (see EVENT_ORDER_KINDS)."""
    if deployment_type == "inplace":
        return inplace_events(with_load_balancer)
    if deployment_type == "bluegreen_replacement":
        return list(BLUEGREEN_REPLACEMENT)
    if deployment_type == "bluegreen_original":
        return list(BLUEGREEN_ORIGINAL)
    if deployment_type == "lambda":
        return list(LAMBDA_EVENTS)
    raise LifecycleError(f"deployment type must be one of {', '.join(EVENT_ORDER_KINDS)}, got {deployment_type!r}")


def is_scriptable(event: str) -> bool:
    return event in SCRIPTABLE_EVENTS


def is_reserved(event: str) -> bool:
    return event in RESERVED_EVENTS


def uses_previous_revision(event: str) -> bool:
    """True for the events that run the last successful revision's scripts."""
    return event in PREVIOUS_REVISION_EVENTS


def validate_events(events, order=INPLACE_WITH_LB, allow_controller_events: bool = True) -> list[str]:
    """Check that ``events`` is a non-empty, contiguous, ordered slice of ``order``.

    Returns the events as a list; raises LifecycleError naming the offending event otherwise.
    """
    events = list(events or [])
    order = list(order)
    if not events:
        raise LifecycleError("events must list at least one lifecycle event")
    for name in events:
        if name not in ALL_EVENTS:
            raise LifecycleError(f"unknown lifecycle event {name!r}; expected one of: {', '.join(ALL_EVENTS)}")
        if name not in order:
            raise LifecycleError(f"lifecycle event {name!r} is not part of this deployment's order: {' -> '.join(order)}")
        if not allow_controller_events and name in CONTROLLER_EVENTS:
            raise LifecycleError(
                f"lifecycle event {name!r} is done on the controller (load balancer), not on the host; "
                "split the events around it (lifecycle.split_host_calls)"
            )
    if len(set(events)) != len(events):
        dup = next(e for e in events if events.count(e) > 1)
        raise LifecycleError(f"lifecycle event {dup!r} is listed more than once")
    start = order.index(events[0])
    expected = order[start:start + len(events)]
    if events != expected:
        for got, want in zip(events, expected):
            if got != want:
                raise LifecycleError(
                    f"events must be contiguous and in lifecycle order: after {order[order.index(want) - 1]!r} "
                    f"comes {want!r}, got {got!r} (order: {' -> '.join(order)})"
                )
        raise LifecycleError(f"events must be contiguous and in lifecycle order ({' -> '.join(order)})")
    return events


def split_host_calls(events, controller_events=CONTROLLER_EVENTS) -> list[list[str]]:
    """Group consecutive host-side events so the controller makes one module call per group.

    ``["BeforeBlockTraffic", "BlockTraffic", "AfterBlockTraffic", "ApplicationStop"]`` ->
    ``[["BeforeBlockTraffic"], ["AfterBlockTraffic", "ApplicationStop"]]``.
    """
    groups: list[list[str]] = []
    current: list[str] = []
    for name in events:
        if name in controller_events:
            if current:
                groups.append(current)
            current = []
        else:
            current.append(name)
    if current:
        groups.append(current)
    return groups


def plan_steps(events, controller_events=CONTROLLER_EVENTS) -> list[tuple[str, list[str]]]:
    """The events as alternating steps: ``("host", [events...])`` and ``("controller", [event])``."""
    steps: list[tuple[str, list[str]]] = []
    for name in events:
        kind = "controller" if name in controller_events else "host"
        if kind == "host" and steps and steps[-1][0] == "host":
            steps[-1][1].append(name)
        else:
            steps.append((kind, [name]))
    return steps
