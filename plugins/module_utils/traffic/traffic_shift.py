# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lambda traffic-shifting configurations turned into a timed plan of alias weights.

Pure and stdlib-only. What CodeDeploy documents, and what this module does:

* ``CodeDeployDefault.LambdaCanary10Percent{5,10,15,30}Minutes``: 10 % at once, the remaining 90 %
  after N minutes.
* ``CodeDeployDefault.LambdaLinear10PercentEvery{1,2,3,10}Minute(s)``: the percentage is shifted
  "at the start of each increment", with an equal interval between increments. The first
  increment is therefore immediate (t = 0), the k-th one at (k - 1) x interval, and the increment
  that reaches 100 % is the promote. Linear 10 % every minute: 0.1 at 0 s, 0.2 at 60 s, ...,
  0.9 at 480 s, promote at 540 s.
* ``CodeDeployDefault.LambdaAllAtOnce``: promote at 0 s.
* Custom ``{type: canary|linear, percentage: P, interval: "5m" | "30s" | 300}``; CodeDeploy's own
  ``TimeBasedCanary``/``TimeBasedLinear`` shapes (minutes) are accepted too. **Better than
  CodeDeploy:** intervals may be given in seconds.

A step of weight 1.0 is the promote (alias moved to the target version, routing cleared); it is
never written as an additional-version weight.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic import parse_number

__all__ = [
    "MAX_SHIFT_SECONDS",
    "PREDEFINED_CONFIGS",
    "ShiftConfig",
    "ShiftConfigError",
    "Step",
    "format_seconds",
    "parse_interval",
    "parse_lambda_config",
    "plan_steps",
]

#: CodeDeploy's limit: at most 2880 minutes from the first to the last traffic shift.
MAX_SHIFT_SECONDS = 2880 * 60

CANARY = "canary"
LINEAR = "linear"
ALL_AT_ONCE = "all_at_once"


class ShiftConfigError(RollwrightError, ValueError):
    """A deployment configuration that cannot be used; the message names the field."""


@dataclass(frozen=True)
class ShiftConfig:
    """A parsed traffic-shifting configuration."""

    type: str  # "canary", "linear" or "all_at_once"
    percentage: float = 100.0  # traffic moved by the canary / each linear increment
    interval_seconds: float = 0.0  # canary bake time / time between linear increments
    name: str | None = None  # the predefined name, if one was given

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "percentage": self.percentage,
            "interval_seconds": self.interval_seconds,
        }


@dataclass(frozen=True)
class Step:
    """One planned traffic change: at ``at_seconds`` after AllowTraffic starts, put ``weight`` of
    the traffic on the target version. ``weight == 1.0`` means promote."""

    at_seconds: float
    weight: float

    @property
    def promote(self) -> bool:
        return self.weight >= 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"at_seconds": self.at_seconds, "weight": self.weight, "promote": self.promote}


def _predefined() -> dict[str, ShiftConfig]:
    table: dict[str, ShiftConfig] = {}
    for minutes in (5, 10, 15, 30):
        name = f"CodeDeployDefault.LambdaCanary10Percent{minutes}Minutes"
        table[name] = ShiftConfig(CANARY, 10, minutes * 60.0, name)
    for minutes in (1, 2, 3, 10):
        unit = "Minute" if minutes == 1 else "Minutes"
        name = f"CodeDeployDefault.LambdaLinear10PercentEvery{minutes}{unit}"
        table[name] = ShiftConfig(LINEAR, 10, minutes * 60.0, name)
    name = "CodeDeployDefault.LambdaAllAtOnce"
    table[name] = ShiftConfig(ALL_AT_ONCE, 100, 0.0, name)
    return table


#: The predefined CodeDeploy Lambda configurations, by their full name.
PREDEFINED_CONFIGS: dict[str, ShiftConfig] = _predefined()


def _lookup_name(name: str, field: str) -> ShiftConfig:
    wanted = name.strip()
    candidates = [wanted]
    if not wanted.startswith("CodeDeployDefault."):
        # Also accept "LambdaCanary10Percent5Minutes" and SAM's "Canary10Percent5Minutes".
        candidates.append("CodeDeployDefault." + wanted)
        candidates.append("CodeDeployDefault.Lambda" + wanted)
    for candidate in candidates:
        for known, config in PREDEFINED_CONFIGS.items():
            if known.lower() == candidate.lower():
                return config
    raise ShiftConfigError(
        f"{field}: unknown deployment configuration {name!r}; expected one of "
        f"{', '.join(sorted(PREDEFINED_CONFIGS))}, or a custom "
        "{type: canary|linear, percentage: 1..99, interval: '5m' | '30s' | seconds}"
    )


_INTERVAL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?)?\s*$", re.I)


def parse_interval(value: Any, field: str = "interval") -> float:
    """``"5m"`` -> 300.0, ``"30s"`` -> 30.0, ``"1h"`` -> 3600.0, ``45`` -> 45.0 (bare numbers are
    seconds). Must be greater than zero."""
    if isinstance(value, bool):
        raise ShiftConfigError(f"{field}: expected a duration such as '5m', '30s' or a number of seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _INTERVAL_RE.match(value)
        if not match:
            raise ShiftConfigError(
                f"{field}: expected a duration such as '5m', '30s', '1h' or a number of seconds, got {value!r}"
            )
        number = float(match.group(1))
        unit = (match.group(2) or "s").lower()
        factor = 3600.0 if unit.startswith("h") else 60.0 if unit.startswith("m") else 1.0
        seconds = number * factor
    else:
        raise ShiftConfigError(f"{field}: expected a duration such as '5m', '30s' or a number of seconds, got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ShiftConfigError(f"{field}: the interval must be greater than 0 seconds, got {value!r}")
    return seconds


def _parse_percentage(value: Any, field: str) -> float:
    number = parse_number(value, ShiftConfigError(f"{field}: expected a percentage from 1 to 99, got {value!r}"))
    if not math.isfinite(number) or number < 1 or number > 99:
        hint = (
            " (100 % at once is CodeDeployDefault.LambdaAllAtOnce)"
            if math.isfinite(number) and number >= 100
            else ""
        )
        raise ShiftConfigError(f"{field}: the percentage must be from 1 to 99, got {value!r}{hint}")
    return int(number) if number.is_integer() else number


def _custom(config: dict[str, Any], field: str) -> ShiftConfig:
    # CodeDeploy's TrafficRoutingConfig shapes (intervals in minutes).
    for key, kind, pct_key, int_key in (
        ("TimeBasedCanary", CANARY, "CanaryPercentage", "CanaryInterval"),
        ("TimeBasedLinear", LINEAR, "LinearPercentage", "LinearInterval"),
    ):
        for actual_key in config:
            if str(actual_key).lower() == key.lower() and isinstance(config[actual_key], dict):
                inner = {str(k).lower(): v for k, v in config[actual_key].items()}
                pct = inner.get(pct_key.lower())
                minutes = inner.get(int_key.lower())
                if pct is None or minutes is None:
                    raise ShiftConfigError(f"{field}.{actual_key}: needs {pct_key} and {int_key} (minutes)")
                if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
                    raise ShiftConfigError(f"{field}.{actual_key}.{int_key}: expected whole minutes, got {minutes!r}")
                return ShiftConfig(
                    kind,
                    _parse_percentage(pct, f"{field}.{actual_key}.{pct_key}"),
                    parse_interval(float(minutes) * 60.0, f"{field}.{actual_key}.{int_key}"),
                )

    known = {"type", "percentage", "interval"}
    unknown = sorted(str(k) for k in config if k not in known)
    if unknown:
        raise ShiftConfigError(
            f"{field}: unknown key(s) {', '.join(unknown)}; a custom configuration takes type, percentage, interval"
        )
    kind = str(config.get("type") or "").strip().lower().replace("-", "_")
    if kind in ("allatonce", "all_at_once", "all"):
        return ShiftConfig(ALL_AT_ONCE, 100, 0.0)
    if kind not in (CANARY, LINEAR):
        raise ShiftConfigError(f"{field}.type: expected canary, linear or all_at_once, got {config.get('type')!r}")
    if config.get("percentage") is None:
        raise ShiftConfigError(f"{field}.percentage: required for a {kind} configuration (1..99)")
    if config.get("interval") is None:
        raise ShiftConfigError(f"{field}.interval: required for a {kind} configuration ('5m', '30s' or seconds)")
    return ShiftConfig(
        kind,
        _parse_percentage(config["percentage"], f"{field}.percentage"),
        parse_interval(config["interval"], f"{field}.interval"),
    )


def parse_lambda_config(config: Any, field: str = "deployment_config") -> ShiftConfig:
    """A predefined name, a custom dict, or an already parsed ShiftConfig -> ShiftConfig.

    Raises ShiftConfigError naming ``field`` on anything unusable, including a plan whose first
    to last traffic shift would exceed CodeDeploy's 2880 minutes.
    """
    if isinstance(config, ShiftConfig):
        parsed = config
    elif config is None or (isinstance(config, str) and not config.strip()):
        raise ShiftConfigError(f"{field}: required; a predefined name such as CodeDeployDefault.LambdaAllAtOnce or a custom dict")
    elif isinstance(config, str):
        parsed = _lookup_name(config, field)
    elif isinstance(config, dict):
        parsed = _custom(config, field)
    else:
        raise ShiftConfigError(f"{field}: expected a configuration name or a dict, got {type(config).__name__}")
    steps = plan_steps(parsed)
    span = steps[-1].at_seconds - steps[0].at_seconds
    if span > MAX_SHIFT_SECONDS:
        raise ShiftConfigError(
            f"{field}: the first to last traffic shift would take {format_seconds(span)}; "
            f"the limit is 2880 minutes (48 h)"
        )
    return parsed


def plan_steps(config: ShiftConfig) -> list[Step]:
    """The timed steps of a configuration, ending with the promote step (weight 1.0)."""
    if config.type == ALL_AT_ONCE:
        return [Step(0.0, 1.0)]
    if config.type == CANARY:
        return [Step(0.0, round(config.percentage / 100.0, 6)), Step(float(config.interval_seconds), 1.0)]
    if config.type == LINEAR:
        steps: list[Step] = []
        k = 1
        while True:
            percent = k * config.percentage
            at = (k - 1) * float(config.interval_seconds)
            if percent >= 100 - 1e-9:
                steps.append(Step(at, 1.0))
                return steps
            steps.append(Step(at, round(percent / 100.0, 6)))
            k += 1
    raise ShiftConfigError(f"deployment_config.type: unknown type {config.type!r}")


def format_seconds(seconds: float) -> str:
    """1.5 -> '1.5s', 90 -> '1m30s', 3600 -> '1h0m0s'."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s"
