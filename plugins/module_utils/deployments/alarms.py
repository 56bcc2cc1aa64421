# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CloudWatch alarms and automatic rollback settings of a deployment (CodeDeploy's rules).

- Up to 10 alarms per deployment; all are read with ONE ``DescribeAlarms`` call.
- An alarm already in ALARM refuses the deployment before anything is touched; an alarm that goes
  into ALARM while it runs stops it (status Stopped, the alarm and since when in the error).
- ``ignore_poll_alarm_failure`` (default false): when the alarms cannot be read (API error, an
  alarm name that does not exist), the deployment stops; with true, it goes on.
- Automatic rollback (``on_failure``, ``on_alarm``) is off unless asked for, as in CodeDeploy.

Controller side, stdlib only: the CloudWatch client is handed in.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Optional
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.inputs import split_list
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

MAX_ALARMS = 10
_TRUE = ("1", "true", "yes", "on", "y", "t")
_FALSE = ("0", "false", "no", "off", "n", "f")


class AlarmConfigError(RollwrightError, ValueError):
    """The auto rollback / alarm settings are malformed (the message names the field)."""


def _bool(value: Any, field_name: str) -> Optional[bool]:
    """True/False, or None for 'not set' (None or an empty string, as surveys send)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise AlarmConfigError(f"{field_name}: expected true or false, got {value!r}")


def _names(value: Any, field_name: str) -> list[str]:
    return split_list(value, field_name, AlarmConfigError, "alarm names")


@dataclass
class AutoRollback:
    """``rollwright_auto_rollback`` resolved."""

    on_failure: bool = False
    on_alarm: bool = False
    alarms: list = field(default_factory=list)
    ignore_poll_alarm_failure: bool = False

    def to_dict(self) -> dict:
        return {"on_failure": self.on_failure, "on_alarm": self.on_alarm, "alarms": list(self.alarms),
                "ignore_poll_alarm_failure": self.ignore_poll_alarm_failure}

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "AutoRollback":
        data = data or {}
        return cls(bool(data.get("on_failure")), bool(data.get("on_alarm")), list(data.get("alarms") or []),
                   bool(data.get("ignore_poll_alarm_failure")))

    def applies(self, status: str, cause: Optional[str]) -> bool:
        """Whether a deployment that ended with ``status`` (cause ``alarm`` or not) is rolled back."""
        if status == "Failed":
            return self.on_failure
        if status == "Stopped" and cause == "alarm":
            return self.on_alarm
        return False


def parse_auto_rollback(value: Any = None, *, on_failure: Any = None, on_alarm: Any = None, alarms: Any = None,
                        ignore_poll_alarm_failure: Any = None, field_name: str = "rollwright_auto_rollback") -> AutoRollback:
    """The dict form, overridden by the survey-friendly scalars when they are set (not empty).

    Scalars: ``rollwright_auto_rollback_on_failure``, ``..._on_alarm`` (true/false strings),
    ``..._alarms`` (comma-separated names, added to the dict's), ``..._ignore_poll_alarm_failure``.
    """
    if value in (None, ""):
        value = {}
    if not isinstance(value, dict):
        raise AlarmConfigError(f"{field_name}: expected a dict with on_failure, on_alarm, alarms, "
                               f"ignore_poll_alarm_failure, got {value!r}")
    unknown = set(value) - {"on_failure", "on_alarm", "alarms", "ignore_poll_alarm_failure", "enabled"}
    if unknown:
        raise AlarmConfigError(f"{field_name}: unknown key(s) {sorted(unknown)}; expected on_failure, on_alarm, "
                               "alarms, ignore_poll_alarm_failure")
    result = AutoRollback(
        on_failure=bool(_bool(value.get("on_failure"), f"{field_name}.on_failure")),
        on_alarm=bool(_bool(value.get("on_alarm"), f"{field_name}.on_alarm")),
        alarms=_names(value.get("alarms"), f"{field_name}.alarms"),
        ignore_poll_alarm_failure=bool(_bool(value.get("ignore_poll_alarm_failure"),
                                             f"{field_name}.ignore_poll_alarm_failure")),
    )
    if _bool(value.get("enabled"), f"{field_name}.enabled") is False:
        result.on_failure = result.on_alarm = False
    for name, scalar in (("on_failure", on_failure), ("on_alarm", on_alarm),
                         ("ignore_poll_alarm_failure", ignore_poll_alarm_failure)):
        parsed = _bool(scalar, f"{field_name}_{name}")
        if parsed is not None:
            setattr(result, name, parsed)
    for name in _names(alarms, f"{field_name}_alarms"):
        if name not in result.alarms:
            result.alarms.append(name)
    if len(result.alarms) > MAX_ALARMS:
        raise AlarmConfigError(f"{field_name}.alarms: at most {MAX_ALARMS} alarms per deployment (as CodeDeploy), "
                               f"got {len(result.alarms)}")
    return result


def _when(value: Any) -> Optional[str]:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value) if value else None


@dataclass
class AlarmCheck:
    """One reading of the alarms: the ones in ALARM, or why they could not be read."""

    firing: list = field(default_factory=list)  # [{name, since, reason}]
    error: Optional[str] = None

    def describe_firing(self) -> str:
        return "; ".join(f"alarm {a['name']} in ALARM since {a['since'] or '?'}"
                         + (f" ({a['reason']})" if a.get("reason") else "") for a in self.firing)

    def stop_reason(self, ignore_poll_alarm_failure: bool) -> Optional[str]:
        """Why the deployment must stop now, or None."""
        if self.firing:
            return self.describe_firing()
        if self.error and not ignore_poll_alarm_failure:
            return (f"cannot read the alarms ({self.error}); stopping as ignore_poll_alarm_failure is false")
        return None


def read_alarm_states(cloudwatch: Any, names: list) -> tuple[dict, list]:
    """The named alarms as DescribeAlarms returns them (``{name: alarm}``, every page read) and the
    names CloudWatch does not know. A failed call raises the client's error: the caller judges it."""
    found: dict = {}
    token = None
    while True:
        kwargs: dict = {"AlarmNames": list(names), "AlarmTypes": ["MetricAlarm", "CompositeAlarm"], "MaxRecords": 100}
        if token:
            kwargs["NextToken"] = token
        resp = cloudwatch.describe_alarms(**kwargs)
        for item in list(resp.get("MetricAlarms") or []) + list(resp.get("CompositeAlarms") or []):
            found[item.get("AlarmName")] = item
        token = resp.get("NextToken")
        if not token:
            return found, [n for n in names if n not in found]


def missing_alarms_text(missing: list) -> str:
    return f"alarm(s) not found in CloudWatch: {', '.join(missing)}"


def check_alarms(cloudwatch: Any, names: list) -> AlarmCheck:
    """Read every alarm (one DescribeAlarms call for up to 100). A missing alarm is a read error."""
    if not names:
        return AlarmCheck()
    try:
        found, missing = read_alarm_states(cloudwatch, names)
    except Exception as exc:  # pylint: disable=broad-except  # any failure to read is judged by the caller
        return AlarmCheck(error=f"DescribeAlarms failed: {exc}")
    firing = [{"name": n, "since": _when(found[n].get("StateUpdatedTimestamp")), "reason": found[n].get("StateReason")}
              for n in names if n in found and found[n].get("StateValue") == "ALARM"]
    error = missing_alarms_text(missing) if missing else None
    return AlarmCheck(firing=firing, error=error)


class AlarmWatch:
    """What the engine asks between steps: ``stop_reason()`` (None = go on)."""

    def __init__(self, cloudwatch: Any, names: list, ignore_poll_alarm_failure: bool = False):
        self.cloudwatch = cloudwatch
        self.names = list(names)
        self.ignore = bool(ignore_poll_alarm_failure)
        self.last: Optional[AlarmCheck] = None

    def stop_reason(self) -> Optional[str]:
        if not self.names:
            return None
        self.last = check_alarms(self.cloudwatch, self.names)
        return self.last.stop_reason(self.ignore)
