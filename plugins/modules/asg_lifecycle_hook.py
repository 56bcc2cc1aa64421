#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: asg_lifecycle_hook
short_description: Hold every instance an Auto Scaling group launches until it has the group's revision
version_added: 0.1.0
description:
  - Puts (or removes) an C(autoscaling:EC2_INSTANCE_LAUNCHING) lifecycle hook on an Auto Scaling group, so that
    every instance the group launches stays C(Pending:Wait), out of the group's target groups and classic ELBs,
    until C(rollwright.deploy.asg_lifecycle_action) completes its lifecycle action (see C(docs/event-driven.md)).
  - The C(rollwright.deploy.asg_launches) event source announces held instances (from the hook's SQS
    notifications, or by polling), and the C(rollwright.deploy.scale_out) playbook deploys the deployment group's
    last successful revision to each.
  - Idempotent; runs on the controller.
  - With O(copy_from), RV(hook) is the last hook copied and RV(copied) names them all.
author:
  - Rollwright maintainers (@rollwright)
options:
  name:
    description: The lifecycle hook name.
    type: str
    default: rollwright-deploy
  state:
    description: C(present) puts the hook (creates or updates it), C(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  heartbeat_timeout:
    description:
      - Seconds an instance stays held without a completion; then O(default_result) applies. Allow for the whole
        deployment to one instance, and for a deployment of the group that runs when it launches (the scale-out
        waits for the group's lock).
    type: int
    default: 1800
  default_result:
    description: What Auto Scaling does when the heartbeat timeout passes; C(ABANDON) terminates the instance.
    type: str
    choices: [CONTINUE, ABANDON]
    default: ABANDON
  notification_target_arn:
    description: An SQS queue (or SNS topic) ARN that receives one message per held launch, with its token.
    type: str
  role_arn:
    description: The IAM role Auto Scaling publishes to O(notification_target_arn) with (required with it).
    type: str
  notification_metadata:
    description: Free text Auto Scaling adds to every notification (for example the deployment group name).
    type: str
  copy_from:
    description:
      - Give O(group) every launching hook of this other group instead (same names and settings); the other hook
        options are ignored. The C(rollwright.deploy.bluegreen_ec2) role does this for the group it copies, so the
        copy's scale-outs are held too.
    type: str
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.asg_lifecycle
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Hold launches of the web group until they have the revision (notifications to SQS)
  rollwright.deploy.asg_lifecycle_hook:
    group: web-asg
    heartbeat_timeout: 1800
    notification_target_arn: arn:aws:sqs:eu-west-1:123456789012:web-launches
    role_arn: arn:aws:iam::123456789012:role/asg-lifecycle-to-sqs
    notification_metadata: shop/web
"""

RETURN = r"""
hook:
  description: The hook as Auto Scaling describes it after the change (null when absent).
  returned: always
  type: dict
copied:
  description: The names of the hooks put on O(group) because they differed (with O(copy_from)).
  returned: when O(copy_from) is given
  type: list
  elements: str
"""

from ansible_collections.rollwright.deploy.plugins.module_utils.traffic import asg_lifecycle
from ansible_collections.rollwright.deploy.plugins.module_utils.aws.module import RollwrightAWSModule


def converge(module, client):
    """The module's result: the hooks copied, the hook removed, or the hook made as wanted."""
    p = module.params
    if p["copy_from"]:
        changes = asg_lifecycle.launch_hook_changes(client, p["copy_from"], p["group"])
        if not module.check_mode:
            for wanted in changes:
                asg_lifecycle.put_hook(client, p["group"], wanted)
        copied = [w["LifecycleHookName"] for w in changes]
        return dict(changed=bool(changes), copied=copied, hook=changes[-1] if changes else None,
                    diff={"before": {}, "after": {"copied": copied}})
    current = asg_lifecycle.describe_hook(client, p["group"], p["name"])
    if p["state"] == "absent":
        changed = current is not None
        if changed and not module.check_mode:
            client.delete_lifecycle_hook(AutoScalingGroupName=p["group"], LifecycleHookName=p["name"])
        return dict(changed=changed, hook=None, diff={"before": current or {}, "after": {}})
    wanted = asg_lifecycle.hook_spec(p["name"], p["heartbeat_timeout"], p["default_result"],
                                     p["notification_target_arn"], p["role_arn"], p["notification_metadata"])
    changed = asg_lifecycle.hook_differs(current, wanted)
    after = dict(current or {}, **wanted) if changed else current
    if changed and not module.check_mode:
        asg_lifecycle.put_hook(client, p["group"], wanted)
        after = asg_lifecycle.describe_hook(client, p["group"], p["name"])
    return dict(changed=changed, hook=after, diff={"before": current or {}, "after": after or {}})


def main():
    module = RollwrightAWSModule(
        argument_spec=dict(
            **asg_lifecycle.GROUP_ARGUMENT_SPEC,
            name=dict(type="str", default=asg_lifecycle.DEFAULT_HOOK_NAME),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            heartbeat_timeout=dict(type="int", default=1800),
            default_result=dict(type="str", choices=list(asg_lifecycle.RESULTS), default="ABANDON"),
            notification_target_arn=dict(type="str"),
            role_arn=dict(type="str"),
            notification_metadata=dict(type="str"),
            copy_from=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = module.run_or_fail(f"lifecycle hook {p['name']} of Auto Scaling group {p['group']}",
                                converge, module, module.aws_client("autoscaling"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
