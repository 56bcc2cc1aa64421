# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Auto Scaling launching lifecycle hooks: set one up, find the instances it holds, complete them.

A group with an ``autoscaling:EC2_INSTANCE_LAUNCHING`` hook keeps every instance it launches in
``Pending:Wait`` until CompleteLifecycleAction: CONTINUE puts it in service (the group registers it
with its target groups and classic ELBs), ABANDON terminates it. The ``asg_launches`` event source
announces held instances, the ``scale_out`` playbook deploys to one and completes its action.
The Auto Scaling client is passed in.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
DEFAULT_HOOK_NAME = "rollwright-deploy"
GROUP_ARGUMENT_SPEC = {"group": dict(type="str", required=True)}  # documented by the asg_lifecycle doc fragment
RESULTS = ("CONTINUE", "ABANDON")
HELD_STATE = "Pending:Wait"
HOOK_FIELDS = ("LifecycleTransition", "HeartbeatTimeout", "DefaultResult", "NotificationTargetARN", "RoleARN",
               "NotificationMetadata")


class LifecycleError(RollwrightError, ValueError):
    """A lifecycle hook input or call is wrong; the message names it."""


def describe_hook(client: Any, group: str, name: str) -> Optional[dict]:
    found = client.describe_lifecycle_hooks(AutoScalingGroupName=group, LifecycleHookNames=[name]).get("LifecycleHooks")
    return found[0] if found else None


def launch_hooks(client: Any, group: str) -> list[dict]:
    """The group's launching hooks."""
    hooks = client.describe_lifecycle_hooks(AutoScalingGroupName=group).get("LifecycleHooks") or []
    return [h for h in hooks if h.get("LifecycleTransition") == LAUNCHING]


def hook_spec(name: str, heartbeat_timeout: int, default_result: str, notification_target_arn: Optional[str] = None,
              role_arn: Optional[str] = None, notification_metadata: Optional[str] = None) -> dict:
    """The PutLifecycleHook parameters of a launching hook (validated)."""
    if default_result not in RESULTS:
        raise LifecycleError(f"default_result: expected one of {', '.join(RESULTS)}, got {default_result!r}")
    if not 30 <= int(heartbeat_timeout) <= 7200:
        raise LifecycleError(f"heartbeat_timeout: expected 30 to 7200 seconds (AWS's limits), got {heartbeat_timeout!r}")
    if bool(notification_target_arn) != bool(role_arn):
        raise LifecycleError("notification_target_arn and role_arn: expected both (Auto Scaling publishes to the target "
                             "with that role) or neither")
    spec = {"LifecycleHookName": name, "LifecycleTransition": LAUNCHING, "HeartbeatTimeout": int(heartbeat_timeout),
            "DefaultResult": default_result, "NotificationTargetARN": notification_target_arn, "RoleARN": role_arn,
            "NotificationMetadata": notification_metadata}
    return {k: v for k, v in spec.items() if v is not None}


def hook_differs(current: Optional[dict], wanted: dict) -> bool:
    if current is None:
        return True
    return any(current.get(f) != wanted.get(f) for f in HOOK_FIELDS if f in wanted)


def put_hook(client: Any, group: str, wanted: dict) -> None:
    client.put_lifecycle_hook(AutoScalingGroupName=group, **wanted)


def launch_hook_changes(client: Any, source_group: str, target_group: str) -> list[dict]:
    """The PutLifecycleHook parameters that give target_group the launching hooks of source_group (a blue/green
    copy): one per hook that target_group lacks or has with other settings."""
    present = {h["LifecycleHookName"]: h for h in launch_hooks(client, target_group)}
    changes = []
    for hook in launch_hooks(client, source_group):
        wanted = dict({k: hook[k] for k in HOOK_FIELDS if hook.get(k) is not None}, LifecycleHookName=hook["LifecycleHookName"])
        if hook_differs(present.get(hook["LifecycleHookName"]), wanted):
            changes.append(wanted)
    return changes


def held_instances(client: Any, groups: list[str]) -> list[dict]:
    """Instances the groups hold in Pending:Wait: ``[{group, instance_id}]`` (no token: complete by instance id)."""
    held = []
    paginator = client.get_paginator("describe_auto_scaling_groups")
    for page in paginator.paginate(AutoScalingGroupNames=list(groups)):
        for group in page.get("AutoScalingGroups") or []:
            for inst in group.get("Instances") or []:
                if inst.get("LifecycleState") == HELD_STATE:
                    held.append({"group": group["AutoScalingGroupName"], "instance_id": inst["InstanceId"]})
    return held


def launch_from_message(body: Any) -> Optional[dict]:
    """A held launch from a hook notification (SQS body or EventBridge event), or None for anything else
    (Auto Scaling's test notification, other transitions)."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("detail"), dict):  # EventBridge: "EC2 Instance-launch Lifecycle Action"
        body = body["detail"]
    if body.get("LifecycleTransition") != LAUNCHING or not body.get("EC2InstanceId"):
        return None
    return {"group": body.get("AutoScalingGroupName"), "instance_id": body["EC2InstanceId"],
            "hook": body.get("LifecycleHookName"), "token": body.get("LifecycleActionToken")}


def complete(client: Any, group: str, hook: str, result: str, token: Optional[str] = None,
             instance_id: Optional[str] = None) -> None:
    """CompleteLifecycleAction by token (from the notification) or by instance id."""
    if result not in RESULTS:
        raise LifecycleError(f"result: expected one of {', '.join(RESULTS)}, got {result!r}")
    if not token and not instance_id:
        raise LifecycleError("token or instance_id: expected the lifecycle action token or the instance id")
    args = {"AutoScalingGroupName": group, "LifecycleHookName": hook, "LifecycleActionResult": result}
    if token:
        args["LifecycleActionToken"] = token
    else:
        args["InstanceId"] = instance_id
    client.complete_lifecycle_action(**args)
