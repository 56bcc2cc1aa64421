# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lambda blue/green: publish a version and shift an alias from the current version to the target.

The engine behind ``rollwright.deploy.lambda_deploy`` (module and action plugin). Plain typed
Python; boto3 clients (lambda, cloudwatch, optionally s3) are passed in, and so are the clocks,
the sleep function and a progress callback, so unit tests can drive time and a controller-side
action plugin can print each step as it happens.

Order of a deployment (CodeDeploy's Lambda lifecycle):

1. Validate everything before touching anything: function, alias, versions, hook functions,
   alarms (one already in ALARM refuses the deployment).
2. Optional code update (SHA256 checked) and ``PublishVersion``.
3. BeforeAllowTraffic hook: invoked synchronously; a function error or a payload whose
   ``status`` is ``Failed`` fails the deployment before any traffic moves.
4. AllowTraffic: the alias keeps the current version as its primary and gets
   ``RoutingConfig.AdditionalVersionWeights = {target: w}`` at each planned step (times measured on
   a monotonic clock from the start of AllowTraffic). Alarms are polled every ``poll_interval``
   seconds; one in ALARM (or, unless ``ignore_poll_alarm_failure``, one that cannot be read) puts
   the alias back on the current version at once and the deployment ends Stopped. The last step
   is the promote: the alias points at the target version and the routing is cleared.
5. AfterAllowTraffic hook; a failure puts the alias back on the current version.

Because the primary version stays the current version until the promote, an alias left weighted
by a controller that died mid-shift is recovered by ``recover()`` (``recover: true``): the alias
goes back to its primary version with the routing cleared.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.alarms import missing_alarms_text, read_alarm_states
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.deployment_id import new_deployment_id
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import ControllerGone, access_denied_hint
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.lambda_request import (  # noqa: F401  (re-exported)
    ARGUMENT_SPEC,
    LATEST,
    LambdaDeployError,
    LambdaDeployRequest,
    request_from_options,
    _VERSION_RE,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.redact import redact_text
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.traffic_shift import Step, plan_steps

__all__ = [
    "ARGUMENT_SPEC",
    "LambdaDeployError",
    "LambdaDeployRequest",
    "LambdaDeployment",
    "new_deployment_id",
    "request_from_options",
]

_PAYLOAD_LIMIT = 4096

ProgressCallback = Callable[[dict], None]


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


def _error_text(exc: BaseException) -> str:
    code = _error_code(exc)
    response = getattr(exc, "response", None)
    if code and isinstance(response, dict):
        message = (response.get("Error") or {}).get("Message") or str(exc)
        return f"{code}: {message}"
    return f"{type(exc).__name__}: {exc}"


def _is_not_found(exc: BaseException) -> bool:
    return _error_code(exc) in ("ResourceNotFoundException", "ResourceNotFound", "404", "NoSuchEntity")


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _weights(alias_conf: dict) -> dict[str, float]:
    routing = alias_conf.get("RoutingConfig") or {}
    return {str(k): float(v) for k, v in (routing.get("AdditionalVersionWeights") or {}).items()}


class _Stop(Exception):
    """Internal: the shift must stop (alarm or unreadable alarms)."""


class LambdaDeployment:
    """Runs one Lambda blue/green deployment (or a recovery) against the given clients."""

    def __init__(
        self,
        lambda_client: Any,
        cloudwatch_client: Any = None,
        s3_client: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        progress: ProgressCallback | None = None,
        heartbeat_seconds: float = 60.0,
        control: Any = None,
    ):
        self.lam = lambda_client
        self.cw = cloudwatch_client
        self.s3 = s3_client
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.progress = progress
        self.heartbeat_seconds = heartbeat_seconds
        # control_requests.SafePoint (check() -> Decision, done()): stop / promote / pause requests,
        # read during the waits between traffic steps; None without a record store.
        self.control = control

    # ------------------------------------------------------------------ helpers
    def _now_iso(self) -> str:
        return datetime.fromtimestamp(self.wall_clock(), timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _emit(self, event: str, message: str, **data: Any) -> None:
        if self.progress is None:
            return
        payload = {"event": event, "time": self._now_iso(), "message": message}
        payload.update(data)
        try:
            self.progress(payload)
        except Exception:  # progress output must never break a deployment
            pass

    def _get_alias(self, function_name: str, alias: str) -> dict:
        return self.lam.get_alias(FunctionName=function_name, Name=alias)

    def _set_alias(self, req: LambdaDeployRequest, version: str, weights: dict[str, float]) -> dict:
        return self.lam.update_alias(
            FunctionName=req.function_name,
            Name=req.alias,
            FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": weights},
        )

    # ------------------------------------------------------------------ recovery
    def recover(self, function_name: str, alias: str, version: str | None = None, check_mode: bool = False) -> dict:
        """Put ``alias`` back on ``version`` (default: its primary version, which during a shift by
        this engine is the current version) with the routing cleared."""
        try:
            conf = self._get_alias(function_name, alias)
        except Exception as exc:
            if _is_not_found(exc):
                raise LambdaDeployError(f"alias: alias {alias!r} of function {function_name!r} not found") from None
            raise LambdaDeployError(f"alias: cannot read alias {alias!r} of {function_name!r}: {_error_text(exc)}") from None
        before = {"function_version": conf.get("FunctionVersion"), "additional_version_weights": _weights(conf)}
        target = str(version) if version else str(conf.get("FunctionVersion"))
        if version and target != LATEST and not _VERSION_RE.match(target):
            raise LambdaDeployError(f"current_version: expected a published version number, got {version!r}")
        if version:
            self._check_version_exists(function_name, target, "current_version")
        changed = before["function_version"] != target or bool(before["additional_version_weights"])
        after = {"function_version": target, "additional_version_weights": {}}
        if changed and not check_mode:
            self.lam.update_alias(
                FunctionName=function_name, Name=alias, FunctionVersion=target,
                RoutingConfig={"AdditionalVersionWeights": {}},
            )
            self._emit("recover", f"alias {alias} of {function_name} set to version {target}, routing cleared",
                       function_name=function_name, alias=alias, version=target)
        return {
            "changed": changed,
            "recovered": changed,
            "function_name": function_name,
            "alias": alias,
            "status": "Recovered" if changed else "Unchanged",
            "before": before,
            "final_alias": after if changed else before,
            "diff": {"before": before, "after": after},
            "msg": (f"alias {alias} back on version {target} with routing cleared" if changed
                    else f"alias {alias} already on version {target} with no routing"),
        }

    def _check_version_exists(self, function_name: str, version: str, field_name: str) -> dict:
        try:
            return self.lam.get_function_configuration(FunctionName=function_name, Qualifier=version)
        except Exception as exc:
            if _is_not_found(exc):
                raise LambdaDeployError(f"{field_name}: version {version} of function {function_name!r} does not exist") from None
            raise LambdaDeployError(f"{field_name}: cannot read version {version} of {function_name!r}: {_error_text(exc)}") from None

    # ------------------------------------------------------------------ alarms
    def _read_alarms(self, names: list[str]) -> dict[str, dict]:
        """{name: {state, reason}} through deployments/alarms.py; raises on any read failure, including an alarm that is gone."""
        if self.cw is None:
            raise RuntimeError("no CloudWatch client")
        found, missing = read_alarm_states(self.cw, names)
        if missing:
            raise LookupError(missing_alarms_text(missing))
        return {name: {"state": item.get("StateValue"), "reason": item.get("StateReason")} for name, item in found.items()}

    # ------------------------------------------------------------------ deployment
    def run(self, req: LambdaDeployRequest, check_mode: bool = False) -> dict:
        dep_id = req.deployment_id or new_deployment_id()
        steps_plan = plan_steps(req.config)
        result: dict[str, Any] = {
            "changed": False,
            "failed": False,
            "deployment_id": dep_id,
            "function_name": req.function_name,
            "alias": req.alias,
            "deployment_config": req.config.to_dict(),
            "current_version": None,
            "target_version": req.target_version,
            "published_version": None,
            "code_sha256": None,
            "status": "Created",
            "rolled_back": False,
            "steps": [],
            "planned_steps": [s.to_dict() for s in steps_plan],
            "hooks": [],
            "alarm_events": [],
            "start_time": self._now_iso(),
            "end_time": None,
            "final_alias": None,
            "check_mode": check_mode,
        }
        # ---- 1. validate, read only
        try:
            self.lam.get_function(FunctionName=req.function_name)
        except Exception as exc:
            if _is_not_found(exc):
                raise LambdaDeployError(f"function_name: function {req.function_name!r} not found") from None
            raise LambdaDeployError(f"function_name: cannot read function {req.function_name!r}: {_error_text(exc)}") from None
        try:
            alias_conf = self._get_alias(req.function_name, req.alias)
        except Exception as exc:
            if _is_not_found(exc):
                raise LambdaDeployError(
                    f"alias: alias {req.alias!r} of function {req.function_name!r} not found; create it on the current version first"
                ) from None
            raise LambdaDeployError(f"alias: cannot read alias {req.alias!r}: {_error_text(exc)}") from None
        alias_version = str(alias_conf.get("FunctionVersion"))
        alias_weights = _weights(alias_conf)
        result["initial_alias"] = {"function_version": alias_version, "additional_version_weights": alias_weights}

        # Idempotence for an explicit target: nothing to do when the alias is already there.
        if req.target_version and alias_version == req.target_version and not alias_weights:
            return self._unchanged(result, alias_version)

        if alias_weights and not req.take_over:
            split = ", ".join(f"version {v} at {w:.0%}" for v, w in alias_weights.items())
            raise LambdaDeployError(
                f"alias: {req.alias!r} already splits traffic (version {alias_version} plus {split}); a deployment may be in "
                "progress or a controller died mid-shift. Recover it first (recover: true) or pass take_over: true"
            )
        current = req.current_version or alias_version
        if req.current_version and req.current_version != alias_version and not req.take_over:
            raise LambdaDeployError(
                f"current_version: {req.current_version} given but alias {req.alias!r} points at version {alias_version}; "
                "pass take_over: true to shift from the given version anyway"
            )
        gradual = len(steps_plan) > 1
        if current == LATEST and gradual:
            raise LambdaDeployError(
                f"current_version: alias {req.alias!r} points at $LATEST, which cannot take part in weighted routing; "
                "point the alias at a published version first, or use CodeDeployDefault.LambdaAllAtOnce"
            )
        if current != LATEST:
            self._check_version_exists(req.function_name, current, "current_version")
        result["current_version"] = current
        if req.target_version:
            self._check_version_exists(req.function_name, req.target_version, "target_version")
        for field_name, hook in (("before_allow_traffic_hook", req.before_allow_traffic_hook),
                                 ("after_allow_traffic_hook", req.after_allow_traffic_hook)):
            if hook:
                try:
                    self.lam.get_function(FunctionName=hook)
                except Exception as exc:
                    if _is_not_found(exc):
                        raise LambdaDeployError(f"{field_name}: hook function {hook!r} not found") from None
                    raise LambdaDeployError(f"{field_name}: cannot read hook function {hook!r}: {_error_text(exc)}") from None
        if req.alarms:
            self._precheck_alarms(req, result)

        # ---- 2. code + publish
        target = req.target_version
        if req.publish:
            target = self._publish(req, result, check_mode)
            if target is not None and target == alias_version and not alias_weights:
                return self._unchanged(result, alias_version)
        if target is not None and target == current:
            raise LambdaDeployError(f"target_version: version {target} is already the current version of alias {req.alias!r}")
        result["target_version"] = target
        target_label = target or "(to be published)"

        if check_mode:
            result["changed"] = True
            result["status"] = "Planned"
            result["steps"] = [
                {"planned_seconds": s.at_seconds, "weight": s.weight, "promote": s.promote, "actual_seconds": None}
                for s in steps_plan
            ]
            result["final_alias"] = {"function_version": target_label, "additional_version_weights": {}}
            result["diff"] = {"before": result["initial_alias"], "after": result["final_alias"]}
            result["end_time"] = self._now_iso()
            result["msg"] = (f"check mode: would shift alias {req.alias} from version {current} to {target_label} "
                             f"in {len(steps_plan)} step(s)")
            result["plan_text"] = [
                f"at +{s.at_seconds:g} s: {'promote - 100% on' if s.promote else f'{s.weight:.0%} on'} version "
                f"{target_label}" + ("" if s.promote else f", {1 - s.weight:.0%} on version {current}")
                for s in steps_plan]
            return result

        result["changed"] = True
        result["status"] = "InProgress"
        self._emit("start", f"deployment {dep_id}: {req.function_name}:{req.alias} version {current} -> {target} "
                   f"({req.config.name or req.config.type}, {len(steps_plan)} step(s))",
                   deployment_id=dep_id, current_version=current, target_version=target)

        # ---- 3. BeforeAllowTraffic
        if req.before_allow_traffic_hook:
            ok = self._run_hook(req, result, "BeforeAllowTraffic", req.before_allow_traffic_hook, current, target)
            if not ok:
                return self._finish(result, "Failed", f"BeforeAllowTraffic hook {req.before_allow_traffic_hook} failed; "
                                                      "no traffic was moved", alias_version=current, weights={})

        # ---- 4. AllowTraffic (+ rollback on interruption)
        try:
            stopped = self._allow_traffic(req, result, steps_plan, current, target)
            if stopped:
                return stopped
            # ---- 5. AfterAllowTraffic
            if req.after_allow_traffic_hook:
                ok = self._run_hook(req, result, "AfterAllowTraffic", req.after_allow_traffic_hook, current, target)
                if not ok:
                    self._rollback(req, result, current, f"AfterAllowTraffic hook {req.after_allow_traffic_hook} failed")
                    return self._finish(result, "Failed", f"AfterAllowTraffic hook {req.after_allow_traffic_hook} failed; "
                                                          f"alias {req.alias} rolled back to version {current}",
                                        alias_version=current, weights={})
            if req.alarms:
                problem = self._poll_alarms(req, result, phase="after promote")
                if problem:
                    self._rollback(req, result, current, problem)
                    return self._finish(result, "Stopped", f"{problem}; alias {req.alias} rolled back to version {current}",
                                        alias_version=current, weights={})
        except BaseException as exc:
            # Interrupted (Ctrl-C, an API error mid-shift): never leave the alias weighted or on an
            # unvalidated target; put it back on the current version, then let the error through.
            # An orphaned worker (its controller killed) leaves the alias as it is: the record and the lock
            # say a shift is under way, and recovery puts the alias back from them.
            if not result["rolled_back"] and not isinstance(exc, ControllerGone):
                try:
                    self._rollback(req, result, current, f"interrupted: {_error_text(exc)}")
                except Exception:
                    pass
            result["status"] = "Failed"
            if isinstance(exc, LambdaDeployError):
                exc.result = result
            raise
        return self._finish(result, "Succeeded", f"alias {req.alias} now on version {target}",
                            alias_version=target, weights={})

    # ------------------------------------------------------------------ phases
    def _unchanged(self, result: dict, version: str) -> dict:
        result.update(
            changed=False,
            status="Unchanged",
            current_version=version,
            target_version=version,
            steps=[],
            final_alias={"function_version": version, "additional_version_weights": {}},
            end_time=self._now_iso(),
            msg=f"alias {result['alias']} already on version {version} with no routing; nothing to do",
        )
        return result

    def _finish(self, result: dict, status: str, message: str, alias_version: str, weights: dict) -> dict:
        result["status"] = status
        result["failed"] = status != "Succeeded"
        result["msg"] = message
        result["end_time"] = self._now_iso()
        try:
            conf = self._get_alias(result["function_name"], result["alias"])
            result["final_alias"] = {"function_version": str(conf.get("FunctionVersion")),
                                     "additional_version_weights": _weights(conf)}
        except Exception:
            result["final_alias"] = {"function_version": alias_version, "additional_version_weights": weights}
        result["diff"] = {"before": result.get("initial_alias"), "after": result["final_alias"]}
        self._emit("finish", f"deployment {result['deployment_id']} {status}: {message}", status=status)
        return result

    def _precheck_alarms(self, req: LambdaDeployRequest, result: dict) -> None:
        try:
            states = self._read_alarms(req.alarms)
        except Exception as exc:
            text = str(exc) if isinstance(exc, LookupError) else _error_text(exc)
            event = {"time": self._now_iso(), "at_seconds": None, "phase": "before start", "alarm": None,
                     "state": None, "error": text, "ignored": req.ignore_poll_alarm_failure}
            result["alarm_events"].append(event)
            if req.ignore_poll_alarm_failure:
                self._emit("alarm", f"cannot read alarms before start ({text}); ignored (ignore_poll_alarm_failure)")
                return
            raise LambdaDeployError(
                f"alarms: cannot read the alarms' state before starting: {text}. "
                "Nothing was changed; fix the alarm names or pass ignore_poll_alarm_failure: true", result) from None
        firing = [n for n, s in states.items() if s["state"] == "ALARM"]
        if firing:
            for name in firing:
                result["alarm_events"].append({"time": self._now_iso(), "at_seconds": None, "phase": "before start",
                                               "alarm": name, "state": "ALARM", "reason": states[name]["reason"]})
            raise LambdaDeployError(
                f"alarms: {', '.join(firing)} already in ALARM; deployment refused, nothing was changed", result)

    def _publish(self, req: LambdaDeployRequest, result: dict, check_mode: bool) -> str | None:
        """Update the code if asked (SHA256 checked), then publish $LATEST. Returns the version
        (None in check mode when a new version would be published)."""
        fn = req.function_name
        latest = self.lam.get_function_configuration(FunctionName=fn)
        latest_sha = latest.get("CodeSha256")
        expected_sha = latest_sha
        code_changed = False
        if req.code:
            data, update_args = self._code_bytes(req.code)
            expected_sha = _b64_sha256(data)
            if req.code.get("sha256") and req.code["sha256"] != expected_sha:
                raise LambdaDeployError(
                    f"code.sha256: the code's SHA256 is {expected_sha} but {req.code['sha256']} was expected; nothing was changed")
            code_changed = expected_sha != latest_sha
            result["code_sha256"] = expected_sha
            if code_changed and not check_mode:
                resp = self.lam.update_function_code(FunctionName=fn, Publish=False, **update_args)
                got = resp.get("CodeSha256")
                result["changed"] = True  # $LATEST has new code from here on
                if got != expected_sha:
                    raise LambdaDeployError(
                        f"code: Lambda reports CodeSha256 {got} after the upload but the code's SHA256 is {expected_sha}; "
                        "nothing was published", result)
                self._wait_updated(fn)
                self._emit("code", f"code of {fn} updated (SHA256 {expected_sha})")
        # Lambda publishes nothing new when $LATEST has not changed since the last version.
        last_version = self._latest_published(fn)
        if check_mode:
            if last_version and last_version.get("CodeSha256") == expected_sha:
                return str(last_version["Version"])
            return None
        kwargs: dict[str, Any] = {"FunctionName": fn}
        if expected_sha:
            kwargs["CodeSha256"] = expected_sha
        if req.version_description:
            kwargs["Description"] = req.version_description
        resp = self.lam.publish_version(**kwargs)
        version = str(resp["Version"])
        if version == LATEST:
            raise LambdaDeployError("publish: Lambda returned $LATEST as the published version", result)
        if expected_sha and resp.get("CodeSha256") and resp["CodeSha256"] != expected_sha:
            raise LambdaDeployError(
                f"publish: version {version} has CodeSha256 {resp['CodeSha256']}, expected {expected_sha}", result)
        result["published_version"] = version
        result["code_sha256"] = resp.get("CodeSha256") or expected_sha
        self._emit("publish", f"published version {version} of {fn}", version=version)
        return version

    def _code_bytes(self, code: dict) -> tuple[bytes, dict]:
        if code.get("zip_file"):
            path = code["zip_file"]
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as exc:
                raise LambdaDeployError(f"code.zip_file: cannot read {path}: {exc.strerror or exc}") from None
            return data, {"ZipFile": data}
        args = {"S3Bucket": code["s3_bucket"], "S3Key": code["s3_key"]}
        if code.get("s3_object_version"):
            args["S3ObjectVersion"] = code["s3_object_version"]
        if self.s3 is None:
            raise LambdaDeployError("code: an S3 client is needed to check the SHA256 of code in S3")
        get_args = {"Bucket": code["s3_bucket"], "Key": code["s3_key"]}
        if code.get("s3_object_version"):
            get_args["VersionId"] = code["s3_object_version"]
        try:
            body = self.s3.get_object(**get_args)["Body"].read()
        except Exception as exc:
            where = f"s3://{code['s3_bucket']}/{code['s3_key']}" + (
                f" version {code['s3_object_version']}" if code.get("s3_object_version") else "")
            raise LambdaDeployError(f"code: cannot read {where}: {_error_text(exc)}{access_denied_hint(exc, 's3')}") from None
        return body, args

    def _wait_updated(self, fn: str, timeout: float = 300.0) -> None:
        deadline = self.clock() + timeout
        while True:
            conf = self.lam.get_function_configuration(FunctionName=fn)
            status = conf.get("LastUpdateStatus")
            if status in (None, "Successful"):
                return
            if status == "Failed":
                raise LambdaDeployError(f"code: the code update of {fn} failed: {conf.get('LastUpdateStatusReason')}")
            if self.clock() > deadline:
                raise LambdaDeployError(f"code: the code update of {fn} did not finish within {timeout:.0f} s")
            self.sleep(1.0)

    def _latest_published(self, fn: str) -> dict | None:
        best: dict | None = None
        marker = None
        while True:
            kwargs: dict[str, Any] = {"FunctionName": fn}
            if marker:
                kwargs["Marker"] = marker
            resp = self.lam.list_versions_by_function(**kwargs)
            for item in resp.get("Versions") or []:
                v = str(item.get("Version"))
                if _VERSION_RE.match(v) and (best is None or int(v) > int(best["Version"])):
                    best = item
            marker = resp.get("NextMarker")
            if not marker:
                return best

    def _run_hook(self, req: LambdaDeployRequest, result: dict, event: str, function: str, current: str, target: str) -> bool:
        execution_id = secrets.token_hex(16)
        payload = {
            "DeploymentId": result["deployment_id"],
            "LifecycleEventHookExecutionId": execution_id,
            "LifecycleEvent": event,
            "FunctionName": req.function_name,
            "Alias": req.alias,
            "CurrentVersion": current,
            "TargetVersion": target,
            "Source": "rollwright.deploy",
        }
        record: dict[str, Any] = {
            "lifecycle_event": event,
            "function_name": function,
            "execution_id": execution_id,
            "start_time": self._now_iso(),
            "status": "InProgress",
            "function_error": None,
            "payload": None,
            "error": None,
        }
        self._emit("hook", f"{event}: invoking {function}", lifecycle_event=event, function_name=function)
        started = self.clock()
        try:
            resp = self.lam.invoke(FunctionName=function, InvocationType="RequestResponse",
                                   Payload=json.dumps(payload).encode("utf-8"))
            body = resp.get("Payload")
            raw = body.read() if hasattr(body, "read") else (body or b"")
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            record["payload"] = redact_text(text[:_PAYLOAD_LIMIT])  # kept in the record and the result
            record["function_error"] = resp.get("FunctionError")
            if resp.get("FunctionError"):
                record["status"] = "Failed"
                record["error"] = f"function error ({resp['FunctionError']})"
            else:
                parsed: Any = None
                try:
                    parsed = json.loads(text) if text.strip() else None
                except ValueError:
                    parsed = None
                status = None
                if isinstance(parsed, dict):
                    for key, val in parsed.items():
                        if str(key).lower() == "status":
                            status = val
                if isinstance(status, str) and status.strip().lower() == "failed":
                    record["status"] = "Failed"
                    record["error"] = "the hook returned status Failed"
                else:
                    record["status"] = "Succeeded"
        except Exception as exc:
            record["status"] = "Failed"
            record["error"] = f"invoke failed: {_error_text(exc)}"
        record["duration_seconds"] = round(self.clock() - started, 3)
        record["end_time"] = self._now_iso()
        result["hooks"].append(record)
        detail = f" ({record['error']})" if record["error"] else ""
        self._emit("hook", f"{event}: {function} {record['status']}{detail}", lifecycle_event=event,
                   function_name=function, status=record["status"])
        return record["status"] == "Succeeded"

    def _poll_alarms(self, req: LambdaDeployRequest, result: dict, phase: str, t0: float | None = None) -> str | None:
        """Read the alarms once. Returns a reason to stop, or None."""
        at = None if t0 is None else round(self.clock() - t0, 3)
        try:
            states = self._read_alarms(req.alarms)
        except Exception as exc:
            text = str(exc) if isinstance(exc, LookupError) else _error_text(exc)
            result["alarm_events"].append({"time": self._now_iso(), "at_seconds": at, "phase": phase,
                                           "alarm": None, "state": None, "error": text,
                                           "ignored": req.ignore_poll_alarm_failure})
            if req.ignore_poll_alarm_failure:
                self._emit("alarm", f"cannot read alarms ({text}); ignored (ignore_poll_alarm_failure)")
                return None
            return f"cannot read the alarms' state ({text}) at {self._now_iso()}"
        self._last_alarm_summary = "OK" if all(s["state"] != "ALARM" for s in states.values()) else "ALARM"
        firing = [n for n, s in states.items() if s["state"] == "ALARM"]
        if not firing:
            return None
        when = self._now_iso()
        for name in firing:
            result["alarm_events"].append({"time": when, "at_seconds": at, "phase": phase, "alarm": name,
                                           "state": "ALARM", "reason": states[name]["reason"]})
        self._emit("alarm", f"alarm {', '.join(firing)} in ALARM at {when}", alarms=firing)
        return f"alarm {', '.join(firing)} in ALARM at {when}"

    def _rollback(self, req: LambdaDeployRequest, result: dict, current: str, reason: str) -> None:
        self._set_alias(req, current, {})
        result["rolled_back"] = True
        result["rollback"] = {"time": self._now_iso(), "reason": reason, "version": current}
        self._emit("rollback", f"alias {req.alias} back on version {current} ({reason})", version=current)

    def _allow_traffic(self, req: LambdaDeployRequest, result: dict, plan: list[Step], current: str, target: str) -> dict | None:
        """Shift; returns a finished (Stopped) result if the shift was stopped, None after promote."""
        self._last_alarm_summary = "OK" if req.alarms else "none"
        t0 = self.clock()
        result["allow_traffic_start"] = self._now_iso()
        self._emit("allow_traffic", f"AllowTraffic: {len(plan)} step(s) to version {target}", steps=len(plan))
        last_poll = t0
        last_beat = t0
        poll_cost = 0.0  # how long the last alarm read took
        total = len(plan)
        promoted = None  # the promote request's decision, once one skipped the remaining steps
        for index, step in enumerate(plan, start=1):
            if promoted is not None and not step.promote:
                continue
            due = t0 + step.at_seconds
            # wait, polling alarms every poll_interval
            while promoted is None:
                now = self.clock()
                if self.control is not None:
                    decision = self.control.check()
                    if decision.held_seconds:  # paused: the remaining steps keep their intervals
                        t0 += decision.held_seconds
                        due += decision.held_seconds
                        now = self.clock()
                    if decision.action == "stop":
                        stopped = self._stop(req, result, current, decision.reason)
                        self.control.done(decision, f"alias {req.alias} back on version {current}; Stopped")
                        return stopped
                    if decision.action == "promote":
                        promoted = decision
                        self._emit("promote", f"{decision.reason}: the remaining steps are skipped")
                        step = plan[-1]
                        index = total
                        break
                # A read that would still be running when the step is due waits until after the step:
                # slow alarm reads (a CloudWatch endpoint timing out) must not push the schedule.
                if req.alarms and now - last_poll >= req.poll_interval and now + poll_cost <= due:
                    last_poll = now
                    problem = self._poll_alarms(req, result, "AllowTraffic", t0)
                    poll_cost = self.clock() - now
                    if problem:
                        return self._stop(req, result, current, problem)
                    now = self.clock()
                if now >= due:
                    break
                if now - last_beat >= self.heartbeat_seconds:
                    last_beat = now
                    self._emit("wait", f"+{now - t0:.1f}s waiting for step {index}/{total} at +{step.at_seconds:g}s; "
                               f"alarms: {self._last_alarm_summary}", at_seconds=round(now - t0, 3))
                wake = due
                if req.alarms:
                    wake = min(wake, last_poll + req.poll_interval)
                self.sleep(max(0.0, min(wake - now, 1.0 if self.control is None else self.control.min_interval)))
            if step.promote and req.alarms and self.clock() - last_poll > 0.5 and poll_cost <= 0.5:
                last_poll = self.clock()
                problem = self._poll_alarms(req, result, "AllowTraffic", t0)
                poll_cost = self.clock() - last_poll
                if problem:
                    return self._stop(req, result, current, problem)
            issued = self.clock() - t0
            if step.promote:
                self._set_alias(req, target, {})
            else:
                self._set_alias(req, current, {target: step.weight})
            self._record_step(result, step, index, total, issued, self.clock() - t0, target)
            if promoted is not None:
                result["promoted_on_request"] = True
                self.control.done(promoted, f"alias {req.alias} on version {target} at 100 % (remaining steps skipped)")
                break
        return None

    def _record_step(self, result: dict, step: Step, index: int, total: int, issued: float, actual: float,
                     target: str) -> None:
        """Keep a traffic step's planned and actual times in the result and announce it."""
        record = {
            "index": index,
            "planned_seconds": step.at_seconds,
            "actual_seconds": round(actual, 3),
            "issued_seconds": round(issued, 3),
            "drift_seconds": round(actual - step.at_seconds, 3),
            "weight": step.weight,
            "promote": step.promote,
            "time": self._now_iso(),
            "alarms": self._last_alarm_summary,
        }
        result["steps"].append(record)
        what = f"promoted: 100% on version {target}" if step.promote else f"{step.weight:.0%} on version {target}"
        self._emit("step", f"step {index}/{total} at +{actual:.2f}s (planned +{step.at_seconds:g}s): {what}; "
                   f"alarms: {self._last_alarm_summary}", step=record)

    def _stop(self, req: LambdaDeployRequest, result: dict, current: str, reason: str) -> dict:
        self._rollback(req, result, current, reason)
        return self._finish(result, "Stopped", f"{reason}; alias {req.alias} rolled back to version {current}",
                            alias_version=current, weights={})


#: botocore Config options for the Lambda client: a synchronous hook may run up to 15 minutes,
#: botocore's default read timeout (60 s) would cut it off and its retry would invoke it again.
def execute(
    options: dict,
    client: Callable[[str], Any],
    check_mode: bool = False,
    progress: ProgressCallback | None = None,
    **engine_kwargs: Any,
) -> dict:
    """Module options -> result dict (with ``failed`` and ``msg`` on failure), for the module and
    the action plugin alike. ``client(service)`` returns a boto3 client ("lambda", "cloudwatch",
    "s3"); clients are only created when needed."""
    try:
        if options.get("recover"):
            for key in ("function_name", "alias"):
                if not options.get(key):
                    raise LambdaDeployError(f"{key}: required with recover: true")
            engine = LambdaDeployment(client("lambda"), progress=progress, **engine_kwargs)
            current = options.get("current_version")
            if current is not None and str(current) == LATEST:
                current = LATEST
            result = engine.recover(options["function_name"], options["alias"],
                                    None if current is None else str(current), check_mode=check_mode)
            result["failed"] = False
            return result
        request = request_from_options(options)
        cloudwatch = client("cloudwatch") if request.alarms else None
        s3 = client("s3") if request.code and request.code.get("s3_bucket") else None
        engine = LambdaDeployment(client("lambda"), cloudwatch, s3, progress=progress, **engine_kwargs)
        return engine.run(request, check_mode=check_mode)
    except LambdaDeployError as exc:
        result = dict(exc.result or {})
        result.update(failed=True, msg=str(exc))
        result.setdefault("changed", False)
        return result
