#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: listener_swap
short_description: Point one ALB listener's (or one rule's) forward action at another target group
version_added: 0.1.0
description:
  - Swaps the forward action of one Application Load Balancer listener (its default actions) or of one
    listener rule from one target group to another, in one C(ModifyListener) or C(ModifyRule) call.
  - Every other listener, every other rule, and every other part of the actions (other action types,
    their order, forward weights and stickiness) is left exactly as it was. M(amazon.aws.elb_application_lb)
    rewrites a load balancer's listeners as a whole and purges what it is not told about; this module
    changes only what it names.
  - With O(from_target_group_arn) and O(to_target_group_arn) both given, the action must forward to one of
    them; when it already forwards to O(to_target_group_arn), nothing changes.
  - With O(target_group_pair), the module swaps to whichever of the two groups the action does not forward
    to now (blue/green flip).
  - Runs on the controller; delegate it to C(localhost).
author:
  - Rollwright maintainers (@rollwright)
options:
  listener_arn:
    description: The listener whose default actions (or whose rule, see O(rule_arn)) forward traffic.
    type: str
    required: true
  rule_arn:
    description: A rule of the listener to swap instead of the listener's default actions.
    type: str
  from_target_group_arn:
    description: The target group the action forwards to now.
    type: str
  to_target_group_arn:
    description: The target group the action should forward to.
    type: str
  target_group_pair:
    description:
      - Two target group ARNs (a list, or a comma-separated string for AWX surveys); the action is pointed at
        the one it does not forward to now. Mutually exclusive with O(from_target_group_arn) and O(to_target_group_arn).
    type: list
    elements: str
extends_documentation_fragment:
  - rollwright.deploy.attributes
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
- name: Send the listener's traffic to the green target group
  rollwright.deploy.listener_swap:
    listener_arn: "{{ listener_arn }}"
    from_target_group_arn: "{{ blue_tg }}"
    to_target_group_arn: "{{ green_tg }}"
  delegate_to: localhost

- name: Flip one path rule between its two groups, leaving the listener's default action alone
  rollwright.deploy.listener_swap:
    listener_arn: "{{ listener_arn }}"
    rule_arn: "{{ api_rule_arn }}"
    target_group_pair: "{{ blue_tg }},{{ green_tg }}"
  delegate_to: localhost
"""

RETURN = r"""
from_target_group_arn:
  description: The target group the action forwarded to before.
  returned: success
  type: str
to_target_group_arn:
  description: The target group the action forwards to now (or would, in check mode).
  returned: success
  type: str
actions_before:
  description: The listener's default actions (or the rule's actions) before the call, as the API returned them.
  returned: success
  type: list
  elements: dict
actions_after:
  description: The actions written (or that would be written in check mode).
  returned: success
  type: list
  elements: dict
"""

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.module import RollwrightAWSModule
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.listener import (
    ListenerError,
    ListenerSwitch,
    live_and_idle,
)


def swap_listener(module):
    """(from, to, the swap's before/after): the pair's live and idle group, or the two given, swapped."""
    params = module.params
    switch = ListenerSwitch(module.aws_client("elbv2"))
    if params["target_group_pair"]:
        pair = [p.strip() for item in params["target_group_pair"] for p in item.split(",") if p.strip()]
        current = switch.read(params["listener_arn"], params["rule_arn"])
        try:
            source, target = live_and_idle(current, pair)
        except ListenerError as exc:
            raise ListenerError(f"target_group_pair: {exc}", field="target_group_pair") from exc
    else:
        source, target = params["from_target_group_arn"], params["to_target_group_arn"]
        if source == target:
            raise ListenerError("to_target_group_arn: expected a target group other than from_target_group_arn",
                                field="to_target_group_arn")
    swap = switch.swap(params["listener_arn"], params["rule_arn"], source, target, check_mode=module.check_mode)
    return source, target, swap


def main():
    module = RollwrightAWSModule(
        argument_spec=dict(
            listener_arn=dict(type="str", required=True),
            rule_arn=dict(type="str"),
            from_target_group_arn=dict(type="str"),
            to_target_group_arn=dict(type="str"),
            target_group_pair=dict(type="list", elements="str"),
        ),
        supports_check_mode=True,
        mutually_exclusive=[("target_group_pair", "from_target_group_arn"), ("target_group_pair", "to_target_group_arn")],
        required_together=[("from_target_group_arn", "to_target_group_arn")],
        required_one_of=[("target_group_pair", "to_target_group_arn")],
    )
    params = module.params
    source, target, swap = module.run_or_fail("Could not read or modify the listener or rule", swap_listener, module)
    result = dict(changed=swap["changed"], from_target_group_arn=source, to_target_group_arn=target,
                  actions_before=swap["before"], actions_after=swap["after"])
    if module._diff:
        result["diff"] = {"before": {"actions": swap["before"]}, "after": {"actions": swap["after"]}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
