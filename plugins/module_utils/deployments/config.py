# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deployment configurations (minimum healthy hosts) and the in-place batch planner.

CodeDeploy's EC2 / on-premises rules, reproduced exactly (see docs/deployment-configs.md):

* A configuration is a minimum number of healthy hosts: ``HOST_COUNT`` (integer >= 0) or
  ``FLEET_PERCENT`` (0..99) of all hosts of the deployment, a percentage being converted to a
  host count at the start, rounding up. ``CodeDeployDefault.OneAtATime`` (the default) keeps all
  hosts but one healthy, ``CodeDeployDefault.HalfAtATime`` is ``FLEET_PERCENT`` 50 and
  ``CodeDeployDefault.AllAtOnce`` is ``HOST_COUNT`` 0.
* A minimum that is not below the number of hosts leaves no host to deploy to: the deployment
  fails before anything is touched.
* Hosts are taken in this order: unhealthy, unknown revision, old revision, current revision
  (inventory order inside each class). A healthy host whose last install of this very revision
  succeeded is skipped and counts as a success on the new revision.
* The healthy count never drops below the minimum: a batch holds at most ``hosts - minimum``
  hosts, and at most ``healthy_now - minimum`` hosts that are healthy now. A host that fails stays
  out (broken). Hosts unhealthy at the start are not counted as healthy, so deploying them takes
  nothing down. When the remaining hosts can no longer be deployed without breaking the minimum,
  the deployment stops and fails.
* Success: at least ``max(minimum, 1)`` hosts on the new revision (deployed or skipped). With
  OneAtATime this means the deployment succeeds even if the last host fails, fails as soon as any
  other host fails, and a one-host group must succeed.

Controller-side, stdlib only, no Ansible imports. The planner's whole state is a plain dict
(``to_dict``/``from_dict``) so that the orchestration can keep it between Ansible tasks.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Collection, Iterable, Mapping
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

__all__ = [
    "DEFAULT_CONFIG",
    "PREDEFINED",
    "BatchPlanner",
    "DeploymentConfig",
    "DeploymentConfigError",
    "HostInfo",
    "Outcome",
    "minimum_healthy_count",
    "order_hosts",
    "plan_preview",
    "resolve_config",
]

HOST_COUNT = "HOST_COUNT"
FLEET_PERCENT = "FLEET_PERCENT"
# What CodeDeploy's GetDeploymentConfig reports for OneAtATime; it cannot be set by users.
MOST_CONCURRENCY = "MOST_CONCURRENCY"

REVISIONS = ("unknown", "old", "current")

STATE_VERSION = 1


class DeploymentConfigError(RollwrightError, ValueError):
    """A deployment configuration or a fleet that cannot be deployed; the message names the field."""


@dataclass(frozen=True)
class DeploymentConfig:
    """A resolved EC2 / on-premises deployment configuration.

    ``name`` is canonical and resolves back to the same configuration: a predefined name
    (``CodeDeployDefault.HalfAtATime``) or ``HOST_COUNT:N`` / ``FLEET_PERCENT:N`` for a custom one.
    """

    name: str
    minimum_type: str  # HOST_COUNT | FLEET_PERCENT | MOST_CONCURRENCY (OneAtATime only)
    minimum_value: int
    one_at_a_time: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The CodeDeploy-shaped description (for records and module results)."""
        return {
            "name": self.name,
            "minimum_healthy_hosts": {"type": self.minimum_type, "value": self.minimum_value},
        }


ONE_AT_A_TIME = DeploymentConfig("CodeDeployDefault.OneAtATime", MOST_CONCURRENCY, 1, True)
HALF_AT_A_TIME = DeploymentConfig("CodeDeployDefault.HalfAtATime", FLEET_PERCENT, 50)
ALL_AT_ONCE = DeploymentConfig("CodeDeployDefault.AllAtOnce", HOST_COUNT, 0)
DEFAULT_CONFIG = ONE_AT_A_TIME
PREDEFINED: dict[str, DeploymentConfig] = {c.name: c for c in (ONE_AT_A_TIME, HALF_AT_A_TIME, ALL_AT_ONCE)}
_PREDEFINED_BY_KEY = {c.name.split(".", 1)[1].lower(): c for c in PREDEFINED.values()}

_EXPECTED = (
    "expected a predefined configuration name (CodeDeployDefault.OneAtATime, CodeDeployDefault.HalfAtATime, "
    "CodeDeployDefault.AllAtOnce; the 'CodeDeployDefault.' prefix is optional, case does not matter), "
    "'HOST_COUNT:N', 'FLEET_PERCENT:N', 'N%' or {minimum_healthy_hosts: {type: HOST_COUNT|FLEET_PERCENT, value: N}}"
)
_SCALAR_RE = re.compile(r"^\s*([A-Za-z_]+)\s*:\s*(\S+)\s*$")
_PERCENT_RE = re.compile(r"^\s*(\S+?)\s*%\s*$")


def _key(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _parse_value(raw: Any, minimum_type: str, path: str) -> int:
    if minimum_type == FLEET_PERCENT:
        expected = "an integer from 0 to 99 for FLEET_PERCENT"
    else:
        expected = "an integer >= 0 for HOST_COUNT"
    if isinstance(raw, bool):
        value = None
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
        value = int(raw)
    else:
        value = None
    if value is None or value < 0 or (minimum_type == FLEET_PERCENT and value > 99):
        raise DeploymentConfigError(f"{path}: expected {expected}, got {raw!r}")
    return value


def _parse_type(raw: Any, path: str) -> str:
    if isinstance(raw, str):
        upper = raw.strip().upper()
        if upper in (HOST_COUNT, FLEET_PERCENT):
            return upper
        if upper == MOST_CONCURRENCY:
            raise DeploymentConfigError(
                f"{path}: MOST_CONCURRENCY is what CodeDeploy reports for CodeDeployDefault.OneAtATime and "
                "cannot be set; use the name CodeDeployDefault.OneAtATime"
            )
    raise DeploymentConfigError(f"{path}: expected HOST_COUNT or FLEET_PERCENT, got {raw!r}")


def _custom(minimum_type: str, value: int) -> DeploymentConfig:
    return DeploymentConfig(f"{minimum_type}:{value}", minimum_type, value, False)


def _resolve_name(text: str, field_name: str) -> DeploymentConfig:
    stripped = text.strip()
    key = stripped.lower()
    if key.startswith("codedeploydefault."):
        key = key.split(".", 1)[1]
    if key in _PREDEFINED_BY_KEY:
        return _PREDEFINED_BY_KEY[key]
    if key.startswith(("lambda", "ecs")):
        raise DeploymentConfigError(
            f"{field_name}: {stripped!r} is a {'Lambda' if key.startswith('lambda') else 'ECS'} configuration; "
            f"in-place and blue/green EC2 deployments take minimum healthy hosts: {_EXPECTED}"
        )
    match = _SCALAR_RE.match(stripped)
    if match:
        minimum_type = _parse_type(match.group(1), f"{field_name} (type before ':')")
        return _custom(minimum_type, _parse_value(match.group(2), minimum_type, f"{field_name} (value after ':')"))
    match = _PERCENT_RE.match(stripped)
    if match:
        return _custom(FLEET_PERCENT, _parse_value(match.group(1), FLEET_PERCENT, f"{field_name} (percentage)"))
    raise DeploymentConfigError(f"{field_name}: {_EXPECTED}, got {text!r}")


def _resolve_mapping(config: Mapping[Any, Any], field_name: str) -> DeploymentConfig:
    outer = [k for k in config if isinstance(k, str) and _key(k) == "minimumhealthyhosts"]
    unknown = [k for k in config if k not in outer]
    if unknown:
        raise DeploymentConfigError(
            f"{field_name}: unknown key {unknown[0]!r}; expected only minimum_healthy_hosts (or minimumHealthyHosts)"
        )
    if len(outer) != 1:
        raise DeploymentConfigError(
            f"{field_name}: expected exactly one of minimum_healthy_hosts / minimumHealthyHosts, "
            f"got {len(outer)}" + (f" ({', '.join(outer)})" if outer else "")
        )
    path = f"{field_name}.{outer[0]}"
    inner = config[outer[0]]
    if not isinstance(inner, Mapping):
        raise DeploymentConfigError(f"{path}: expected a mapping {{type: HOST_COUNT|FLEET_PERCENT, value: N}}, got {inner!r}")
    keys: dict[str, Any] = {}
    for k in inner:
        lowered = k.lower() if isinstance(k, str) else k
        if lowered not in ("type", "value"):
            raise DeploymentConfigError(f"{path}: unknown key {k!r}; expected type and value")
        if lowered in keys:
            raise DeploymentConfigError(f"{path}: {lowered} given twice ({keys[lowered]!r} and {k!r})")
        keys[lowered] = k
    for needed in ("type", "value"):
        if needed not in keys:
            raise DeploymentConfigError(f"{path}.{needed}: required")
    minimum_type = _parse_type(inner[keys["type"]], f"{path}.{keys['type']}")
    value = _parse_value(inner[keys["value"]], minimum_type, f"{path}.{keys['value']}")
    return _custom(minimum_type, value)


def resolve_config(config: "str | Mapping[str, Any] | DeploymentConfig | None", field: str = "deployment_config") -> DeploymentConfig:
    """Resolve what a user wrote into a DeploymentConfig; errors name ``field`` and the path inside it.

    Accepted (every form but the mapping is a scalar, for AWX surveys):

    * ``None`` or ``""``: ``CodeDeployDefault.OneAtATime`` (CodeDeploy's default);
    * a predefined name, case-insensitive, the ``CodeDeployDefault.`` prefix optional;
    * ``"HOST_COUNT:N"``, ``"FLEET_PERCENT:N"`` (type case-insensitive) or ``"N%"`` (= FLEET_PERCENT);
    * ``{minimum_healthy_hosts: {type: ..., value: N}}``, also spelt ``minimumHealthyHosts`` /
      ``MinimumHealthyHosts`` with ``type``/``Type`` and ``value``/``Value``; N may be an integer
      or a string of digits;
    * an already resolved DeploymentConfig (returned as is).
    """
    if isinstance(config, DeploymentConfig):
        return config
    if config is None:
        return DEFAULT_CONFIG
    if isinstance(config, str):
        if not config.strip():
            return DEFAULT_CONFIG
        return _resolve_name(config, field)
    if isinstance(config, Mapping):
        return _resolve_mapping(config, field)
    raise DeploymentConfigError(f"{field}: {_EXPECTED}, got {type(config).__name__} {config!r}")


def minimum_healthy_count(config: "DeploymentConfig | str | Mapping[str, Any] | None", total_hosts: int) -> int:
    """The minimum number of healthy hosts for a deployment to ``total_hosts`` hosts.

    FLEET_PERCENT rounds up (9 hosts at 50% -> 5); OneAtATime is all hosts but one (0 for one host).
    """
    cfg = resolve_config(config)
    if total_hosts < 0:
        raise ValueError(f"total_hosts: expected an integer >= 0, got {total_hosts}")
    if cfg.one_at_a_time:
        return max(total_hosts - 1, 0)
    if cfg.minimum_type == FLEET_PERCENT:
        return -(-total_hosts * cfg.minimum_value // 100)
    return cfg.minimum_value


@dataclass(frozen=True)
class HostInfo:
    """What the planner needs to know about one host at the start of a deployment.

    ``healthy``: False = known unhealthy (failing load-balancer health, unreachable, ...);
    True or None (not known, e.g. no load balancer) = counted as healthy.
    ``revision``: which revision the host has: 'unknown', 'old' (another revision) or 'current'
    (the revision being deployed). ``last_install_succeeded``: whether the host's last install of
    the current revision succeeded (only meaningful with revision 'current').
    """

    name: str
    healthy: "bool | None" = None
    revision: str = "unknown"
    last_install_succeeded: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"host name: expected a non-empty string, got {self.name!r}")
        if self.revision not in REVISIONS:
            raise ValueError(f"host {self.name}: revision: expected one of {', '.join(REVISIONS)}, got {self.revision!r}")
        if self.healthy not in (True, False, None):
            raise ValueError(f"host {self.name}: healthy: expected true, false or null, got {self.healthy!r}")

    @property
    def counts_healthy(self) -> bool:
        """Counted in the healthy hosts at the start (unknown health is presumed healthy)."""
        return self.healthy is not False

    @property
    def already_deployed(self) -> bool:
        """On this revision, its last install of it succeeded, and not known unhealthy: skipped."""
        return self.revision == "current" and bool(self.last_install_succeeded) and self.healthy is not False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HostInfo":
        return cls(
            name=data["name"],
            healthy=data.get("healthy"),
            revision=data.get("revision", "unknown"),
            last_install_succeeded=bool(data.get("last_install_succeeded", False)),
        )


def _order_class(host: HostInfo) -> int:
    if host.healthy is False:
        return 0
    return 1 + REVISIONS.index(host.revision)


def order_hosts(hosts: Iterable[HostInfo]) -> list[HostInfo]:
    """Hosts in deployment order: unhealthy, unknown revision, old revision, current revision.

    Stable: inside a class the given (inventory) order is kept. A host on the current revision that
    is known unhealthy is in the first class.
    """
    return sorted(hosts, key=_order_class)


@dataclass
class Outcome:
    """Where a deployment stands. ``pending`` lists the hosts not finished (including in_progress)."""

    status: str  # Succeeded | Failed | InProgress
    reason: str
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class BatchPlanner:
    """Plans in-place batches under a deployment configuration and judges the outcome.

    Use: ``validate()``; then repeatedly ``next_batch()`` (empty when done or stopped), deploy the
    batch, ``record(host, succeeded)`` for each of its hosts; finally ``outcome()``. Calling
    ``next_batch()`` while hosts of the last batch are not recorded returns those hosts again (a
    resumed orchestration redeploys them). The state survives ``to_dict()`` / ``from_dict()``.
    """

    def __init__(self, config: "DeploymentConfig | str | Mapping[str, Any] | None", hosts: Iterable[HostInfo]):
        self.config = resolve_config(config)
        self.hosts: list[HostInfo] = list(hosts)
        seen: set[str] = set()
        for host in self.hosts:
            if not isinstance(host, HostInfo):
                raise TypeError(f"hosts: expected HostInfo items, got {type(host).__name__}")
            if host.name in seen:
                raise ValueError(f"hosts: host {host.name!r} is listed twice")
            seen.add(host.name)
        self._by_name = {h.name: h for h in self.hosts}
        self.order: list[HostInfo] = order_hosts(self.hosts)
        self.minimum: int = minimum_healthy_count(self.config, len(self.hosts))
        self.skipped: list[str] = [h.name for h in self.order if h.already_deployed]
        self.succeeded: list[str] = []
        self.failed: list[str] = []
        self.in_flight: list[str] = []
        self.batches: list[list[str]] = []
        self.stopped_reason: "str | None" = None

    # -- configuration checks -------------------------------------------------------------------

    @property
    def total(self) -> int:
        return len(self.hosts)

    @property
    def max_batch_size(self) -> int:
        """Hosts per batch when every host is healthy: hosts - minimum (OneAtATime: 1)."""
        return max(self.total - self.minimum, 0)

    @property
    def required_successes(self) -> int:
        """Hosts that must end on the new revision: the minimum, and at least one."""
        return max(self.minimum, 1)

    def _describe_minimum(self) -> str:
        """E.g. 'minimum 5 healthy of 9 hosts (CodeDeployDefault.HalfAtATime: 50%, rounded up)'."""
        cfg = self.config
        if cfg.one_at_a_time:
            how = "all hosts but one"
        elif cfg.minimum_type == FLEET_PERCENT:
            how = f"FLEET_PERCENT {cfg.minimum_value}%, rounded up"
        else:
            how = f"HOST_COUNT {cfg.minimum_value}"
        if cfg.name in PREDEFINED:
            how = f"{cfg.name}: {how}"
        return f"minimum {self.minimum} healthy of {_plural(self.total, 'host')} ({how})"

    def validation_error(self) -> "str | None":
        if self.total == 0:
            return "hosts: no hosts to deploy to (the deployment group matched no host)"
        if self.minimum >= self.total:
            return (
                f"deployment_config: {self._describe_minimum()} leaves no host to take out of service, so the "
                "deployment cannot start and nothing was touched; lower the minimum healthy hosts or add hosts"
            )
        return None

    def validate(self) -> None:
        """Raise DeploymentConfigError when the deployment cannot start (checked before touching anything)."""
        error = self.validation_error()
        if error:
            raise DeploymentConfigError(error)

    # -- state ----------------------------------------------------------------------------------

    def _done(self) -> set[str]:
        return set(self.succeeded) | set(self.failed) | set(self.skipped)

    def _pending(self) -> list[HostInfo]:
        """Hosts not deployed yet and not in flight, in deployment order."""
        excluded = self._done() | set(self.in_flight)
        return [h for h in self.order if h.name not in excluded]

    def waiting(self) -> list[str]:
        """Hosts not deployed yet and not in flight, in deployment order."""
        return [h.name for h in self._pending()]

    def healthy_now(self) -> int:
        """Hosts in service right now: healthy ones not yet touched, plus those on the new revision."""
        pending_healthy = sum(1 for h in self._pending() if h.counts_healthy)
        return pending_healthy + len(self.succeeded) + len(self.skipped)

    def on_new_revision(self) -> int:
        return len(self.succeeded) + len(self.skipped)

    def _compose_batch(self, within: Collection[str] | None = None) -> list[str]:
        budget = self.healthy_now() - self.minimum  # healthy hosts that may go down now
        batch: list[str] = []
        for host in self._pending():
            if within is not None and host.name not in within:
                continue
            if len(batch) >= self.max_batch_size:
                break
            if host.counts_healthy:
                if budget <= 0:
                    break
                budget -= 1
            batch.append(host.name)
        return batch

    def should_stop(self) -> "str | None":
        """Why the deployment must stop now (it then fails), or None."""
        error = self.validation_error()
        if error:
            return error
        if self.stopped_reason:
            return self.stopped_reason
        pending = self._pending()
        remaining = len(pending) + len(self.in_flight)
        if remaining == 0:
            return None
        failed_note = f" ({_plural(len(self.failed), 'host')} failed: {_names(self.failed)})" if self.failed else ""
        reachable = self.on_new_revision() + remaining
        if reachable < self.required_successes:
            return (
                f"at most {reachable} of {_plural(self.total, 'host')} can still end on the new revision and "
                f"{self.required_successes} must{failed_note}; the deployment stops"
            )
        capacity = self.total - len(self.failed)
        if any(h.counts_healthy for h in pending) and capacity <= self.minimum:
            return (
                f"the minimum of {_plural(self.minimum, 'healthy host')} can no longer be kept while deploying the "
                f"remaining hosts: at most {capacity} can be healthy{failed_note}; the deployment stops before "
                f"taking {_names([h.name for h in pending])} out of service"
            )
        if not self.in_flight and not self._compose_batch():
            return (
                f"no host can be taken out of service without going below the minimum of "
                f"{_plural(self.minimum, 'healthy host')} ({self.healthy_now()} healthy now){failed_note}"
            )
        return None

    def next_batch(self, within: Collection[str] | None = None) -> list[str]:
        """The next hosts to deploy, in order; empty when done or stopped.

        ``within``: only hosts of these may be picked (the hosts an Ansible ``serial`` play batch holds);
        the budget of hosts that may go down is the same, so a batch is never larger than without it.
        Raises DeploymentConfigError when the deployment cannot start (see validate()).
        """
        self.validate()
        if self.in_flight:
            return list(self.in_flight)
        reason = self.should_stop()
        if reason:
            self.stopped_reason = reason
            return []
        batch = self._compose_batch(within)
        if batch:
            self.in_flight = list(batch)
            self.batches.append(list(batch))
        return batch

    def record(self, host: str, succeeded: bool) -> None:
        """Record the result of one host of the current batch (every lifecycle event passed or not)."""
        if host not in self.in_flight:
            if host in self._done():
                raise ValueError(f"host {host!r}: result already recorded")
            if host not in self._by_name:
                raise ValueError(f"host {host!r}: not a host of this deployment")
            raise ValueError(f"host {host!r}: not in the current batch ({_names(self.in_flight) or 'none in progress'})")
        self.in_flight.remove(host)
        (self.succeeded if succeeded else self.failed).append(host)

    def outcome(self) -> Outcome:
        pending = [h.name for h in self._pending()]
        lists = dict(
            succeeded=list(self.succeeded),
            failed=list(self.failed),
            skipped=list(self.skipped),
            pending=list(self.in_flight) + pending,
            in_progress=list(self.in_flight),
        )
        error = self.validation_error()
        if error:
            return Outcome("Failed", error, **lists)
        if self.stopped_reason:
            return Outcome("Failed", self.stopped_reason, **lists)
        if not self.in_flight and pending:
            reason = self.should_stop()  # stopped even if next_batch() was not asked
            if reason:
                return Outcome("Failed", reason, **lists)
        if self.in_flight or pending:
            done = len(self.succeeded) + len(self.failed) + len(self.skipped)
            return Outcome(
                "InProgress",
                f"{done} of {_plural(self.total, 'host')} done, {len(self.in_flight)} in progress, "
                f"{len(pending)} waiting; minimum {_plural(self.minimum, 'healthy host')}",
                **lists,
            )
        on_new = self.on_new_revision()
        summary = (
            f"{on_new} of {_plural(self.total, 'host')} on the new revision "
            f"({len(self.succeeded)} deployed, {len(self.skipped)} already on it); "
        )
        if on_new >= self.required_successes:
            reason = summary + f"{self.required_successes} required ({self._describe_minimum()})"
            if self.failed:
                reason += f"; failed: {_names(self.failed)}, within what the minimum allows"
            return Outcome("Succeeded", reason, **lists)
        if self.minimum == 0:
            why = "at least one host must succeed"
        else:
            why = f"{self.required_successes} required ({self._describe_minimum()})"
        return Outcome("Failed", summary + why + f"; failed: {_names(self.failed)}", **lists)

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The planner's whole state as JSON-safe data."""
        return {
            "version": STATE_VERSION,
            "config": self.config.name,
            "minimum": self.minimum,
            "hosts": [h.to_dict() for h in self.hosts],
            "succeeded": list(self.succeeded),
            "failed": list(self.failed),
            "in_flight": list(self.in_flight),
            "batches": [list(b) for b in self.batches],
            "stopped_reason": self.stopped_reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BatchPlanner":
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            raise ValueError(f"planner state: expected a mapping with version {STATE_VERSION}")
        planner = cls(data["config"], [HostInfo.from_dict(h) for h in data["hosts"]])
        if data.get("minimum") is not None and data["minimum"] != planner.minimum:
            raise ValueError(f"planner state: minimum {data['minimum']} does not match the configuration ({planner.minimum})")
        known = set(planner._by_name)
        for key in ("succeeded", "failed", "in_flight"):
            for name in data.get(key, []):
                if name not in known:
                    raise ValueError(f"planner state: {key}: unknown host {name!r}")
        planner.succeeded = list(data.get("succeeded", []))
        planner.failed = list(data.get("failed", []))
        planner.in_flight = list(data.get("in_flight", []))
        planner.batches = [list(b) for b in data.get("batches", [])]
        planner.stopped_reason = data.get("stopped_reason")
        return planner


def plan_preview(config: "DeploymentConfig | str | Mapping[str, Any] | None", hosts: Iterable[HostInfo]) -> list[list[str]]:
    """The batches if every host succeeds (check mode / dry run). Raises DeploymentConfigError if it cannot start."""
    planner = BatchPlanner(config, hosts)
    planner.validate()
    batches: list[list[str]] = []
    while True:
        batch = planner.next_batch()
        if not batch:
            return batches
        batches.append(batch)
        for name in batch:
            planner.record(name, True)
