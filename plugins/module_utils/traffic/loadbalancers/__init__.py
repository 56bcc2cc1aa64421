# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load balancers behind one interface: snapshot, block, wait_drained, allow, wait_healthy, health.

Usage (controller side)::

    lb = load_balancer_from_config({"target_group_arns": [...], "classic_elb_names": [...]}, clients)
    before = lb.snapshot(instance_ids)                      # record this
    batch = [m for ms in before.values() for m in ms]
    lb.block(batch); lb.wait_drained(batch).raise_for_failure()
    ...
    lb.allow(batch); lb.wait_healthy(batch)
"""

from __future__ import annotations

from typing import Any, Callable

from .base import (
    HEALTH_RANK,
    Adapter,
    Backoff,
    ClassicELBMembership,
    ClientFactory,
    Clock,
    CompositeLoadBalancer,
    ConfigError,
    ELBv2Membership,
    HAProxyMembership,
    LoadBalancerError,
    Membership,
    NotFoundError,
    Outcome,
    RealClock,
    WaitResult,
    WaitTimeoutError,
    by_host,
    group_memberships,
    memberships_from_list,
    worst_health,
)
from .classic_elb import ClassicELBAdapter, parse_classic_config
from .elbv2 import ELBv2Adapter, parse_target_group_config

KNOWN_KEYS = ("target_group_arns", "target_group_names", "classic_elb_names")

# Other adapters (e.g. HAProxy) register a builder: (load_balancer dict, clients) -> Adapter | None
EXTRA_BUILDERS: dict[str, Callable[[dict[str, Any], Any], Adapter | None]] = {}


def register_adapter_builder(key: str, builder: Callable[[dict[str, Any], Any], Adapter | None]) -> None:
    """Let another adapter take a key of the load_balancer configuration (e.g. ``haproxy``)."""
    EXTRA_BUILDERS[key] = builder


def validate_config(load_balancer: Any) -> dict[str, list[str]]:
    """Check the shape of a load_balancer configuration without any API call."""
    if load_balancer is None:
        return {}
    if not isinstance(load_balancer, dict):
        raise ConfigError(f"load_balancer: expected a dictionary, got {load_balancer!r}")
    allowed = set(KNOWN_KEYS) | set(EXTRA_BUILDERS)
    unknown = sorted(k for k in load_balancer if k not in allowed)
    if unknown:
        raise ConfigError(f"load_balancer.{unknown[0]}: unknown key; expected one of {sorted(allowed)}")
    arns, names = parse_target_group_config(load_balancer)
    return {"target_group_arns": arns, "target_group_names": names, "classic_elb_names": parse_classic_config(load_balancer)}


def adapters_from_config(
    load_balancer: dict[str, Any] | None,
    clients: ClientFactory,
    clock: Clock | None = None,
    backoff: Backoff | None = None,
) -> list[Adapter]:
    """One adapter per kind of load balancer named in the configuration (none when empty)."""
    config = validate_config(load_balancer)
    adapters: list[Adapter] = []
    if config.get("target_group_arns") or config.get("target_group_names"):
        adapters.append(
            ELBv2Adapter(
                clients.client("elbv2"),
                config["target_group_arns"],
                config["target_group_names"],
                clock=clock,
                backoff=backoff,
            )
        )
    if config.get("classic_elb_names"):
        adapters.append(ClassicELBAdapter(clients.client("elb"), config["classic_elb_names"], clock=clock, backoff=backoff))
    for key, builder in EXTRA_BUILDERS.items():
        if load_balancer and load_balancer.get(key) is not None:
            extra = builder(load_balancer, clients)
            if extra is not None:
                adapters.append(extra)
    return adapters


def load_balancer_from_config(
    load_balancer: dict[str, Any] | None,
    clients: ClientFactory,
    clock: Clock | None = None,
    backoff: Backoff | None = None,
) -> CompositeLoadBalancer:
    """A CompositeLoadBalancer over every configured adapter.

    With no configuration it still routes recorded ELBv2 / classic memberships (for restoring a
    record after the configuration changed): adapters for those kinds are added lazily, empty.
    """
    adapters = adapters_from_config(load_balancer, clients, clock=clock, backoff=backoff)
    kinds = {a.kind for a in adapters}
    if "elbv2" not in kinds:
        adapters.append(_LazyAdapter(lambda: ELBv2Adapter(clients.client("elbv2"), clock=clock, backoff=backoff), "elbv2"))
    if "classic_elb" not in kinds:
        adapters.append(
            _LazyAdapter(lambda: ClassicELBAdapter(clients.client("elb"), [], clock=clock, backoff=backoff), "classic_elb")
        )
    composite = CompositeLoadBalancer(adapters)
    if clock is not None:
        composite.clock = clock
    return composite


class _LazyAdapter(Adapter):
    """An adapter for a kind that is not configured: builds its client only when a recorded
    membership of that kind is handled; contributes nothing to snapshot/health."""

    def __init__(self, build: Callable[[], Adapter], kind: str):
        super().__init__()
        self.kind = kind
        self._build = build
        self._inner: Adapter | None = None

    @property
    def inner(self) -> Adapter:
        if self._inner is None:
            self._inner = self._build()
        return self._inner

    @property
    def api_calls(self):  # type: ignore[override]
        from collections import Counter

        return Counter() if self._inner is None else self._inner.api_calls

    @api_calls.setter
    def api_calls(self, value) -> None:
        pass

    def validate(self) -> None:
        if self._inner is not None:
            self._inner.validate()

    def snapshot(self, instance_ids):
        return {}

    def desired(self, instance_ids):
        return []

    def health(self, instance_ids):
        return {}

    def prepare_block(self, memberships):
        self.inner.prepare_block(memberships)

    def block(self, memberships):
        self.inner.block(memberships)

    def allow(self, memberships):
        self.inner.allow(memberships)

    def states(self, memberships):
        return self.inner.states(memberships)

    def wait_drained(self, memberships, timeout=None, progress=None):
        return self.inner.wait_drained(memberships, timeout, progress)

    def drain_seconds(self, memberships):
        return self.inner.drain_seconds(memberships)

    def wait_healthy(self, memberships, timeout=None, progress=None):
        return self.inner.wait_healthy(memberships, timeout, progress)


__all__ = [
    "HEALTH_RANK",
    "Adapter",
    "Backoff",
    "ClassicELBAdapter",
    "ClassicELBMembership",
    "ClientFactory",
    "Clock",
    "CompositeLoadBalancer",
    "ConfigError",
    "ELBv2Adapter",
    "ELBv2Membership",
    "HAProxyMembership",
    "LoadBalancerError",
    "Membership",
    "NotFoundError",
    "Outcome",
    "RealClock",
    "WaitResult",
    "WaitTimeoutError",
    "adapters_from_config",
    "by_host",
    "group_memberships",
    "load_balancer_from_config",
    "memberships_from_list",
    "register_adapter_builder",
    "validate_config",
    "worst_health",
]

# The HAProxy adapter registers its builder for the ``haproxy`` key when imported.
from . import haproxy as _haproxy  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
