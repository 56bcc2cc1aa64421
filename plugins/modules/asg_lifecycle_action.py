#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: asg_lifecycle_action
short_description: Let a held Auto Scaling instance into service, or abandon it
version_added: 0.1.0
description:
  - Completes the lifecycle action (C(CompleteLifecycleAction)) of an instance an Auto Scaling group holds in
    C(Pending:Wait) by a launching hook. C(CONTINUE) puts it in service (the group registers it with its target
    groups and classic ELBs), C(ABANDON) terminates it (the group launches a replacement).
  - Identifies the action by the token of the hook's notification, or by the instance id.
  - Runs on the controller. Not idempotent by nature; an action that is no longer pending fails with AWS's message.
author:
  - Rollwright maintainers (@rollwright)
options:
  hook:
    description: The lifecycle hook name.
    type: str
    default: rollwright-deploy
  result:
    description: C(CONTINUE) or C(ABANDON).
    type: str
    choices: [CONTINUE, ABANDON]
    required: true
  token:
    description: The lifecycle action token (from the hook's notification).
    type: str
  instance_id:
    description: The held instance (when there is no token, for example when launches are found by polling).
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
    details: In check mode nothing is completed; the result says what would be.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: The instance has the revision - let it take traffic
  rollwright.deploy.asg_lifecycle_action:
    group: web-asg
    instance_id: i-0123456789abcdef0
    result: CONTINUE
"""

RETURN = r"""
result:
  description: The result sent (or that would be sent in check mode).
  returned: always
  type: str
"""

from ansible_collections.rollwright.deploy.plugins.module_utils.traffic import asg_lifecycle
from ansible_collections.rollwright.deploy.plugins.module_utils.aws.module import RollwrightAWSModule


def main():
    module = RollwrightAWSModule(
        argument_spec=dict(
            **asg_lifecycle.GROUP_ARGUMENT_SPEC,
            hook=dict(type="str", default=asg_lifecycle.DEFAULT_HOOK_NAME),
            result=dict(type="str", choices=list(asg_lifecycle.RESULTS), required=True),
            token=dict(type="str", no_log=False),
            instance_id=dict(type="str"),
        ),
        required_one_of=[("token", "instance_id")],
        supports_check_mode=True,
    )
    p = module.params
    if module.check_mode:
        module.exit_json(changed=True, result=p["result"])
    module.run_or_fail(f"completing the lifecycle action of {p['token'] or p['instance_id']} "
                       f"({p['group']}, hook {p['hook']}) with {p['result']}",
                       asg_lifecycle.complete, module.aws_client("autoscaling"), p["group"], p["hook"], p["result"],
                       token=p["token"], instance_id=p["instance_id"])
    module.exit_json(changed=True, result=p["result"])


if __name__ == "__main__":
    main()
