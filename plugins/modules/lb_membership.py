#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lb_membership
short_description: Record, deregister and restore hosts' load-balancer membership in batches
version_added: 0.1.0
description:
  - Records which ELBv2 target groups (with ports) and classic ELBs a set of instances belongs to,
    takes them out in one call per target group or load balancer and waits for draining (BlockTraffic),
    and puts exactly the recorded membership back and waits for health checks (AllowTraffic).
  - Only the configured target groups and load balancers are looked at; a configured one that does not
    exist fails the task before anything changes.
  - A target that is still draining is registered again on C(present)/C(restore) (unlike
    M(community.aws.elb_target), which skips it).
  - The waits honour the target group's deregistration delay and health check settings by default
    (see O(wait_timeout)).
  - Runs on the controller; delegate it to C(localhost).
author:
  - Rollwright maintainers (@rollwright)
options:
  instance_ids:
    description:
      - EC2 instance ids to act on.
      - Required for O(state=snapshot) and O(state=absent); for O(state=present) without O(memberships),
        each instance is registered in every configured target group (on the group's port) and classic ELB.
      - With O(memberships), limits them to these instances.
    type: list
    elements: str
    default: []
  state:
    description:
      - V(snapshot) returns the current membership and changes nothing.
      - V(absent) deregisters every membership found (returned in RV(memberships) so it can be restored
        later) and, with O(wait), waits until the targets have drained.
      - V(present) registers O(memberships) (or the instances in every configured group) and, with O(wait),
        waits until they are healthy.
      - V(restore) registers exactly the recorded O(memberships) (ports included) and waits like V(present).
    type: str
    choices: [snapshot, absent, present, restore]
    default: snapshot
  memberships:
    description:
      - Memberships recorded earlier (RV(memberships) of a V(snapshot) or V(absent) run), for V(restore)
        and V(present).
      - Each is a dictionary with C(kind=elbv2) and C(target_group_arn), C(target_id), C(port),
        C(availability_zone); or with C(kind=classic_elb) and C(load_balancer_name), C(instance_id).
    type: list
    elements: dict
extends_documentation_fragment:
  - rollwright.deploy.attributes
  - rollwright.deploy.load_balancer
  - rollwright.deploy.load_balancer.wait
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    details: Reports what would be deregistered or registered without changing anything.
  diff_mode:
    support: full
    details: Shows the memberships before and after.
"""

EXAMPLES = r"""
- name: Record the membership of a batch and take it out of its target groups (BlockTraffic)
  rollwright.deploy.lb_membership:
    instance_ids: "{{ batch_instance_ids }}"
    load_balancer:
      target_group_arns:
        - arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef
      classic_elb_names: [legacy-web]
    state: absent
  delegate_to: localhost
  register: blocked

- name: Put exactly that membership back and wait until healthy (AllowTraffic)
  rollwright.deploy.lb_membership:
    memberships: "{{ blocked.memberships }}"
    state: restore
    wait_timeout: 600
  delegate_to: localhost

- name: Register replacement instances in every configured target group (blue/green)
  rollwright.deploy.lb_membership:
    instance_ids: "{{ green_instance_ids }}"
    load_balancer:
      target_group_names: [web]
    state: present
  delegate_to: localhost

- name: Only look
  rollwright.deploy.lb_membership:
    instance_ids: [i-0123456789abcdef0]
    load_balancer:
      target_group_names: [web, api]
  delegate_to: localhost
  register: current
"""

RETURN = r"""
memberships:
  description:
    - For V(snapshot) and V(absent), the membership found before any change (restore it with V(restore)).
    - For V(present) and V(restore), the membership requested.
  returned: always
  type: list
  elements: dict
  sample:
    - {kind: elbv2, target_group_arn: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef",
       target_id: i-0123456789abcdef0, port: 80, availability_zone: null}
    - {kind: classic_elb, load_balancer_name: legacy-web, instance_id: i-0123456789abcdef0}
by_instance:
  description: RV(memberships) keyed by instance id (an instance in no load balancer has an empty list).
  returned: always
  type: dict
deregistered:
  description: Memberships deregistered (or that would be, in check mode).
  returned: when O(state=absent)
  type: list
  elements: dict
registered:
  description: Memberships registered (or that would be, in check mode); a target already registered and
    not draining is left alone.
  returned: when O(state=present) or O(state=restore)
  type: list
  elements: dict
health:
  description: Current health per instance (C(healthy), C(unhealthy), C(initial), C(draining), C(unused), ...).
  returned: when O(state=snapshot)
  type: dict
wait:
  description: The result of the wait, per instance (C(status) drained, healthy, unhealthy or timeout, last
    C(state) and C(reason)).
  returned: when O(wait) is true and something was waited for
  type: dict
api_calls:
  description: Load-balancer API calls made, by operation.
  returned: always
  type: dict
  sample: {DescribeTargetGroups: 1, DescribeTargetHealth: 2, DeregisterTargets: 2}
"""

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.module import RollwrightAWSModule
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers import (
    LoadBalancerError,
    by_host,
    load_balancer_from_config,
    memberships_from_list,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import DRAINING, UNUSED

try:
    import botocore
except ImportError:
    pass  # handled by AnsibleAWSModule

NOT_IN_USE = "Target.NotInUse"


def needs_registration(state, reason):
    """Not registered, or on its way out: register (again)."""
    return state == DRAINING or (state == UNUSED and reason != NOT_IN_USE)


def _flat(snapshot):
    return [m for ms in snapshot.values() for m in ms]


def _dicts(memberships):
    return [m.to_dict() for m in memberships]


def run(module, lb):
    params = module.params
    state = params["state"]
    instance_ids = list(dict.fromkeys(params["instance_ids"] or []))
    result = {"changed": False}

    if state in ("snapshot", "absent"):
        before = _flat(lb.snapshot(instance_ids))
        result["memberships"] = _dicts(before)
        result["by_instance"] = {h: _dicts(ms) for h, ms in by_host(before, instance_ids).items()}
        if state == "snapshot":
            result["health"] = lb.health(instance_ids)
            return result
        current = lb.states(before) if before else {}
        to_block = [m for m in before if current[m][0] != DRAINING]
        result["deregistered"] = _dicts(to_block)
        diff = {"before": {"memberships": sorted(m.label() for m in before)}, "after": {"memberships": []}}
        return _change(module, result, diff, "BlockTraffic", lb.block, to_block, lb.wait_drained, before)

    # present / restore
    if params["memberships"] is not None:
        wanted = memberships_from_list(params["memberships"])
        if instance_ids:
            wanted = [m for m in wanted if m.host in instance_ids]
    else:
        wanted = lb.desired(instance_ids)
    hosts = instance_ids or list(dict.fromkeys(m.host for m in wanted))
    result["memberships"] = _dicts(wanted)
    result["by_instance"] = {h: _dicts(ms) for h, ms in by_host(wanted, hosts).items()}
    current = lb.states(wanted) if wanted else {}
    to_register = [m for m in wanted if needs_registration(*current[m])]
    result["registered"] = _dicts(to_register)
    diff = {"before": {"memberships": sorted(m.label() for m in wanted if not needs_registration(*current[m]))},
            "after": {"memberships": sorted(m.label() for m in wanted)}}
    return _change(module, result, diff, "AllowTraffic", lb.allow, to_register, lb.wait_healthy, wanted)


def _change(module, result, diff, event, change, to_change, wait_for, watched):
    """Change ``to_change`` (not in check mode), then with O(wait) wait for all ``watched``; a wait that
    times out fails the task naming the lifecycle event."""
    result["changed"] = bool(to_change)
    if module._diff:
        result["diff"] = diff
    if module.check_mode:
        return result
    if to_change:
        change(to_change)
    if module.params["wait"] and watched:
        waited = wait_for(watched, module.params["wait_timeout"])
        result["wait"] = waited.to_dict()
        if not waited.ok:
            result["msg"] = f"{event}: " + waited.message()
            result["failed"] = True
    return result


def main():
    list_of_str = dict(type="list", elements="str", default=[])
    argument_spec = dict(
        instance_ids=dict(type="list", elements="str", default=[]),
        load_balancer=dict(
            type="dict",
            options=dict(target_group_arns=list_of_str, target_group_names=dict(list_of_str), classic_elb_names=dict(list_of_str)),
        ),
        state=dict(type="str", choices=["snapshot", "absent", "present", "restore"], default="snapshot"),
        memberships=dict(type="list", elements="dict"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="float"),
    )
    module = RollwrightAWSModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "restore", ["memberships"])],
    )
    params = module.params
    state = params["state"]
    if state in ("snapshot", "absent") and not params["instance_ids"]:
        module.fail_json(msg=f"instance_ids: required (a non-empty list of instance ids) when state={state}")
    if state in ("snapshot", "absent", "present") and params["memberships"] is None:
        lb_config = params["load_balancer"] or {}
        if not any(lb_config.get(k) for k in ("target_group_arns", "target_group_names", "classic_elb_names")):
            module.fail_json(
                msg=f"load_balancer: name at least one of target_group_arns, target_group_names or classic_elb_names when state={state}"
            )
    if state == "present" and params["memberships"] is None and not params["instance_ids"]:
        module.fail_json(msg="instance_ids: required when state=present and memberships is not given")
    if params["wait_timeout"] is not None and params["wait_timeout"] < 0:
        module.fail_json(msg=f"wait_timeout: expected a number of seconds >= 0, got {params['wait_timeout']}")

    lb = None
    try:
        lb = load_balancer_from_config(params["load_balancer"], module.clients)
        result = run(module, lb)
    except LoadBalancerError as e:
        module.fail_json(msg=str(e), api_calls=dict(lb.api_calls) if lb else {})
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Load-balancer API call failed", api_calls=dict(lb.api_calls) if lb else {})
    result["api_calls"] = dict(lb.api_calls)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
