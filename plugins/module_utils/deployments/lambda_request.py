# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a Lambda deployment is asked to do: the module options, the Lambda AppSpec, a validated request.

Read only and plain Python: every bad input is a :class:`LambdaDeployError` naming its field; nothing
is read from AWS here (the engine, lambda_deploy.py, checks the function, alias and versions).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.deployment_id import DEPLOYMENT_ID_RE
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.traffic_shift import (
    ShiftConfig,
    ShiftConfigError,
    parse_lambda_config,
)

LATEST = "$LATEST"
_VERSION_RE = re.compile(r"^[0-9]+$")

#: Module options (without the amazon.aws connection options), shared by module and action plugin.
ARGUMENT_SPEC: dict[str, Any] = {
    "function_name": {"type": "str"},
    "alias": {"type": "str"},
    "target_version": {"type": "str"},
    "publish": {"type": "bool", "default": False},
    "code": {
        "type": "dict",
        "options": {
            "zip_file": {"type": "path"},
            "s3_bucket": {"type": "str"},
            "s3_key": {"type": "str", "no_log": False},
            "s3_object_version": {"type": "str"},
            "sha256": {"type": "str"},
        },
    },
    "version_description": {"type": "str"},
    "current_version": {"type": "str"},
    "take_over": {"type": "bool", "default": False},
    "deployment_config": {"type": "raw", "default": "CodeDeployDefault.LambdaAllAtOnce"},
    "before_allow_traffic_hook": {"type": "str"},
    "after_allow_traffic_hook": {"type": "str"},
    "alarms": {"type": "list", "elements": "str", "default": []},
    "ignore_poll_alarm_failure": {"type": "bool", "default": False},
    "poll_interval": {"type": "float", "default": 5.0},
    "appspec": {"type": "raw"},
    "recover": {"type": "bool", "default": False},
    "deployment_id": {"type": "str"},
    "record": {"type": "dict"},
    "application": {"type": "str"},
    "deployment_group": {"type": "str"},
    "lock_ttl": {"type": "float"},
    "force_lock": {"type": "bool", "default": False},
    "lock_token": {"type": "str", "no_log": True},
}


class LambdaDeployError(RollwrightError):
    """A deployment that cannot start or cannot go on. ``result`` holds what is known so far."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


def _normalise_sha256(value: str, field_name: str) -> str:
    """Accept hex (64 chars) or base64 (Lambda's CodeSha256 form); return base64."""
    text = value.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return base64.b64encode(bytes.fromhex(text)).decode("ascii")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise LambdaDeployError(f"{field_name}: expected a SHA256 as 64 hex digits or base64 (Lambda's CodeSha256), got {value!r}")
    return base64.b64encode(raw).decode("ascii")


@dataclass
class LambdaDeployRequest:
    """What to deploy. Build it with :func:`request_from_options` to get the validation."""

    function_name: str
    alias: str
    config: ShiftConfig
    target_version: str | None = None
    publish: bool = False
    code: dict | None = None
    version_description: str | None = None
    current_version: str | None = None
    take_over: bool = False
    before_allow_traffic_hook: str | None = None
    after_allow_traffic_hook: str | None = None
    alarms: list[str] = field(default_factory=list)
    ignore_poll_alarm_failure: bool = False
    poll_interval: float = 5.0
    deployment_id: str | None = None


def _load_appspec(value: Any) -> dict:
    """A Lambda AppSpec (dict, JSON or YAML text) -> {function_name, alias, current_version,
    target_version, before_allow_traffic_hook, after_allow_traffic_hook}.

    Uses ``appspec.parse_lambda_appspec`` when that module is available; else a minimal parser.
    """
    try:
        from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.appspec import parse_lambda_appspec  # type: ignore[attr-defined]
    except ImportError:
        parse_lambda_appspec = None
    if parse_lambda_appspec is not None:
        try:
            spec = parse_lambda_appspec(value, "appspec")
        except Exception as exc:  # the parser's own error type, message has the field path
            raise LambdaDeployError(f"appspec: {exc}") from exc
        hooks = getattr(spec, "hooks", None) or {}
        if not isinstance(hooks, dict):  # list of {event: function}
            merged: dict = {}
            for item in hooks:
                merged.update(item)
            hooks = merged
        return {
            "function_name": getattr(spec, "function_name", None),
            "alias": getattr(spec, "alias", None),
            "current_version": getattr(spec, "current_version", None),
            "target_version": getattr(spec, "target_version", None),
            "before_allow_traffic_hook": hooks.get("BeforeAllowTraffic"),
            "after_allow_traffic_hook": hooks.get("AfterAllowTraffic"),
        }
    return _minimal_lambda_appspec(value)


def _minimal_lambda_appspec(value: Any) -> dict:
    data = value
    if isinstance(value, (bytes, str)):
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        try:
            data = json.loads(text)
        except ValueError:
            try:
                import yaml  # controller only
            except ImportError:
                raise LambdaDeployError("appspec: not JSON, and PyYAML is not available to read YAML") from None
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise LambdaDeployError(f"appspec: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise LambdaDeployError("appspec: expected a mapping with version, Resources and optional Hooks")
    resources = data.get("Resources") or data.get("resources")
    if not isinstance(resources, list) or len(resources) != 1 or not isinstance(resources[0], dict) or len(resources[0]) != 1:
        raise LambdaDeployError("appspec.Resources: expected a list with exactly one named AWS::Lambda::Function resource")
    (res_name, resource), = resources[0].items()
    if not isinstance(resource, dict):
        raise LambdaDeployError(f"appspec.Resources[0].{res_name}: expected a mapping with Type and Properties")
    rtype = resource.get("Type") or resource.get("type")
    if rtype != "AWS::Lambda::Function":
        raise LambdaDeployError(f"appspec.Resources[0].{res_name}.Type: expected AWS::Lambda::Function, got {rtype!r}")
    props = resource.get("Properties") or resource.get("properties") or {}
    out: dict[str, Any] = {}
    for key, dest in (("Name", "function_name"), ("Alias", "alias"), ("CurrentVersion", "current_version"), ("TargetVersion", "target_version")):
        val = props.get(key)
        if val is None and key in ("Name", "Alias", "TargetVersion"):
            raise LambdaDeployError(f"appspec.Resources[0].{res_name}.Properties.{key}: required")
        out[dest] = None if val is None else str(val)
    hooks = data.get("Hooks") or data.get("hooks") or []
    if isinstance(hooks, dict):
        hooks = [{k: v} for k, v in hooks.items()]
    if not isinstance(hooks, list):
        raise LambdaDeployError("appspec.Hooks: expected a list of {BeforeAllowTraffic|AfterAllowTraffic: function name}")
    for index, item in enumerate(hooks):
        if not isinstance(item, dict):
            raise LambdaDeployError(f"appspec.Hooks[{index}]: expected a mapping")
        for event, function in item.items():
            if event == "BeforeAllowTraffic":
                out["before_allow_traffic_hook"] = str(function)
            elif event == "AfterAllowTraffic":
                out["after_allow_traffic_hook"] = str(function)
            else:
                raise LambdaDeployError(
                    f"appspec.Hooks[{index}].{event}: a Lambda AppSpec takes only BeforeAllowTraffic and AfterAllowTraffic"
                )
    return out


def _code_source(code: Any, publish: bool) -> dict | None:
    """The ``code`` option checked: a zip file or an S3 object (SHA256 in Lambda's base64 form), only with publish."""
    if not code:
        return None
    code = {k: v for k, v in code.items() if v is not None}
    if not publish:
        raise LambdaDeployError("code: a code update needs publish: true (the new code is published as the target version)")
    has_zip = bool(code.get("zip_file"))
    has_s3 = bool(code.get("s3_bucket") or code.get("s3_key"))
    if has_zip == has_s3:
        raise LambdaDeployError("code: give either zip_file or s3_bucket + s3_key (with optional s3_object_version)")
    if has_s3 and not (code.get("s3_bucket") and code.get("s3_key")):
        raise LambdaDeployError("code: s3_bucket and s3_key are both required for code from S3")
    if code.get("sha256"):
        code["sha256"] = _normalise_sha256(code["sha256"], "code.sha256")
    return code


def request_from_options(options: dict) -> LambdaDeployRequest:
    """Module options (see ARGUMENT_SPEC) -> a validated request. Raises LambdaDeployError naming
    the field. Nothing is read from AWS here."""
    opts = dict(options)
    if opts.get("appspec") is not None:
        from_spec = _load_appspec(opts["appspec"])
        for key, val in from_spec.items():
            if val is None:
                continue
            given = opts.get(key)
            if given is not None and str(given) != str(val):
                raise LambdaDeployError(f"{key}: {given!r} conflicts with the appspec's value {val!r}; give one of them")
            opts[key] = val
    for key in ("function_name", "alias"):
        if not opts.get(key):
            raise LambdaDeployError(f"{key}: required (or give an appspec)")
    publish = bool(opts.get("publish"))
    target = opts.get("target_version")
    target = None if target is None else str(target).strip()
    if publish and target:
        raise LambdaDeployError("target_version and publish are mutually exclusive: publish: true deploys the version it publishes")
    if not publish and not target:
        raise LambdaDeployError("target_version: required unless publish: true")
    if target is not None:
        if target == LATEST:
            raise LambdaDeployError(
                "target_version: $LATEST cannot be a weighted alias version; publish it (publish: true) and deploy the published version"
            )
        if not _VERSION_RE.match(target):
            raise LambdaDeployError(f"target_version: expected a published version number, got {target!r}")
    current = opts.get("current_version")
    current = None if current is None else str(current).strip()
    if current is not None and current != LATEST and not _VERSION_RE.match(current):
        raise LambdaDeployError(f"current_version: expected a published version number, got {current!r}")
    if current is not None and target is not None and current == target:
        raise LambdaDeployError(f"current_version and target_version are both {target}: nothing to shift")
    code = _code_source(opts.get("code"), publish)
    try:
        config = parse_lambda_config(opts.get("deployment_config") or "CodeDeployDefault.LambdaAllAtOnce")
    except ShiftConfigError as exc:
        raise LambdaDeployError(str(exc)) from None
    poll = opts.get("poll_interval")
    poll = 5.0 if poll is None else float(poll)
    if not poll > 0:
        raise LambdaDeployError(f"poll_interval: must be greater than 0 seconds, got {poll}")
    alarms = [str(a) for a in (opts.get("alarms") or [])]
    if len(alarms) > 100:
        raise LambdaDeployError("alarms: at most 100 alarm names")
    dep_id = opts.get("deployment_id")
    if dep_id and not DEPLOYMENT_ID_RE.fullmatch(dep_id):
        raise LambdaDeployError(f"deployment_id: expected d- and 9 upper-case letters or digits, got {dep_id!r}")
    return LambdaDeployRequest(
        function_name=str(opts["function_name"]),
        alias=str(opts["alias"]),
        config=config,
        target_version=target,
        publish=publish,
        code=code,
        version_description=opts.get("version_description"),
        current_version=current,
        take_over=bool(opts.get("take_over")),
        before_allow_traffic_hook=opts.get("before_allow_traffic_hook") or None,
        after_allow_traffic_hook=opts.get("after_allow_traffic_hook") or None,
        alarms=alarms,
        ignore_poll_alarm_failure=bool(opts.get("ignore_poll_alarm_failure")),
        poll_interval=poll,
        deployment_id=dep_id or None,
    )
