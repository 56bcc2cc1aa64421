# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS behaviour moto leaves out, patched into moto's backend classes (emulator process only).

- ELBv2: a newly registered target is ``initial`` (``Elb.RegistrationInProgress``) for the target
  group's HealthCheckIntervalSeconds x HealthyThresholdCount (or the number of seconds in its tag
  ``rollwright-emulator:registration-seconds``, since AWS's minimum is 10 s), then ``healthy``; a deregistered
  target is ``draining`` (``Target.DeregistrationInProgress``) for the target group's
  ``deregistration_delay.timeout_seconds`` (read at deregistration), then leaves
  describe_target_health; re-registering a draining target makes it ``initial`` again.
- Classic ELB: register/deregister responses list the load balancer's current instances; an
  instance that is not registered is ``OutOfService`` (ReasonCode ``ELB``) in
  describe_instance_health; registering twice does not duplicate an instance.
- Lambda (simple backend, no Docker): invoking an unknown function or qualifier fails as in AWS,
  ``Qualifier`` is honoured, every invocation is recorded, and a queue of scripted results (each
  with an optional function error) is served first-in first-out.
- IAM: enforcement (off unless ``/moto-api/reset-auth`` turns it on) with resources and conditions, see
  ``_moto_iam``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from tests.harness import _moto_iam

_LOCK = threading.RLock()

# Test-only knob: AWS's minimum health-check time is 5 s x 2 checks = 10 s. A target group tagged
# with this key (a number of seconds, e.g. "2") uses that instead of interval x healthy threshold.
REGISTRATION_SECONDS_TAG = "rollwright-emulator:registration-seconds"

# Lambda: (account, region) -> queue of {"payload": str, "function_error": str | None}
LAMBDA_RESULTS: dict[tuple[str, str], list[dict[str, Any]]] = {}
# Lambda: (account, region) -> invocations, oldest first
LAMBDA_INVOCATIONS: dict[tuple[str, str], list[dict[str, Any]]] = {}


def _now() -> float:
    return time.monotonic()


def _patch_elbv2() -> None:
    from moto.elbv2 import models as m

    tg_cls = m.FakeTargetGroup
    orig_register = tg_cls.register
    orig_deregister = tg_cls.deregister
    orig_health_for = tg_cls.health_for

    def _state(self: Any) -> tuple[dict[str, float], "OrderedDict[str, tuple[dict[str, Any], float]]"]:
        if not hasattr(self, "_rw_registered_at"):
            self._rw_registered_at = {}
            self._rw_draining = OrderedDict()
        return self._rw_registered_at, self._rw_draining

    def _expire(self: Any) -> None:
        draining = _state(self)[1]
        now = _now()
        for target_id, (unused_target, until) in list(draining.items()):
            if until <= now:
                del draining[target_id]

    def register(self: Any, targets: list[dict[str, Any]]) -> None:
        with _LOCK:
            registered_at, draining = _state(self)
            fresh = [t["Id"] for t in targets if t["Id"] not in self.targets]
            orig_register(self, targets)
            now = _now()
            for target_id in fresh:
                registered_at[target_id] = now
                draining.pop(target_id, None)

    def deregister(self: Any, targets: list[dict[str, Any]]) -> None:
        with _LOCK:
            registered_at, draining = _state(self)
            _expire(self)
            active = [t for t in targets if t["Id"] in self.targets or t["Id"] not in draining]
            if not active:
                return
            delay = int(self.attributes.get("deregistration_delay.timeout_seconds", 300))
            ids = [t["Id"] for t in active]
            stored = {i: dict(self.targets[i]) for i in ids if i in self.targets}
            orig_deregister(self, active)
            until = _now() + delay
            for target_id in ids:
                registered_at.pop(target_id, None)
                if delay > 0 and target_id in stored:
                    draining[target_id] = (stored[target_id], until)

    def health_for(self: Any, target: dict[str, Any], ec2_backend: Any) -> Any:
        with _LOCK:
            registered_at, draining = _state(self)
            _expire(self)
            target_id = target["Id"]
            if target_id in self.targets:
                status = orig_health_for(self, target, ec2_backend)
                if status.status == "healthy":
                    settle = getattr(self, "_rw_settle_override", None)
                    if settle is None:
                        settle = int(self.health_check_interval_seconds) * int(self.healthy_threshold_count)
                    since = registered_at.get(target_id)
                    if since is not None and _now() - since < settle:
                        status.status = "initial"
                        status.reason = "Elb.RegistrationInProgress"
                        status.description = "Target registration is in progress"
                return status
            if target_id in draining:
                stored = draining[target_id][0]
                return m.FakeHealthStatus(
                    target_id, stored["Port"], self.health_check_port, "draining",
                    "Target.DeregistrationInProgress", "Target deregistration is in progress",
                )
            return orig_health_for(self, target, ec2_backend)

    def describe_target_health(self: Any, target_group_arn: str, targets: list[dict[str, Any]]) -> list[Any]:
        target_group = self.target_groups.get(target_group_arn)
        if target_group is None:
            raise m.TargetGroupNotFoundError()
        with _LOCK:
            tags = self.tagging_service.get_tag_dict_for_resource(target_group_arn)
            try:
                target_group._rw_settle_override = float(tags[REGISTRATION_SECONDS_TAG])
            except (KeyError, TypeError, ValueError):
                target_group._rw_settle_override = None
            if not targets:
                _state(target_group)
                _expire(target_group)
                targets = list(target_group.targets.values())
                targets += [entry[0] for i, entry in target_group._rw_draining.items() if i not in target_group.targets]
            return [target_group.health_for(t, self.ec2_backend) for t in targets]

    tg_cls.register = register
    tg_cls.deregister = deregister
    tg_cls.health_for = health_for
    m.ELBv2Backend.describe_target_health = describe_target_health


def _patch_elb() -> None:
    from moto.core.responses import ActionResult
    from moto.elb import models as m
    from moto.elb import responses as r

    orig_register = m.ELBBackend.register_instances

    def register_instances(self: Any, load_balancer_name: str, instance_ids: Any, from_autoscaling: bool = False) -> Any:
        balancer = self.get_load_balancer(load_balancer_name)
        if balancer is None:
            raise m.LoadBalancerNotFoundError(load_balancer_name)
        present = set(balancer.instance_ids)
        new_ids = []
        for instance_id in instance_ids:
            if instance_id not in present:
                new_ids.append(instance_id)
                present.add(instance_id)
        return orig_register(self, load_balancer_name, new_ids, from_autoscaling)

    def describe_instance_health(self: Any, lb_name: str, instances: list[dict[str, str]]) -> list[dict[str, Any]]:
        balancer = self.get_load_balancer(lb_name)
        if balancer is None:
            raise m.NoActiveLoadBalancerFoundError(name=lb_name)
        from moto.ec2.models import ec2_backends

        ec2 = ec2_backends[self.account_id][self.region_name]
        registered = balancer.instance_ids
        wanted = [i["InstanceId"] for i in instances] or list(registered)
        states = []
        for instance_id in wanted:
            if instance_id not in registered:
                states.append({"InstanceId": instance_id, "State": "OutOfService", "ReasonCode": "ELB",
                               "Description": "Instance is not currently registered with the LoadBalancer."})
                continue
            try:
                running = ec2.get_instance(instance_id).is_running()
            except Exception:  # pylint: disable=broad-except
                running = False
            if running:
                states.append({"InstanceId": instance_id, "State": "InService", "ReasonCode": "N/A", "Description": "N/A"})
            else:
                states.append({"InstanceId": instance_id, "State": "OutOfService", "ReasonCode": "Instance",
                               "Description": "Instance is in stopped state."})
        return states

    def _instances_result(balancer: Any) -> Any:
        return ActionResult({"Instances": [{"InstanceId": i} for i in balancer.instance_ids]})

    def register_response(self: Any) -> Any:
        ids = [i["InstanceId"] for i in self._get_param("Instances", [])]
        return _instances_result(self.elb_backend.register_instances(self._get_param("LoadBalancerName"), ids))

    def deregister_response(self: Any) -> Any:
        ids = [i["InstanceId"] for i in self._get_param("Instances", [])]
        return _instances_result(self.elb_backend.deregister_instances(self._get_param("LoadBalancerName"), ids))

    def describe_instance_health_response(self: Any) -> Any:
        states = self.elb_backend.describe_instance_health(self._get_param("LoadBalancerName"), self._get_param("Instances", []))
        return ActionResult({"InstanceStates": states})

    m.ELBBackend.register_instances = register_instances
    m.ELBBackend.describe_instance_health = describe_instance_health
    r.ELBResponse.register_instances_with_load_balancer = register_response
    r.ELBResponse.deregister_instances_from_load_balancer = deregister_response
    r.ELBResponse.describe_instance_health = describe_instance_health_response


def _patch_lambda() -> None:
    from moto.awslambda import responses as lr
    from moto.awslambda_simple import models as sm
    from moto.core.models import default_user_config

    default_user_config.setdefault("lambda", {})["use_docker"] = False

    orig_invoke = sm.LambdaSimpleBackend.invoke

    def invoke(self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any) -> Any:
        fn = self.get_function(function_name, qualifier)  # unknown function / qualifier -> ResourceNotFound
        key = (self.account_id, self.region_name)
        with _LOCK:
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
            LAMBDA_INVOCATIONS.setdefault(key, []).append({
                "function_name": function_name, "qualifier": qualifier, "version": str(fn.version),
                "payload": text, "invocation_type": (headers or {}).get("X-Amz-Invocation-Type", "RequestResponse"),
                "time": time.time(),
            })
            queue = LAMBDA_RESULTS.get(key) or []
            scripted = queue.pop(0) if queue else None
        if scripted is None:
            return orig_invoke(self, function_name, qualifier, body, headers, response_headers)
        if scripted.get("function_error"):
            response_headers["x-amz-function-error"] = str(scripted["function_error"])
        return str(scripted.get("payload", "")).encode("utf-8")

    orig_response_invoke = lr.LambdaResponse.invoke

    def response_invoke(self: Any) -> Any:
        # moto reads the lower-case "qualifier"; the API (and boto3) sends "Qualifier".
        wanted = self.querystring.get("Qualifier")
        if wanted and "qualifier" not in self.querystring:
            self.querystring["qualifier"] = wanted
        return orig_response_invoke(self)

    sm.LambdaSimpleBackend.invoke = invoke
    lr.LambdaResponse.invoke = response_invoke


def apply() -> None:
    """Apply every patch (idempotent)."""
    if getattr(apply, "done", False):
        return
    _patch_lambda()
    _patch_elbv2()
    _patch_elb()
    _moto_iam.apply()
    apply.done = True  # type: ignore[attr-defined]
