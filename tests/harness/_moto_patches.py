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
- S3 event notifications (moto sends them to SQS) carry the object's ``versionId`` (versioned
  buckets) and a ``sequencer``, as AWS's do.
- Auto Scaling launching lifecycle hooks: an instance a group launches while it has an
  ``autoscaling:EC2_INSTANCE_LAUNCHING`` hook stays ``Pending:Wait`` (counted in the group's
  capacity, not registered with its target groups or classic ELBs) until CompleteLifecycleAction
  (by token or instance id): CONTINUE makes it ``InService`` and registers it, ABANDON terminates it
  (the group launches a replacement). The hook's HeartbeatTimeout applies its DefaultResult. The
  hook's NotificationTargetARN (an SQS queue) gets AWS's test notification when the hook is put and
  one message per held launch (with the LifecycleActionToken).
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


def _patch_s3_notifications() -> None:
    from moto.s3 import notifications as n

    orig_event = n._get_s3_event  # pylint: disable=protected-access
    sequence = iter(range(1, 1 << 62))

    def s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        event = orig_event(event_name, bucket, key, notification_id)
        obj = event["Records"][0]["s3"]["object"]
        if bucket.is_versioned and getattr(key, "version_id", None):
            obj["versionId"] = key.version_id
        with _LOCK:
            obj["sequencer"] = f"{next(sequence):016X}"
        return event

    n._get_s3_event = s3_event  # pylint: disable=protected-access


LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


def _patch_autoscaling_hooks() -> None:
    import json
    import uuid
    from datetime import datetime, timezone

    from moto.autoscaling import models as m
    from moto.autoscaling import responses as r
    from moto.autoscaling.exceptions import ValidationError
    from moto.core.responses import EmptyResult

    group_cls = m.FakeAutoScalingGroup
    orig_replace = group_cls.replace_autoscaling_group_instances
    orig_put_hook = r.AutoScalingResponse.put_lifecycle_hook

    def _notify(backend: Any, target_arn: str | None, body: dict[str, Any]) -> None:
        if not target_arn or ":sqs:" not in target_arn:
            return
        from moto.sqs.models import sqs_backends

        parts = target_arn.split(":")
        sqs_backends[parts[4]][parts[3]].send_message(parts[5], json.dumps(body))

    def _message(group: Any, hook: Any, instance_id: str, token: str) -> dict[str, Any]:
        return {
            "Origin": "EC2", "Destination": "AutoScalingGroup", "Service": "AWS Auto Scaling",
            "Time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "AccountId": group.account_id, "RequestId": str(uuid.uuid4()),
            "LifecycleTransition": LAUNCHING, "AutoScalingGroupName": group.name,
            "LifecycleHookName": hook.name, "LifecycleActionToken": token, "EC2InstanceId": instance_id,
        } | ({"NotificationMetadata": hook.rw_metadata} if getattr(hook, "rw_metadata", None) else {})

    def _launch_hooks(group: Any) -> list[Any]:
        backend = group.autoscaling_backend
        return [h for h in backend.lifecycle_hooks.values()
                if h.auto_scaling_group_name == group.name and h.lifecycle_transition == LAUNCHING]

    def replace_instances(self: Any, count_needed: int, propagated_tags: dict[str, str]) -> None:
        with _LOCK:
            before = {s.instance.id for s in self.instance_states}
            orig_replace(self, count_needed, propagated_tags)
            hooks = _launch_hooks(self)
            if not hooks:
                return
            hook = hooks[0]
            actions = self.autoscaling_backend.__dict__.setdefault("rw_lifecycle_actions", {})
            for state in self.instance_states:
                if state.instance.id in before:
                    continue
                token = str(uuid.uuid4())
                state.lifecycle_state = "Pending:Wait"
                actions[token] = {"group": self.name, "hook": hook.name, "instance_id": state.instance.id,
                                  "deadline": _now() + float(hook.heartbeat_timeout), "default": hook.default_result}
                _notify(self.autoscaling_backend, getattr(hook, "rw_target", None),
                        _message(self, hook, state.instance.id, token))

    def active_instances(self: Any) -> list[Any]:
        # Pending instances count toward the group's capacity (AWS does not launch more for them).
        return [x for x in self.instance_states if x.lifecycle_state in ("InService", "Pending:Wait")]

    def in_service_ids(group: Any) -> set[str]:
        return {s.instance.id for s in group.instance_states if s.lifecycle_state == "InService"}

    def update_attached_elbs(self: Any, group_name: str) -> None:
        group = self.autoscaling_groups[group_name]
        if not group.load_balancer_names:
            return
        try:
            elbs = self.elb_backend.describe_load_balancers(names=group.load_balancer_names)
        except Exception:  # pylint: disable=broad-except
            return
        members = in_service_ids(group)
        for elb in elbs:
            present = set(elb.instance_ids)
            self.elb_backend.register_instances(elb.name, members - present, from_autoscaling=True)
            self.elb_backend.deregister_instances(elb.name, present - members, from_autoscaling=True)

    def update_attached_target_groups(self: Any, group_name: str) -> None:
        group = self.autoscaling_groups[group_name]
        if not group.target_group_arns:
            return
        members = in_service_ids(group)
        for target_group in self.elbv2_backend.describe_target_groups(
                target_group_arns=group.target_group_arns, load_balancer_arn=None, names=None):
            targets = [{"Id": i, "Port": target_group.port} for i in sorted(members)]
            if targets:
                self.elbv2_backend.register_targets(target_group.arn, targets)

    def complete(backend: Any, token: str, result: str) -> None:
        with _LOCK:
            action = backend.__dict__.get("rw_lifecycle_actions", {}).pop(token)
            group = backend.autoscaling_groups.get(action["group"])
            if group is None:
                return
            state = next((s for s in group.instance_states if s.instance.id == action["instance_id"]), None)
            if state is None:
                return
            if result == "CONTINUE":
                state.lifecycle_state = "InService"
                backend.update_attached_elbs(group.name)
                backend.update_attached_target_groups(group.name)
            else:
                state.lifecycle_state = "Terminating"
                backend.detach_instances(group.name, [state.instance.id], False)  # launches a replacement
                backend.ec2_backend.terminate_instances([state.instance.id])

    def expire(backend: Any) -> None:
        with _LOCK:
            actions = backend.__dict__.get("rw_lifecycle_actions", {})
            for token, action in list(actions.items()):
                if action["deadline"] <= _now():
                    complete(backend, token, action["default"])

    def put_lifecycle_hook(self: Any) -> Any:
        result = orig_put_hook(self)
        backend = self.autoscaling_backend
        name, group_name = self._get_param("LifecycleHookName"), self._get_param("AutoScalingGroupName")
        hook = backend.lifecycle_hooks[f"{group_name}_{name}"]
        hook.rw_target = self._get_param("NotificationTargetARN")
        hook.rw_metadata = self._get_param("NotificationMetadata")
        hook.notification_target_arn = hook.rw_target
        hook.notification_metadata = hook.rw_metadata
        hook.role_arn = self._get_param("RoleARN")
        if hook.rw_target:
            _notify(backend, hook.rw_target, {
                "AccountId": self.current_account, "RequestId": str(uuid.uuid4()), "AutoScalingGroupName": group_name,
                "Service": "AWS Auto Scaling", "Event": "autoscaling:TEST_NOTIFICATION",
                "Time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "AutoScalingGroupARN": backend.autoscaling_groups[group_name].arn})
        return result

    def complete_lifecycle_action(self: Any) -> Any:
        backend = self.autoscaling_backend
        expire(backend)
        group_name, hook_name = self._get_param("AutoScalingGroupName"), self._get_param("LifecycleHookName")
        token, instance_id = self._get_param("LifecycleActionToken"), self._get_param("InstanceId")
        result = self._get_param("LifecycleActionResult")
        if result not in ("CONTINUE", "ABANDON"):
            raise ValidationError("LifecycleActionResult must be CONTINUE or ABANDON")
        with _LOCK:
            actions = backend.__dict__.get("rw_lifecycle_actions", {})
            found = next((t for t, a in actions.items() if a["group"] == group_name and a["hook"] == hook_name
                          and (t == token if token else a["instance_id"] == instance_id)), None)
            if found is None:
                raise ValidationError(
                    f"No active Lifecycle Action found with token {token}" if token
                    else f"No active Lifecycle Action found with instance ID {instance_id}")
            complete(backend, found, result)
        return EmptyResult()

    orig_describe_groups = m.AutoScalingBackend.describe_auto_scaling_groups
    orig_describe_instances = m.AutoScalingBackend.describe_auto_scaling_instances

    def describe_groups(self: Any, *args: Any, **kwargs: Any) -> Any:
        expire(self)
        return orig_describe_groups(self, *args, **kwargs)

    def describe_instances(self: Any, *args: Any, **kwargs: Any) -> Any:
        expire(self)
        return orig_describe_instances(self, *args, **kwargs)

    group_cls.replace_autoscaling_group_instances = replace_instances
    group_cls.active_instances = active_instances
    m.AutoScalingBackend.update_attached_elbs = update_attached_elbs
    m.AutoScalingBackend.update_attached_target_groups = update_attached_target_groups
    m.AutoScalingBackend.describe_auto_scaling_groups = describe_groups
    m.AutoScalingBackend.describe_auto_scaling_instances = describe_instances
    r.AutoScalingResponse.put_lifecycle_hook = put_lifecycle_hook
    r.AutoScalingResponse.complete_lifecycle_action = complete_lifecycle_action


def apply() -> None:
    """Apply every patch (idempotent)."""
    if getattr(apply, "done", False):
        return
    _patch_lambda()
    _patch_elbv2()
    _patch_elb()
    _moto_iam.apply()
    _patch_s3_notifications()
    _patch_autoscaling_hooks()
    apply.done = True  # type: ignore[attr-defined]
