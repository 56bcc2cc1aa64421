# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Swap one ALB listener's (or one listener rule's) forward action from one target group to another.

One ModifyListener (default actions) or ModifyRule (rule actions) call; every other listener, every
other rule, and every other part of the actions (weights, stickiness, other action types, order) is
left as it was. amazon.aws.elb_application_lb can only rewrite a load balancer's listeners as a whole
and purges what it is not told about.

Pure helpers (`forwarded_target_groups`, `swap_actions`) plus a thin client wrapper; no Ansible imports.
"""

from __future__ import annotations

import copy
from typing import Any, Optional
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError


class ListenerError(RollwrightError):
    """The listener or rule does not forward as expected; the message says what was found."""


def forwarded_target_groups(actions: list[dict[str, Any]]) -> list[str]:
    """Every target group ARN the actions forward to (TargetGroupArn and ForwardConfig), in order."""
    found: list[str] = []
    for action in actions or []:
        if action.get("Type") != "forward":
            continue
        if action.get("TargetGroupArn"):
            found.append(action["TargetGroupArn"])
        for tg in (action.get("ForwardConfig") or {}).get("TargetGroups") or []:
            if tg.get("TargetGroupArn"):
                found.append(tg["TargetGroupArn"])
    return list(dict.fromkeys(found))


def swap_actions(actions: list[dict[str, Any]], from_arn: str, to_arn: str) -> tuple[list[dict[str, Any]], bool]:
    """The actions with every forward to `from_arn` pointed at `to_arn` instead (weights kept).

    Returns (new actions, changed). Already forwarding to `to_arn` only: unchanged. Forwarding to
    both (a weighted mix) is refused: a one-call swap would merge two entries and lose a weight.
    """
    targets = forwarded_target_groups(actions)
    if from_arn in targets and to_arn in targets:
        raise ListenerError(f"the action forwards to both {from_arn} and {to_arn} (weighted); "
                            "a swap expects it to forward to one of them")
    new = copy.deepcopy(list(actions or []))
    changed = False
    for action in new:
        if action.get("Type") != "forward":
            continue
        if action.get("TargetGroupArn") == from_arn:
            action["TargetGroupArn"] = to_arn
            changed = True
        forward = action.get("ForwardConfig")
        if forward:
            for tg in forward.get("TargetGroups") or []:
                if tg.get("TargetGroupArn") == from_arn:
                    tg["TargetGroupArn"] = to_arn
                    changed = True
            # A forward action with both TargetGroupArn and a one-entry ForwardConfig must name the same group.
            if action.get("TargetGroupArn") and len(forward.get("TargetGroups") or []) == 1:
                forward["TargetGroups"][0]["TargetGroupArn"] = action["TargetGroupArn"]
    return new, changed


def live_and_idle(actions: list[dict[str, Any]], pair: list[str]) -> tuple[str, str]:
    """Of a blue/green pair of target groups, (the one the actions forward to, the other one)."""
    if len(pair) != 2 or pair[0] == pair[1]:
        raise ListenerError(f"listener mode needs exactly two different target groups (blue and green), got {pair!r}")
    targets = forwarded_target_groups(actions)
    live = [arn for arn in pair if arn in targets]
    if len(live) != 1:
        raise ListenerError(
            f"the listener action forwards to {targets or 'no target group'}; expected exactly one of {pair} "
            "(the target group now serving)")
    return live[0], pair[1] if live[0] == pair[0] else pair[0]


class ListenerSwitch:
    """Read and write one listener's default actions or one rule's actions."""

    def __init__(self, elbv2: Any):
        self.elbv2 = elbv2

    def read(self, listener_arn: str, rule_arn: Optional[str] = None) -> list[dict[str, Any]]:
        if rule_arn:
            rules = self.elbv2.describe_rules(RuleArns=[rule_arn])["Rules"]
            if not rules:
                raise ListenerError(f"listener rule {rule_arn} not found")
            return list(rules[0].get("Actions") or [])
        listeners = self.elbv2.describe_listeners(ListenerArns=[listener_arn])["Listeners"]
        if not listeners:
            raise ListenerError(f"listener {listener_arn} not found")
        return list(listeners[0].get("DefaultActions") or [])

    def write(self, listener_arn: str, rule_arn: Optional[str], actions: list[dict[str, Any]]) -> None:
        if rule_arn:
            self.elbv2.modify_rule(RuleArn=rule_arn, Actions=actions)
        else:
            self.elbv2.modify_listener(ListenerArn=listener_arn, DefaultActions=actions)

    def swap(self, listener_arn: str, rule_arn: Optional[str], from_arn: str, to_arn: str,
             check_mode: bool = False) -> dict[str, Any]:
        """Swap in one call; returns {changed, before, after}."""
        before = self.read(listener_arn, rule_arn)
        targets = forwarded_target_groups(before)
        if from_arn not in targets and to_arn not in targets:
            raise ListenerError(f"{'rule ' + rule_arn if rule_arn else 'listener ' + listener_arn} forwards to "
                                f"{targets or 'no target group'}, neither {from_arn} nor {to_arn}; nothing was changed")
        after, changed = swap_actions(before, from_arn, to_arn)
        if changed and not check_mode:
            self.write(listener_arn, rule_arn, after)
        return {"changed": changed, "before": before, "after": after}
