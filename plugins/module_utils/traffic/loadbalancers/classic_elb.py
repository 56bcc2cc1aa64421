# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Classic ELBs behind the load-balancer interface.

API budget: DescribeLoadBalancers once for all configured ELBs per validation / snapshot,
DescribeInstanceHealth once per ELB per poll, DescribeLoadBalancerAttributes once per ELB
(cached, for connection draining), Register/DeregisterInstances once per ELB per batch, and one
RegisterInstancesWithLoadBalancer per ELB at the start of a deployment (the preflight).

Deregistration from a classic ELB is immediate unless connection draining is enabled; then AWS
keeps the instance ``InService`` ("Instance deregistration currently in progress") for up to
``ConnectionDraining.Timeout`` seconds. wait_drained waits for that, or until the instance is
out of service / no longer listed.
"""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import aws_error_code

from .base import (
    DRAINING,
    HEALTHY,
    INITIAL,
    UNHEALTHY,
    UNKNOWN,
    UNUSED,
    Adapter,
    Backoff,
    ClassicELBMembership,
    Clock,
    ConfigError,
    Membership,
    NotFoundError,
    Progress,
    WaitResult,
    count_by_state,
    derived_timeout,
    group_memberships,
    worst_health,
)

ELB_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
DESCRIBE_CHUNK = 20
# AWS defaults for a classic ELB health check
DEFAULT_INTERVAL = 30
DEFAULT_HEALTHY_THRESHOLD = 10


def classic_state(entry: dict[str, Any]) -> tuple[str, str | None]:
    """Map a DescribeInstanceHealth entry onto the normalised vocabulary."""
    state = entry.get("State")
    description = entry.get("Description")
    reason = description if description and description != "N/A" else None
    text = (description or "").lower()
    if state == "InService":
        if "deregistration" in text:
            return DRAINING, reason
        return HEALTHY, reason
    if state == "OutOfService":
        if "not currently registered" in text:
            return UNUSED, reason
        if "registration is still in progress" in text:
            return INITIAL, reason
        return UNHEALTHY, reason
    return UNKNOWN, reason


class ClassicELBAdapter(Adapter):
    """Instances registered with a fixed set of classic ELBs."""

    kind = "classic_elb"

    def __init__(
        self,
        client: Any,
        load_balancer_names: list[str],
        clock: Clock | None = None,
        backoff: Backoff | None = None,
    ):
        super().__init__(clock=clock, backoff=backoff)
        self.client = client
        self.names = list(dict.fromkeys(load_balancer_names))
        self._descriptions: dict[str, dict[str, Any]] = {}
        self._draining: dict[str, int] = {}
        self._in_service: dict[str, list[str]] = {}  # per ELB, the instances health() last saw in service

    def _call(self, operation: str, method: str, **kwargs: Any) -> dict[str, Any]:
        self.api_calls[operation] += 1
        return getattr(self.client, method)(**kwargs)

    def _describe(self, names: list[str]) -> None:
        for i in range(0, len(names), DESCRIBE_CHUNK):
            chunk = names[i:i + DESCRIBE_CHUNK]
            try:
                found = self._call("DescribeLoadBalancers", "describe_load_balancers", LoadBalancerNames=chunk)
            except Exception as exc:
                if aws_error_code(exc) != "LoadBalancerNotFound":
                    raise
                missing = self._find_missing(chunk)
                raise NotFoundError(
                    "load_balancer: classic ELB(s) not found: " + ", ".join(missing) + "; nothing was changed", missing
                ) from None
            for desc in found["LoadBalancerDescriptions"]:
                self._descriptions[desc["LoadBalancerName"]] = desc

    def _find_missing(self, chunk: list[str]) -> list[str]:
        if len(chunk) == 1:
            return list(chunk)
        missing = []
        for name in chunk:
            try:
                self._call("DescribeLoadBalancers", "describe_load_balancers", LoadBalancerNames=[name])
            except Exception as exc:
                if aws_error_code(exc) != "LoadBalancerNotFound":
                    raise
                missing.append(name)
        return missing or list(chunk)

    def validate(self) -> None:
        todo = [n for n in self.names if n not in self._descriptions]
        if todo:
            self._describe(todo)

    def _ensure_known(self, names: list[str]) -> None:
        self.validate()
        todo = [n for n in names if n not in self._descriptions]
        if todo:
            self._describe(todo)

    def connection_draining_timeout(self, name: str) -> int:
        """ConnectionDraining.Timeout when enabled, else 0 (one API call per ELB, cached)."""
        if name not in self._draining:
            attrs = self._call(
                "DescribeLoadBalancerAttributes", "describe_load_balancer_attributes", LoadBalancerName=name
            )["LoadBalancerAttributes"]
            draining = attrs.get("ConnectionDraining") or {}
            self._draining[name] = int(draining.get("Timeout") or 300) if draining.get("Enabled") else 0
        return self._draining[name]

    def export_cache(self) -> dict[str, Any]:
        return {"draining": dict(self._draining)} if self._draining else {}

    def import_cache(self, cache: dict[str, Any] | None) -> None:
        """Connection draining timeouts read before the first host left (preflight): the run keeps them."""
        self._draining.update({n: int(t) for n, t in ((cache or {}).get("draining") or {}).items()})

    def preflight(self, instance_ids: list[str]) -> None:
        """Read every ELB's connection draining now, and prove RegisterInstancesWithLoadBalancer on
        every ELB by registering again an instance of the deployment that is in service there (AWS
        ignores an instance already registered), as the ELBv2 adapter does."""
        self.validate()
        for name in self.names:
            self.connection_draining_timeout(name)
        wanted = set(instance_ids)
        for name in self.names:
            if name not in self._in_service:
                self._in_service[name] = _in_service(self._instance_states(name))
            serving = [i for i in self._in_service[name] if i in wanted]
            if serving:
                self._call("RegisterInstancesWithLoadBalancer", "register_instances_with_load_balancer",
                           LoadBalancerName=name, Instances=[{"InstanceId": serving[0]}])

    def prepare_block(self, memberships: list[Membership]) -> None:
        names = list(group_memberships(memberships))
        self._ensure_known(names)
        for name in names:
            self.connection_draining_timeout(name)

    def _time_to_healthy(self, name: str) -> float:
        hc = self._descriptions.get(name, {}).get("HealthCheck") or {}
        interval = int(hc.get("Interval") or DEFAULT_INTERVAL)
        threshold = int(hc.get("HealthyThreshold") or DEFAULT_HEALTHY_THRESHOLD)
        return float(threshold * interval + interval)

    # -- interface ----------------------------------------------------------------------------
    def snapshot(self, instance_ids: list[str]) -> dict[str, list[Membership]]:
        # One DescribeLoadBalancers for all configured ELBs gives both existence and membership.
        self._describe(self.names)
        wanted = set(instance_ids)
        out: dict[str, list[Membership]] = {i: [] for i in instance_ids}
        for name in self.names:
            for inst in self._descriptions[name].get("Instances", []):
                iid = inst.get("InstanceId")
                if iid in wanted:
                    out[iid].append(ClassicELBMembership(name, iid))
        return out

    def desired(self, instance_ids: list[str]) -> list[Membership]:
        self.validate()
        return [ClassicELBMembership(n, i) for n in self.names for i in instance_ids]

    def _batched(self, operation: str, method: str, memberships: list[Membership]) -> None:
        groups = group_memberships(memberships)
        self._ensure_known(list(groups))
        for name, ms in groups.items():
            instances = [{"InstanceId": m.host} for m in ms]
            self._call(operation, method, LoadBalancerName=name, Instances=instances)

    def block(self, memberships: list[Membership]) -> None:
        self._batched("DeregisterInstancesFromLoadBalancer", "deregister_instances_from_load_balancer", memberships)

    def allow(self, memberships: list[Membership]) -> None:
        self._batched("RegisterInstancesWithLoadBalancer", "register_instances_with_load_balancer", memberships)

    def _instance_states(self, name: str, instance_ids: list[str] | None = None) -> dict[str, tuple[str, str | None]]:
        """States of the given instances (all registered ones when None). Asking for named
        instances also reports those still draining; an instance AWS no longer knows makes the
        call fail with InvalidInstance, and then the plain listing is used."""
        kwargs: dict[str, Any] = {"LoadBalancerName": name}
        if instance_ids:
            kwargs["Instances"] = [{"InstanceId": i} for i in instance_ids]
        try:
            resp = self._call("DescribeInstanceHealth", "describe_instance_health", **kwargs)
        except Exception as exc:
            code = aws_error_code(exc)
            if code == "LoadBalancerNotFound":
                raise NotFoundError(f"load_balancer: classic ELB {name} not found", [name]) from None
            if code == "InvalidInstance" and instance_ids:
                return self._instance_states(name)
            raise
        return {e["InstanceId"]: classic_state(e) for e in resp.get("InstanceStates", [])}

    def states(self, memberships: list[Membership]) -> dict[Membership, tuple[str, str | None]]:
        out: dict[Membership, tuple[str, str | None]] = {}
        for name, ms in group_memberships(memberships).items():
            current = self._instance_states(name, [m.host for m in ms])
            for m in ms:
                out[m] = current.get(m.host, (UNUSED, "Instance is not currently registered with the LoadBalancer."))
        return out

    def wait_drained(
        self, memberships: list[Membership], timeout: float | None = None, progress: Progress | None = None
    ) -> WaitResult:
        if not memberships:
            return WaitResult("drained")
        names = list(group_memberships(memberships))
        self._ensure_known(names)
        drains = {n: self.connection_draining_timeout(n) for n in names}
        timeout = derived_timeout(timeout, drains.values())

        def done(state: str, reason: str | None) -> bool:
            # Anything but "still serving" counts: OutOfService, Unknown, or no longer listed.
            return state not in (HEALTHY, DRAINING)

        def describe(pending, left):
            return (
                f"classic_elb: waiting for {len(pending)} instance(s) to finish connection draining "
                f"[{count_by_state(pending)}]; {left:.0f}s left"
            )

        return self._poll("drained", memberships, timeout, done, progress, describe)

    def wait_healthy(
        self, memberships: list[Membership], timeout: float | None = None, progress: Progress | None = None
    ) -> WaitResult:
        if not memberships:
            return WaitResult("healthy")
        names = list(group_memberships(memberships))
        self._ensure_known(names)
        timeout = derived_timeout(timeout, (self._time_to_healthy(n) for n in names))

        def describe(pending, left):
            return f"classic_elb: waiting for {len(pending)} instance(s) to be InService [{count_by_state(pending)}]; {left:.0f}s left"

        return self._poll("healthy", memberships, timeout, lambda s, r: s == HEALTHY, progress, describe)

    def health(self, instance_ids: list[str]) -> dict[str, str]:
        self.validate()
        seen: dict[str, list[str]] = {i: [] for i in instance_ids}
        for name in self.names:
            states = self._instance_states(name)
            self._in_service[name] = _in_service(states)
            for iid, (state, _reason) in states.items():
                if iid in seen and state != UNUSED:
                    seen[iid].append(state)
        return {i: worst_health(s) for i, s in seen.items()}


def _in_service(states: dict[str, tuple[str, str | None]]) -> list[str]:
    """In service and not draining (re-registering a draining instance would cancel its draining)."""
    return [iid for iid, (state, _reason) in states.items() if state == HEALTHY]


def parse_classic_config(load_balancer: dict[str, Any]) -> list[str]:
    value = load_balancer.get("classic_elb_names")
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"load_balancer.classic_elb_names: expected a list of strings, got {value!r}")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not ELB_NAME_RE.match(name):
            raise ConfigError(
                f"load_balancer.classic_elb_names[{i}]: expected a classic ELB name "
                f"(1-32 letters, digits or hyphens), got {name!r}"
            )
    return list(value)
