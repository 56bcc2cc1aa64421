# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ELBv2 (ALB/NLB/GWLB) target groups behind the load-balancer interface.

API budget: DescribeTargetGroups once per adapter (validation, cached), DescribeTargetHealth once
per target group per snapshot / poll (a wait's poll names only the targets it waits for),
DescribeTargetGroupAttributes once per target group (cached),
DeregisterTargets / RegisterTargets once per target group per batch, and one RegisterTargets per
target group at the start of a deployment (the preflight). Never one call per host.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import aws_error_code

from .base import (
    HEALTHY,
    INITIAL,
    UNAVAILABLE,
    UNKNOWN,
    UNUSED,
    Adapter,
    Backoff,
    Clock,
    ConfigError,
    ELBv2Membership,
    Membership,
    NotFoundError,
    Progress,
    WaitResult,
    count_by_state,
    derived_timeout,
    group_memberships,
    target_group_label,
    worst_health,
)

TARGET_GROUP_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]+$"
)
TARGET_GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
DESCRIBE_CHUNK = 20  # DescribeTargetGroups takes at most 20 ARNs / names per call
AWS_DEFAULT_DEREGISTRATION_DELAY = 300
NOT_REGISTERED = "Target.NotRegistered"
NOT_IN_USE = "Target.NotInUse"


@dataclass
class TargetGroupInfo:
    arn: str
    name: str
    port: int | None
    target_type: str
    health_check_enabled: bool
    interval: int
    healthy_threshold: int

    @classmethod
    def from_api(cls, tg: dict[str, Any]) -> "TargetGroupInfo":
        return cls(
            arn=tg["TargetGroupArn"],
            name=tg.get("TargetGroupName", ""),
            port=tg.get("Port"),
            target_type=tg.get("TargetType", "instance"),
            health_check_enabled=tg.get("HealthCheckEnabled", True),
            interval=int(tg.get("HealthCheckIntervalSeconds") or 30),
            healthy_threshold=int(tg.get("HealthyThresholdCount") or 5),
        )

    @property
    def time_to_healthy(self) -> float:
        """CodeDeploy's estimate: HealthyThreshold x Interval + one Interval."""
        if not self.health_check_enabled:
            return 0.0
        return float(self.healthy_threshold * self.interval + self.interval)


# After a learnt registration time, the wait looks this often at first (then backs off as usual).
CLOSE_POLL = 0.05
# Before one is learnt: the first look after this long, each next one this much later than the last.
FIRST_POLL, FIRST_GROWTH = 0.25, 1.3
# A drain not over when its delay is: the next look after this long (then backing off as usual).
AFTER_DELAY_POLL = 0.1


@dataclass
class RegistrationTiming:
    """What the waits of this run saw of a target group's registrations (seconds from the wait's start): a target
    still ``initial`` at ``registering_until`` in the latest wait that saw one, and every target healthy by
    ``healthy_by`` at the earliest. The next wait calls nothing before the smaller of the two."""

    registering_until: float
    healthy_by: float

    @classmethod
    def learn(cls, before: "RegistrationTiming | None", registering: float, healthy: float) -> "RegistrationTiming":
        return cls(registering, healthy if before is None else min(before.healthy_by, healthy))

    def quiet(self) -> float:
        return max(0.0, min(self.registering_until, self.healthy_by - CLOSE_POLL))


class ELBv2Adapter(Adapter):
    """Instance targets in a fixed set of ELBv2 target groups."""

    kind = "elbv2"

    def __init__(
        self,
        client: Any,
        target_group_arns: list[str] | None = None,
        target_group_names: list[str] | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
    ):
        super().__init__(clock=clock, backoff=backoff)
        self.client = client
        self.configured_arns = list(dict.fromkeys(target_group_arns or []))
        self.configured_names = list(dict.fromkeys(target_group_names or []))
        self._groups: dict[str, TargetGroupInfo] = {}
        self._delays: dict[str, int] = {}
        self._healthy: dict[str, list[dict[str, Any]]] = {}  # per group, the targets health() last saw healthy
        self._registration: dict[str, RegistrationTiming] = {}  # per group, what earlier waits saw
        self._registered_at: dict[str, float] = {}  # per group, the clock time of its last RegisterTargets
        self._validated = False

    # -- API plumbing -------------------------------------------------------------------------
    def _call(self, operation: str, method: str, **kwargs: Any) -> dict[str, Any]:
        self.api_calls[operation] += 1
        return getattr(self.client, method)(**kwargs)

    def _describe_groups(self, key: str, values: list[str]) -> list[dict[str, Any]]:
        """DescribeTargetGroups in chunks of 20; a missing group is named in the error."""
        found: list[dict[str, Any]] = []
        for i in range(0, len(values), DESCRIBE_CHUNK):
            chunk = values[i:i + DESCRIBE_CHUNK]
            try:
                found.extend(self._call("DescribeTargetGroups", "describe_target_groups", **{key: chunk})["TargetGroups"])
            except Exception as exc:
                if aws_error_code(exc) != "TargetGroupNotFound":
                    raise
                missing = self._find_missing(key, chunk)
                what = "ARN" if key == "TargetGroupArns" else "name"
                raise NotFoundError(
                    "load_balancer: target group(s) not found (by "
                    + what
                    + "): "
                    + ", ".join(missing)
                    + "; nothing was changed",
                    missing,
                ) from None
        return found

    def _find_missing(self, key: str, chunk: list[str]) -> list[str]:
        """Error path only: the API says 'one or more not found' without naming them."""
        if len(chunk) == 1:
            return list(chunk)
        missing = []
        for value in chunk:
            try:
                self._call("DescribeTargetGroups", "describe_target_groups", **{key: [value]})
            except Exception as exc:
                if aws_error_code(exc) != "TargetGroupNotFound":
                    raise
                missing.append(value)
        return missing or list(chunk)

    def _remember(self, groups: list[dict[str, Any]]) -> None:
        for tg in groups:
            info = TargetGroupInfo.from_api(tg)
            if info.target_type != "instance":
                raise ConfigError(
                    f"load_balancer: {target_group_label(info.arn)} has target type {info.target_type!r}; "
                    "only 'instance' target groups can hold deployment hosts"
                )
            self._groups[info.arn] = info

    def export_cache(self) -> dict[str, Any]:
        self.validate()
        return {"groups": {arn: asdict(info) for arn, info in self._groups.items()}, "delays": dict(self._delays),
                # the next step may wait for this step's registrations (a batch handed over): counted from them
                "registered_at": dict(self._registered_at), **self.lasting_cache()}

    def import_cache(self, cache: dict[str, Any] | None) -> None:
        """Target groups described by an earlier step of the same deployment: they existed then, and
        a group deleted since fails the next DescribeTargetHealth with a clear error anyway."""
        if not cache:
            return
        # attributes read before the first host left (preflight): the run keeps them
        self._delays.update({arn: int(d) for arn, d in (cache.get("delays") or {}).items()})
        registration = cache.get("registration")
        for arn, timing in (registration.items() if isinstance(registration, dict) else ()):
            try:
                learnt = RegistrationTiming(float(timing["registering_until"]), float(timing["healthy_by"]))
            except (KeyError, TypeError, ValueError):
                continue  # nothing learnt: the wait polls from the start, as the first one did
            if all(math.isfinite(v) and v >= 0 for v in (learnt.registering_until, learnt.healthy_by)):
                self._registration[arn] = learnt
        registered = cache.get("registered_at")
        for arn, at in (registered.items() if isinstance(registered, dict) else ()):
            # The clock's reading (monotonic: one clock for every process of the machine). A wrong one only moves
            # the first look of a health wait: min(now, it) is where the wait counts from.
            if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at):
                self._registered_at[str(arn)] = float(at)
        if "groups" not in cache:
            return  # only what an earlier deployment learnt (lasting_cache): the groups are described as usual
        groups = {arn: TargetGroupInfo(**info) for arn, info in (cache.get("groups") or {}).items()}
        wanted = set(self.configured_arns)
        if self.configured_names or not wanted <= set(groups):
            return  # names to resolve, or groups this cache does not know: describe them as usual
        self._groups.update(groups)
        self._validated = True

    def lasting_cache(self) -> dict[str, Any]:
        # Registration times hold from one deployment of the group to the next: its first wait need not poll
        # from the start. Only the learnt times: the groups themselves are described again by each deployment.
        return {"registration": {arn: asdict(t) for arn, t in self._registration.items()}} if self._registration else {}

    def validate(self) -> None:
        if self._validated:
            return
        if self.configured_arns:
            self._remember(self._describe_groups("TargetGroupArns", self.configured_arns))
        if self.configured_names:
            self._remember(self._describe_groups("Names", self.configured_names))
        self._validated = True

    @property
    def target_group_arns(self) -> list[str]:
        """Every configured target group's ARN (names resolved)."""
        self.validate()
        return list(self._groups)

    def _ensure_known(self, arns: list[str]) -> None:
        """Describe (once) target groups referenced by memberships but not configured, so that a
        missing one fails before anything changes."""
        self.validate()
        unknown = [a for a in arns if a not in self._groups]
        if unknown:
            self._remember(self._describe_groups("TargetGroupArns", unknown))

    def _describe_health(self, arn: str, targets: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The group's targets' health, or only ``targets``' (a target not registered is ``unused``, as AWS says)."""
        try:
            if targets:
                try:
                    return self._call("DescribeTargetHealth", "describe_target_health", TargetGroupArn=arn,
                                      Targets=targets)["TargetHealthDescriptions"]
                except Exception as exc:
                    if aws_error_code(exc) != "InvalidTarget":
                        raise
                    # A target that no longer exists (terminated) is refused by name; the whole group's answer
                    # simply leaves it out, as it did before waits named their targets.
            return self._call("DescribeTargetHealth", "describe_target_health", TargetGroupArn=arn)[
                "TargetHealthDescriptions"
            ]
        except Exception as exc:
            if aws_error_code(exc) == "TargetGroupNotFound":
                raise NotFoundError(f"load_balancer: {target_group_label(arn)} ({arn}) not found", [arn]) from None
            raise

    def deregistration_delay(self, arn: str) -> int:
        """deregistration_delay.timeout_seconds of a target group (one API call, cached)."""
        if arn not in self._delays:
            attrs = self._call(
                "DescribeTargetGroupAttributes", "describe_target_group_attributes", TargetGroupArn=arn
            )["Attributes"]
            value = {a["Key"]: a["Value"] for a in attrs}.get("deregistration_delay.timeout_seconds")
            self._delays[arn] = int(value) if value is not None else AWS_DEFAULT_DEREGISTRATION_DELAY
        return self._delays[arn]

    def _normalise(self, m: Membership) -> ELBv2Membership:
        if not isinstance(m, ELBv2Membership):
            raise TypeError(f"not an ELBv2 membership: {m!r}")
        if m.port is None:
            info = self._groups.get(m.target_group_arn)
            if info is not None and info.port is not None:
                return ELBv2Membership(m.target_group_arn, m.target_id, info.port, m.availability_zone)
        return m

    # -- interface ----------------------------------------------------------------------------
    def preflight(self, instance_ids: list[str]) -> None:
        """Read every group's deregistration delay now, and prove RegisterTargets on every group.

        ELB has no dry run, so the proof registers again one target of the deployment that is healthy
        in the group: AWS leaves a registered target as it is (no new health check, no drain), so
        nothing changes, while a policy without RegisterTargets on that group fails here, before any
        host leaves, instead of after a batch was taken out. A group where none of the deployment's
        targets is healthy has nothing in service to lose and is not proven (a draining target is
        never registered again here: that would cancel its draining).
        """
        self.validate()
        for arn in self._groups:
            self.deregistration_delay(arn)
        wanted = set(instance_ids)
        for arn in self._groups:
            if arn not in self._healthy:
                self._healthy[arn] = self._healthy_targets(self._describe_health(arn))
            healthy = [t for t in self._healthy[arn] if t["Id"] in wanted]
            if healthy:
                self._call("RegisterTargets", "register_targets", TargetGroupArn=arn, Targets=[healthy[0]])

    def prepare_block(self, memberships: list[Membership]) -> None:
        arns = list(group_memberships(memberships))
        self._ensure_known(arns)
        for arn in arns:
            self.deregistration_delay(arn)

    @staticmethod
    def _healthy_targets(descriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d["Target"] for d in descriptions if d.get("TargetHealth", {}).get("State") == HEALTHY]

    def snapshot(self, instance_ids: list[str]) -> dict[str, list[Membership]]:
        self.validate()
        wanted = set(instance_ids)
        out: dict[str, list[Membership]] = {i: [] for i in instance_ids}
        for arn in self._groups:
            for desc in self._describe_health(arn):
                target = desc["Target"]
                if target["Id"] not in wanted:
                    continue
                out[target["Id"]].append(
                    ELBv2Membership(
                        target_group_arn=arn,
                        target_id=target["Id"],
                        port=target.get("Port"),
                        availability_zone=target.get("AvailabilityZone"),
                    )
                )
        return out

    def desired(self, instance_ids: list[str]) -> list[Membership]:
        self.validate()
        return [ELBv2Membership(arn, i, info.port) for arn, info in self._groups.items() for i in instance_ids]

    def _batched(self, operation: str, method: str, memberships: list[Membership]) -> None:
        groups = group_memberships(memberships)
        self._ensure_known(list(groups))
        for arn, ms in groups.items():
            targets = [self._normalise(m).target() for m in ms]
            self._call(operation, method, TargetGroupArn=arn, Targets=targets)

    def block(self, memberships: list[Membership]) -> None:
        self._batched("DeregisterTargets", "deregister_targets", memberships)

    def allow(self, memberships: list[Membership]) -> None:
        # Unconditional: a target that is still draining is registered again (AWS turns it
        # back to initial), unlike community.aws.elb_target which skips it.
        self._batched("RegisterTargets", "register_targets", memberships)
        for arn in group_memberships(memberships):
            self._registered_at[arn] = self.clock.now()

    def states(self, memberships: list[Membership]) -> dict[Membership, tuple[str, str | None]]:
        groups = group_memberships(memberships)
        self._ensure_known(list(groups))
        out: dict[Membership, tuple[str, str | None]] = {}
        for arn, ms in groups.items():
            seen: dict[tuple[str, int | None], tuple[str, str | None]] = {}
            # Only the targets asked about: a wait's poll then costs what the batch holds, not the whole group.
            asked = {(t["Id"], t.get("Port")): t for t in (self._normalise(m).target() for m in ms)}
            for desc in self._describe_health(arn, list(asked.values())):
                th = desc.get("TargetHealth", {})
                seen[(desc["Target"]["Id"], desc["Target"].get("Port"))] = (
                    th.get("State", UNKNOWN),
                    th.get("Reason") or th.get("Description"),
                )
            for m in ms:
                n = self._normalise(m)
                out[m] = seen.get((n.target_id, n.port), (UNUSED, NOT_REGISTERED))
        return out

    def wait_drained(
        self, memberships: list[Membership], timeout: float | None = None, progress: Progress | None = None
    ) -> WaitResult:
        if not memberships:
            return WaitResult("drained")
        self._ensure_known(list(group_memberships(memberships)))
        delays = {arn: self.deregistration_delay(arn) for arn in group_memberships(memberships)}
        timeout = derived_timeout(timeout, delays.values())

        def done(state: str, reason: str | None) -> bool:
            return state == UNUSED and reason in (NOT_REGISTERED, None)

        def describe(pending, left):
            per_group = ", ".join(
                f"{target_group_label(arn)} (delay {d}s)" for arn, d in delays.items()
                if any(m.group == arn for m in pending)
            )
            return f"elbv2: waiting for {len(pending)} target(s) to drain [{count_by_state(pending)}] in {per_group}; {left:.0f}s left"

        # A deregistered target drains for the whole delay: no poll can succeed earlier.
        expected = min(delays.values())
        # Once the delay is over the drain is done but for the API's own lag: look again soon, not half a second on.
        return self._poll("drained", memberships, timeout, done, progress, describe, expected=expected,
                          expected_why=f"deregistration delay {expected}s",
                          backoff=replace(self.backoff, initial=min(self.backoff.initial, AFTER_DELAY_POLL)))

    def drain_seconds(self, memberships: list[Membership]) -> float | None:
        # A deregistered target drains for its group's whole delay (the wait above makes no call before then).
        groups = list(group_memberships(memberships))
        if not groups:
            return None
        self._ensure_known(groups)
        return float(max(self.deregistration_delay(arn) for arn in groups))

    def wait_healthy(
        self, memberships: list[Membership], timeout: float | None = None, progress: Progress | None = None
    ) -> WaitResult:
        if not memberships:
            return WaitResult("healthy")
        arns = list(group_memberships(memberships))
        self._ensure_known(arns)
        timeout = derived_timeout(timeout, (self._groups[a].time_to_healthy for a in arns))

        def done(state: str, reason: str | None) -> bool:
            # unavailable: health checks disabled; NotInUse: the group serves no load balancer,
            # so there is no health check to pass.
            return state in (HEALTHY, UNAVAILABLE) or (state == UNUSED and reason == NOT_IN_USE)

        def describe(pending, left):
            return f"elbv2: waiting for {len(pending)} target(s) to become healthy [{count_by_state(pending)}]; {left:.0f}s left"

        learnt = [self._registration.get(arn) for arn in arns]
        # Counted from the last registration of these groups (a batch's hosts may go back one by one before the
        # wait), so what is learnt, and the quiet time before the first look, do not depend on when the wait began.
        registered = [self._registered_at[arn] for arn in arns if arn in self._registered_at]
        since = max(registered) if registered else None
        seen: dict[str, list[float | None]] = {arn: [None, None] for arn in arns}  # still registering at, healthy at

        def observe(elapsed: float, states: dict[Membership, tuple[str, str | None]]) -> None:
            for arn in arns:
                mine = [pair for m, pair in states.items() if m.group == arn]
                if any(state == INITIAL for state, _reason in mine):
                    seen[arn][0] = elapsed
                elif mine and seen[arn][1] is None and all(done(*pair) for pair in mine):
                    seen[arn][1] = elapsed

        if all(learnt):
            # Earlier waits of this run saw how long a registration takes here: sleep until just before
            # that, then look closely (fewer calls, and the target is back in service sooner).
            quiet = min(t.quiet() for t in learnt if t)
            result = self._poll("healthy", memberships, timeout, done, progress, describe, expected=quiet,
                                expected_why="registration as long as before", observe=observe,
                                backoff=replace(self.backoff, initial=min(self.backoff.initial, CLOSE_POLL)), since=since)
        else:
            # Nothing learnt yet: look more often than the usual backoff at first (about every quarter second,
            # growing by a third), so the first batch is not back much later than it could be.
            result = self._poll("healthy", memberships, timeout, done, progress, describe, observe=observe,
                                backoff=replace(self.backoff, initial=min(self.backoff.initial, FIRST_POLL),
                                                factor=min(self.backoff.factor, FIRST_GROWTH)), since=since)
        if result.ok:
            for arn, (registering, healthy) in seen.items():
                if registering is not None and healthy is not None:
                    self._registration[arn] = RegistrationTiming.learn(self._registration.get(arn), registering, healthy)
        return result

    def health(self, instance_ids: list[str]) -> dict[str, str]:
        self.validate()
        wanted = set(instance_ids)
        seen: dict[str, list[str]] = {i: [] for i in instance_ids}
        for arn in self._groups:
            descriptions = self._describe_health(arn)
            self._healthy[arn] = self._healthy_targets(descriptions)
            for desc in descriptions:
                tid = desc["Target"]["Id"]
                if tid in wanted:
                    seen[tid].append(desc.get("TargetHealth", {}).get("State", UNKNOWN))
        return {i: worst_health(states) for i, states in seen.items()}


def parse_target_group_config(load_balancer: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Validate target_group_arns / target_group_names; errors name the field path."""
    arns = _string_list(load_balancer, "target_group_arns")
    for i, arn in enumerate(arns):
        if not TARGET_GROUP_ARN_RE.match(arn):
            raise ConfigError(f"load_balancer.target_group_arns[{i}]: expected an ELBv2 target group ARN, got {arn!r}")
    names = _string_list(load_balancer, "target_group_names")
    for i, name in enumerate(names):
        if not TARGET_GROUP_NAME_RE.match(name):
            raise ConfigError(
                f"load_balancer.target_group_names[{i}]: expected a target group name "
                f"(1-32 letters, digits or hyphens, not starting or ending with a hyphen), got {name!r}"
            )
    return arns, names


def _string_list(config: dict[str, Any], key: str) -> list[str]:
    value = config.get(key)
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"load_balancer.{key}: expected a list of strings, got {value!r}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ConfigError(f"load_balancer.{key}[{i}]: expected a non-empty string, got {item!r}")
    return list(value)
