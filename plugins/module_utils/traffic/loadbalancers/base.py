# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The load-balancer interface shared by every adapter (ELBv2, classic ELB, HAProxy).

A *membership* is one registration of one host in one load balancer (a target group and port,
a classic ELB, an HAProxy server line). Memberships are recorded before any change, as plain
JSON (see docs/architecture.md, "Load-balancer membership"), and restored exactly.

Adapters implement :class:`Adapter`; :class:`CompositeLoadBalancer` fans out to several adapters
so callers handle one object. Nothing here imports boto3 or Ansible: AWS clients are handed in
through a :class:`ClientFactory` (anything with ``client(service_name)``).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator, Protocol
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

Progress = Callable[[str], None]

# Normalised health vocabulary (ELBv2's words; classic ELB and HAProxy states are mapped onto it).
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
INITIAL = "initial"
DRAINING = "draining"
UNUSED = "unused"  # not registered
UNAVAILABLE = "unavailable"  # registered, health checks disabled
UNKNOWN = "unknown"

# Lower rank = worse; used to combine several memberships of one host and to order hosts.
HEALTH_RANK = {
    UNHEALTHY: 0,
    UNKNOWN: 1,
    DRAINING: 2,
    INITIAL: 3,
    UNUSED: 4,
    UNAVAILABLE: 5,
    HEALTHY: 6,
}


def worst_health(states: Iterable[str]) -> str:
    """The worst of several health states (``unused`` when there are none)."""
    states = list(states)
    if not states:
        return UNUSED
    return min(states, key=lambda s: HEALTH_RANK.get(s, HEALTH_RANK[UNKNOWN]))


# ---------------------------------------------------------------------------------------------
# Errors


class LoadBalancerError(RollwrightError):
    """Any load-balancer failure with a message meant for a person."""


class ConfigError(LoadBalancerError):
    """The load_balancer configuration is malformed (message names the field path)."""


class NotFoundError(LoadBalancerError):
    """A configured target group or load balancer does not exist."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


class WaitTimeoutError(LoadBalancerError):
    """Raised by :meth:`WaitResult.raise_for_failure` when a wait did not succeed."""

    def __init__(self, message: str, result: "WaitResult"):
        super().__init__(message)
        self.result = result


# ---------------------------------------------------------------------------------------------
# Memberships


@dataclass(frozen=True)
class Membership:
    """Base class of every membership kind. Use :meth:`from_dict` to parse recorded JSON."""

    kind: ClassVar[str] = ""
    _kinds: ClassVar[dict[str, type["Membership"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Membership._kinds[cls.kind] = cls

    @property
    def host(self) -> str:
        """The instance id (or host name) this membership belongs to."""
        raise NotImplementedError

    @property
    def group(self) -> str:
        """The container the membership lives in (target group ARN, ELB name, HAProxy backend):
        adapters make one API call per group."""
        raise NotImplementedError

    def label(self) -> str:
        """A short human-readable description for messages."""
        return f"{self.host} in {self.group}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        data.update(asdict(self))
        return data

    @staticmethod
    def from_dict(data: dict[str, Any], path: str = "membership") -> "Membership":
        """Parse one recorded membership; errors name ``path``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a membership object, got {data!r}")
        kind = data.get("kind")
        cls = Membership._kinds.get(kind)  # type: ignore[arg-type]
        if cls is None:
            raise ConfigError(f"{path}.kind: expected one of {sorted(Membership._kinds)}, got {kind!r}")
        return cls._parse(data, path)

    @classmethod
    def _parse(cls, data: dict[str, Any], path: str) -> "Membership":
        raise NotImplementedError


def _req_str(data: dict[str, Any], key: str, path: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}.{key}: expected a non-empty string, got {value!r}")
    return value


def _opt_int(data: dict[str, Any], key: str, path: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{path}.{key}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}.{key}: expected an integer, got {value!r}") from None


@dataclass(frozen=True)
class ELBv2Membership(Membership):
    """A target (instance id + port) in an ELBv2 target group."""

    kind: ClassVar[str] = "elbv2"
    target_group_arn: str
    target_id: str
    port: int | None = None
    availability_zone: str | None = None

    @property
    def host(self) -> str:
        return self.target_id

    @property
    def group(self) -> str:
        return self.target_group_arn

    def label(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.target_id}{port} in {target_group_label(self.target_group_arn)}"

    def target(self) -> dict[str, Any]:
        """The ``Targets`` entry for RegisterTargets/DeregisterTargets."""
        out: dict[str, Any] = {"Id": self.target_id}
        if self.port is not None:
            out["Port"] = self.port
        if self.availability_zone:
            out["AvailabilityZone"] = self.availability_zone
        return out

    @classmethod
    def _parse(cls, data: dict[str, Any], path: str) -> "ELBv2Membership":
        return cls(
            target_group_arn=_req_str(data, "target_group_arn", path),
            target_id=_req_str(data, "target_id", path),
            port=_opt_int(data, "port", path),
            availability_zone=data.get("availability_zone") or None,
        )


@dataclass(frozen=True)
class ClassicELBMembership(Membership):
    """An instance registered with a classic ELB."""

    kind: ClassVar[str] = "classic_elb"
    load_balancer_name: str
    instance_id: str

    @property
    def host(self) -> str:
        return self.instance_id

    @property
    def group(self) -> str:
        return self.load_balancer_name

    def label(self) -> str:
        return f"{self.instance_id} in classic ELB {self.load_balancer_name}"

    @classmethod
    def _parse(cls, data: dict[str, Any], path: str) -> "ClassicELBMembership":
        return cls(
            load_balancer_name=_req_str(data, "load_balancer_name", path),
            instance_id=_req_str(data, "instance_id", path),
        )


@dataclass(frozen=True)
class HAProxyMembership(Membership):
    """A server line in an HAProxy backend (the HAProxy adapter lives in haproxy.py)."""

    kind: ClassVar[str] = "haproxy"
    instance: str
    backend: str
    server: str
    state: str = "ready"
    weight: int | None = None

    @property
    def host(self) -> str:
        return self.server

    @property
    def group(self) -> str:
        return f"{self.instance}/{self.backend}"

    def label(self) -> str:
        return f"{self.backend}/{self.server} on {self.instance}"

    @classmethod
    def _parse(cls, data: dict[str, Any], path: str) -> "HAProxyMembership":
        return cls(
            instance=_req_str(data, "instance", path),
            backend=_req_str(data, "backend", path),
            server=_req_str(data, "server", path),
            state=data.get("state") or "ready",
            weight=_opt_int(data, "weight", path),
        )


def memberships_from_list(items: Iterable[dict[str, Any]], path: str = "memberships") -> list[Membership]:
    return [Membership.from_dict(item, f"{path}[{i}]") for i, item in enumerate(items)]


def group_memberships(memberships: Iterable[Membership]) -> dict[str, list[Membership]]:
    """Group memberships by their container (one API call per group), keeping first-seen order
    and dropping exact duplicates."""
    groups: dict[str, list[Membership]] = {}
    for m in memberships:
        bucket = groups.setdefault(m.group, [])
        if m not in bucket:
            bucket.append(m)
    return groups


def by_host(memberships: Iterable[Membership], hosts: Iterable[str] = ()) -> dict[str, list[Membership]]:
    """Memberships keyed by host; every host in ``hosts`` is present (possibly with [])."""
    out: dict[str, list[Membership]] = {h: [] for h in hosts}
    for m in memberships:
        out.setdefault(m.host, []).append(m)
    return out


def target_group_label(arn: str) -> str:
    """'targetgroup/NAME/id' -> 'target group NAME' for messages (the ARN itself if unparsable)."""
    parts = arn.split(":")
    if len(parts) >= 6 and parts[5].startswith("targetgroup/"):
        return f"target group {parts[5].split('/')[1]}"
    return f"target group {arn}"


# ---------------------------------------------------------------------------------------------
# Waiting


@dataclass
class Outcome:
    """The end of a wait for one host: ``status`` is healthy / drained / unhealthy / timeout."""

    status: str
    state: str | None = None  # last observed health state
    reason: str | None = None  # last observed reason / description
    memberships: list[dict[str, Any]] = field(default_factory=list)  # those not in the goal state

    @property
    def ok(self) -> bool:
        return self.status in ("healthy", "drained")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_STATUS_RANK = {"unhealthy": 0, "timeout": 1, "healthy": 2, "drained": 2}


@dataclass
class WaitResult:
    """The result of wait_drained / wait_healthy: one :class:`Outcome` per host."""

    goal: str  # "drained" | "healthy"
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    elapsed: float = 0.0
    polls: int = 0

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes.values())

    @property
    def failed(self) -> dict[str, Outcome]:
        return {h: o for h, o in self.outcomes.items() if not o.ok}

    @property
    def pending(self) -> list[str]:
        """Hosts that did not reach the goal (still draining / not healthy), sorted."""
        return sorted(self.failed)

    @property
    def states(self) -> dict[str, str]:
        """Last observed state per host, with its reason when there is one."""
        return {h: (o.state or "?") + (f" ({o.reason})" if o.reason else "") for h, o in self.outcomes.items()}

    def message(self) -> str:
        if self.ok:
            return f"all {len(self.outcomes)} host(s) {self.goal} after {self.elapsed:.1f}s"
        parts = []
        for host, o in sorted(self.failed.items()):
            detail = o.state or "?"
            if o.reason:
                detail += f" ({o.reason})"
            where = ", ".join(_membership_label(m) for m in o.memberships)
            parts.append(f"{host}: {o.status}, last state {detail}" + (f" [{where}]" if where else ""))
        return f"{len(parts)} host(s) not {self.goal} after {self.elapsed:.1f}s: " + "; ".join(parts)

    def raise_for_failure(self) -> "WaitResult":
        if not self.ok:
            raise WaitTimeoutError(self.message(), self)
        return self

    def merge(self, other: "WaitResult") -> "WaitResult":
        """Combine two results for the same goal (worst outcome per host wins)."""
        merged = WaitResult(self.goal, dict(self.outcomes), max(self.elapsed, other.elapsed), self.polls + other.polls)
        for host, o in other.outcomes.items():
            mine = merged.outcomes.get(host)
            if mine is None:
                merged.outcomes[host] = o
            elif _STATUS_RANK.get(o.status, 0) < _STATUS_RANK.get(mine.status, 0):
                merged.outcomes[host] = Outcome(o.status, o.state, o.reason, mine.memberships + o.memberships)
            else:
                merged.outcomes[host] = Outcome(mine.status, mine.state, mine.reason, mine.memberships + o.memberships)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "goal": self.goal,
            "ok": self.ok,
            "elapsed": round(self.elapsed, 3),
            "polls": self.polls,
            "outcomes": {h: o.to_dict() for h, o in self.outcomes.items()},
        }


def _membership_label(data: dict[str, Any]) -> str:
    try:
        return Membership.from_dict(data).label()
    except ConfigError:
        return str(data)


@dataclass
class Backoff:
    """Exponential backoff with jitter, never sleeping past a deadline.

    The n-th base delay is ``min(cap, initial * factor**n)``; the jittered delay is drawn from
    ``[base * (1 - jitter), base]`` and then clipped to the time left before the deadline.
    """

    # Gentle growth and a low cap: a wait notices a target turning healthy within about a second
    # early on and within 4 s later, for one describe call per group per poll.
    initial: float = 0.5
    cap: float = 4.0
    factor: float = 1.5
    jitter: float = 0.25
    rng: random.Random = field(default_factory=random.Random)

    def base_delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield min(self.cap, delay)
            delay = min(self.cap, delay * self.factor)

    def delays(self) -> Iterator[float]:
        for base in self.base_delays():
            yield base * (1.0 - self.jitter * self.rng.random())

    def schedule(self, start: float, deadline: float) -> Iterator[float]:
        """Poll times after ``start`` (each delay clipped so no poll lands after ``deadline``);
        the last poll is exactly at the deadline."""
        now = start
        for delay in self.delays():
            if now >= deadline:
                return
            now = min(deadline, now + delay)
            yield now


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ClientFactory(Protocol):
    def client(self, service: str) -> Any: ...


# ---------------------------------------------------------------------------------------------
# The adapter interface


class Adapter:
    """One kind of load balancer. Subclasses implement the ``_``-less public methods.

    ``api_calls`` counts every API call by operation name (e.g. ``DescribeTargetHealth``) so
    benchmarks can report load-balancer calls per deployment.
    """

    kind: str = ""

    def __init__(self, clock: Clock | None = None, backoff: Backoff | None = None):
        self.clock: Clock = clock or RealClock()
        self.backoff: Backoff = backoff or Backoff()
        self.api_calls: Counter[str] = Counter()

    # -- interface ------------------------------------------------------------------------
    def validate(self) -> None:
        """Check that every configured load balancer / target group exists (cached)."""
        raise NotImplementedError

    def export_cache(self) -> dict[str, Any]:
        """What this adapter learnt about its groups (JSON), so a later step in another process
        need not describe them again. Empty when there is nothing worth keeping."""
        return {}

    def import_cache(self, cache: dict[str, Any] | None) -> None:
        """Take what ``export_cache`` (or ``lasting_cache``) returned in an earlier step or deployment."""

    def lasting_cache(self) -> dict[str, Any]:
        """The part of ``export_cache`` that holds beyond this deployment (what the waits learnt about the load
        balancer's timing), for the group's next deployment. Empty by default."""
        return {}

    def preflight(self, instance_ids: list[str]) -> None:
        """Before the first host of a deployment leaves: read what the waits need (kept for the run,
        see ``export_cache``) and prove that a host taken out can be put back, so a missing permission
        fails the deployment before harm. Nothing to do by default."""

    def prepare_block(self, memberships: list[Membership]) -> None:
        """Read (once) what waiting for these memberships to drain needs, before any of them leaves."""

    def snapshot(self, instance_ids: list[str]) -> dict[str, list[Membership]]:
        raise NotImplementedError

    def desired(self, instance_ids: list[str]) -> list[Membership]:
        """The membership a host *should* have in every configured group (for registering new
        hosts, e.g. blue/green replacements)."""
        raise NotImplementedError

    def block(self, memberships: list[Membership]) -> None:
        raise NotImplementedError

    def wait_drained(
        self, memberships: list[Membership], timeout: float | None = None, progress: Progress | None = None
    ) -> WaitResult:
        raise NotImplementedError

    def drain_seconds(self, memberships: list[Membership]) -> float | None:
        """How long ``memberships`` drain once deregistered, when the load balancer says so beforehand (a fixed
        deregistration delay); None when only the wait can tell (draining ends with the last connection)."""
        return None

    def allow(self, memberships: list[Membership]) -> None:
        raise NotImplementedError

    def wait_healthy(
        self, memberships: list[Membership], timeout: float | None = None, progress: Progress | None = None
    ) -> WaitResult:
        raise NotImplementedError

    def health(self, instance_ids: list[str]) -> dict[str, str]:
        raise NotImplementedError

    def states(self, memberships: list[Membership]) -> dict[Membership, tuple[str, str | None]]:
        """Current (state, reason) of each membership, one describe call per group."""
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------
    def handles(self, membership: Membership) -> bool:
        return membership.kind == self.kind

    def _poll(
        self,
        goal: str,
        memberships: list[Membership],
        timeout: float,
        is_done: Callable[[str, str | None], bool],
        progress: Progress | None,
        describe_progress: Callable[[dict[Membership, tuple[str, str | None]], float], str],
        expected: float = 0.0,
        expected_why: str = "",
        backoff: Backoff | None = None,
        observe: Callable[[float, dict[Membership, tuple[str, str | None]]], None] | None = None,
        since: float | None = None,
    ) -> WaitResult:
        """The shared polling loop: states() once per poll (one call per group), backoff
        between polls, never past the deadline, then one Outcome per host.

        ``expected`` is how long the load balancer is known to take at the least (the
        deregistration delay, the health-check interval x healthy threshold): no API call is made
        before then, since the answer cannot be "done" yet; progress is still printed meanwhile.
        ``backoff`` replaces the adapter's for this wait; ``observe`` sees each poll (seconds since
        the wait began, the states read). ``since``: when what is waited for began, if earlier than this call (the
        clock time of the last registration): ``expected`` and ``observe`` count from then.
        """
        start = self.clock.now()
        deadline = start + max(0.0, timeout)
        began = start if since is None else min(start, since)
        pending = list(dict.fromkeys(memberships))
        last: dict[Membership, tuple[str, str | None]] = {}
        polls = 0
        quiet_until = min(deadline, began + max(0.0, expected))
        waiting = (f"{self.kind}: waiting for {len(pending)} target(s) to "
                   f"{'drain' if goal == 'drained' else 'become healthy'}{f' ({expected_why})' if expected_why else ''}")
        if progress is not None and expected > 0 and expected_why and self.clock.now() >= quiet_until:
            # counted from an earlier start (a batch handed over to the next step): said, so the run shows what it used
            progress(f"{waiting}: due already, looking now; {deadline - self.clock.now():.0f}s left")
        while self.clock.now() < quiet_until:
            if progress is not None:
                progress(f"{waiting}: done in about {quiet_until - self.clock.now():.0f}s; "
                         f"{deadline - self.clock.now():.0f}s left")
            self.clock.sleep(min(QUIET_PROGRESS_EVERY, max(0.0, quiet_until - self.clock.now())))
        schedule = (backoff or self.backoff).schedule(self.clock.now(), deadline)
        while pending:
            current = self.states(pending)
            polls += 1
            if observe is not None:
                observe(self.clock.now() - began, current)
            last.update(current)
            pending = [m for m in pending if not is_done(*current[m])]
            if not pending:
                break
            next_poll = next(schedule, None)
            if next_poll is None:
                break
            if progress is not None:
                progress(describe_progress({m: last[m] for m in pending}, max(0.0, deadline - self.clock.now())))
            self.clock.sleep(max(0.0, next_poll - self.clock.now()))
        elapsed = self.clock.now() - start
        result = WaitResult(goal, elapsed=elapsed, polls=polls)
        for host, ms in by_host(memberships).items():
            bad = [m for m in ms if m in pending]
            if not bad:
                state, reason = worst_state([last[m] for m in ms]) if ms else (None, None)
                result.outcomes[host] = Outcome(goal, state, reason)
                continue
            state, reason = worst_state([last[m] for m in bad])
            status = "unhealthy" if goal == "healthy" and state == UNHEALTHY else "timeout"
            result.outcomes[host] = Outcome(status, state, reason, [m.to_dict() for m in bad])
        return result


# While nothing can have changed yet, say so at this pace instead of polling the API.
QUIET_PROGRESS_EVERY = 10.0


def derived_timeout(timeout: float | None, waits: Iterable[float]) -> float:
    """``timeout`` when the caller gave one, else the longest expected wait plus a margin: 15 s or 10 %, whichever
    is larger."""
    if timeout is not None:
        return timeout
    longest = max(waits)
    return longest + max(15.0, 0.1 * longest)


def worst_state(pairs: list[tuple[str, str | None]]) -> tuple[str, str | None]:
    if not pairs:
        return (UNUSED, None)
    return min(pairs, key=lambda p: HEALTH_RANK.get(p[0], HEALTH_RANK[UNKNOWN]))


def count_by_state(states: dict[Membership, tuple[str, str | None]]) -> str:
    counts = Counter(pair[0] for pair in states.values())
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# Composite


def put_back(done: list[tuple[Adapter, list[Membership]]], exc: BaseException) -> str:
    """A block refused halfway (a later group denied, unreachable, ...) puts back what it already took
    out, so no host stays out of a load balancer because of another's refusal. Returns the message."""
    restored: list[Membership] = []
    failures: list[str] = []
    for adapter, ms in done:
        try:
            adapter.allow(ms)
            restored.extend(ms)
        except Exception as undo:  # pylint: disable=broad-except  # said in the message, with what stays out
            failures.append(f"{', '.join(m.label() for m in ms)} could not be put back: {undo}")
    message = str(exc)
    if restored:
        message += "; put back what this batch had already left: " + ", ".join(m.label() for m in restored)
    if failures:
        message += "; " + "; ".join(failures)
    return message


class CompositeLoadBalancer(Adapter):
    """Fans every call out to several adapters; memberships are routed by their kind."""

    kind = "composite"

    def __init__(self, adapters: list[Adapter]):
        super().__init__()
        self.adapters = list(adapters)

    @property
    def api_calls(self) -> Counter[str]:  # type: ignore[override]
        total: Counter[str] = Counter()
        for a in self.adapters:
            total.update(a.api_calls)
        return total

    @api_calls.setter
    def api_calls(self, value: Counter[str]) -> None:  # the base __init__ assigns it
        pass

    def handles(self, membership: Membership) -> bool:
        return any(a.handles(membership) for a in self.adapters)

    def _route(self, memberships: list[Membership]) -> list[tuple[Adapter, list[Membership]]]:
        routed: dict[int, list[Membership]] = {}
        for m in memberships:
            for i, a in enumerate(self.adapters):
                if a.handles(m):
                    routed.setdefault(i, []).append(m)
                    break
            else:
                raise LoadBalancerError(
                    f"no load-balancer adapter of kind {m.kind!r} is configured for {m.label()}"
                )
        return [(self.adapters[i], ms) for i, ms in sorted(routed.items())]

    def validate(self) -> None:
        for a in self.adapters:
            a.validate()

    def export_cache(self) -> dict[str, Any]:
        caches = {a.kind: a.export_cache() for a in self.adapters}
        return {kind: cache for kind, cache in caches.items() if cache}

    def import_cache(self, cache: dict[str, Any] | None) -> None:
        for a in self.adapters:
            mine = cache.get(a.kind) if isinstance(cache, dict) else None
            a.import_cache(mine if isinstance(mine, dict) else None)  # read back: anything else teaches nothing

    def lasting_cache(self) -> dict[str, Any]:
        caches = {a.kind: a.lasting_cache() for a in self.adapters}
        return {kind: cache for kind, cache in caches.items() if cache}

    def snapshot(self, instance_ids: list[str]) -> dict[str, list[Membership]]:
        # Each adapter validates its own groups first; a snapshot changes nothing either way.
        out: dict[str, list[Membership]] = {i: [] for i in instance_ids}
        for a in self.adapters:
            for host, ms in a.snapshot(instance_ids).items():
                out.setdefault(host, []).extend(ms)
        return out

    def desired(self, instance_ids: list[str]) -> list[Membership]:
        self.validate()
        return [m for a in self.adapters for m in a.desired(instance_ids)]

    def preflight(self, instance_ids: list[str]) -> None:
        for a in self.adapters:
            a.preflight(instance_ids)

    def block(self, memberships: list[Membership]) -> None:
        routed = self._route(memberships)
        for adapter, ms in routed:  # every group must exist, and its wait be readable, before anything changes
            adapter.validate()
            adapter.prepare_block(ms)
        done: list[tuple[Adapter, list[Membership]]] = []
        for adapter, ms in routed:
            for group in group_memberships(ms).values():  # one call per group, as the adapters make them
                try:
                    adapter.block(group)
                except Exception as exc:
                    if not done:
                        raise
                    raise LoadBalancerError(put_back(done, exc)) from exc
                done.append((adapter, group))

    def allow(self, memberships: list[Membership]) -> None:
        routed = self._route(memberships)
        for adapter, _ms in routed:
            adapter.validate()
        for adapter, ms in routed:
            adapter.allow(ms)

    def _wait(self, name: str, memberships, timeout, progress) -> WaitResult:
        start = self.clock.now()
        result: WaitResult | None = None
        for adapter, ms in self._route(memberships):
            remaining = None if timeout is None else max(0.0, timeout - (self.clock.now() - start))
            r = getattr(adapter, name)(ms, remaining, progress)
            result = r if result is None else result.merge(r)
        if result is None:
            result = WaitResult("drained" if name == "wait_drained" else "healthy")
        result.elapsed = self.clock.now() - start
        return result

    def wait_drained(self, memberships, timeout=None, progress=None) -> WaitResult:
        return self._wait("wait_drained", memberships, timeout, progress)

    def drain_seconds(self, memberships: list[Membership]) -> float | None:
        known = [adapter.drain_seconds(ms) for adapter, ms in self._route(memberships)]
        return None if not known or any(k is None for k in known) else max(k for k in known if k is not None)

    def wait_healthy(self, memberships, timeout=None, progress=None) -> WaitResult:
        return self._wait("wait_healthy", memberships, timeout, progress)

    def health(self, instance_ids: list[str]) -> dict[str, str]:
        per_adapter = [a.health(instance_ids) for a in self.adapters]
        out = {}
        for i in instance_ids:
            registered = [h[i] for h in per_adapter if h.get(i, UNUSED) != UNUSED]
            out[i] = worst_health(registered) if registered else UNUSED
        return out

    def states(self, memberships: list[Membership]) -> dict[Membership, tuple[str, str | None]]:
        out: dict[Membership, tuple[str, str | None]] = {}
        for adapter, ms in self._route(memberships):
            out.update(adapter.states(ms))
        return out
