#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iam_policy_render
short_description: Render the least-privilege IAM policy of a deployment group
version_added: 0.1.0
description:
  - Returns the IAM policy document a deployment of one type needs for one deployment group, scoped to
    that group's resources where AWS supports resource-level permissions (target groups, classic ELBs,
    the revision bucket and key prefix, alarms, listeners and rules, Auto Scaling groups, functions,
    the records table and its indexes).
  - Statements for inputs the group does not use are left out, so the policy allows nothing the
    deployment does not call. The templates with every statement are shipped in C(extensions/iam/).
  - Pure computation; it calls no AWS API. Attach the result with M(amazon.aws.iam_policy) or
    M(amazon.aws.iam_managed_policy), or write it to a file.
  - See C(docs/iam.md) for what every action is used for.
author:
  - Rollwright maintainers (@rollwright)
options:
  kind:
    description:
      - The deployment type. V(records) is the DynamoDB records table, to combine with any of the others when
        the group records to DynamoDB.
      - V(events) is event-driven deployment (C(docs/event-driven.md)) - watching O(revision_bucket) for new
        bundles, reading the notifications of O(queue_arns), launching hooks of O(auto_scaling_group_names) -
        to combine with the policy of the deployment type it triggers and with V(records).
    type: str
    required: true
    choices: [inplace, bluegreen, lambda, records, events]
  account_id:
    description: The 12-digit AWS account ID of the resources.
    type: str
    required: true
  region:
    description: The AWS region of the resources (for example V(eu-west-1)).
    type: str
    required: true
  partition:
    description: The AWS partition.
    type: str
    default: aws
    choices: [aws, aws-cn, aws-us-gov]
  revision_bucket:
    description: The S3 bucket the revisions (bundles) are read from; for V(events), the bucket watched for new uploads.
    type: str
    default: ""
  revision_key_prefix:
    description: Only objects under this key prefix of O(revision_bucket) may be read (empty allows the whole bucket).
    type: str
    default: ""
  target_group_arns:
    description: The ELBv2 target groups the deployment takes instances out of and puts back (blue/green, both groups).
    type: list
    elements: str
    default: []
  target_group_names:
    description: Target groups given by name (their ARNs are matched as C(targetgroup/NAME/*)).
    type: list
    elements: str
    default: []
  classic_elb_names:
    description: The classic load balancers the deployment takes instances out of and puts back.
    type: list
    elements: str
    default: []
  alarm_names:
    description: The CloudWatch alarms polled for automatic rollback.
    type: list
    elements: str
    default: []
  listener_arns:
    description: Blue/green, C(listener) reroute, the listeners whose forward action is switched.
    type: list
    elements: str
    default: []
  listener_rule_arns:
    description: Blue/green, C(listener) reroute, the listener rules whose forward action is switched.
    type: list
    elements: str
    default: []
  auto_scaling_group_names:
    description:
      - Blue/green, copied Auto Scaling group, the original groups. Their copies (named C(ORIGINAL-DEPLOYMENTID))
        may be created, attached, scaled and deleted, and get the originals' launching hooks; the originals attached,
        detached and scaled.
      - Events, the groups whose launching lifecycle hooks hold scale-outs. Their hooks may be set up and removed;
        held instances of them and of their blue/green copies may be completed.
    type: list
    elements: str
    default: []
  launch_template:
    description: Blue/green replacements are launched from a launch template (RunInstances, tagging, terminating them).
    type: bool
    default: false
  original_instance_tags:
    description: Blue/green, original fleet found by tags; only instances with these tags may be terminated.
    type: dict
    default: {}
  delete_original_auto_scaling_group:
    description: Blue/green, the original Auto Scaling group is deleted after the reroute.
    type: bool
    default: false
  instance_role_arns:
    description: The roles of the instance profiles of the launch templates (C(iam:PassRole) to EC2 only).
    type: list
    elements: str
    default: []
  function_names:
    description: Lambda, the functions whose aliases are shifted.
    type: list
    elements: str
    default: []
  hook_function_names:
    description: Lambda, the BeforeAllowTraffic and AfterAllowTraffic hook functions.
    type: list
    elements: str
    default: []
  code_bucket:
    description: Lambda, the S3 bucket new code is uploaded from (allows C(UpdateFunctionCode) too).
    type: str
    default: ""
  code_key_prefix:
    description: Lambda, the key prefix of the code objects in O(code_bucket).
    type: str
    default: ""
  table:
    description: Records, the DynamoDB table name.
    type: str
    default: ""
  create_table:
    description: Records, the table may be created (C(create_table) of the records options).
    type: bool
    default: false
  queue_arns:
    description:
      - Events, the SQS queues the C(s3_revisions) and C(asg_launches) event sources read notifications from
        (their C(queue_url)), as ARNs (C(arn:aws:sqs:REGION:ACCOUNT:NAME)).
    type: list
    elements: str
    default: []
  hook_role_arns:
    description:
      - Events, the roles launching hooks notify their queue with (C(role_arn) of M(rollwright.deploy.asg_lifecycle_hook));
        C(iam:PassRole) to Auto Scaling only.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - rollwright.deploy.attributes
attributes:
  check_mode:
    support: full
    details: The module only computes; it is never changed.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Render the policy of an in-place group that records to DynamoDB
  rollwright.deploy.iam_policy_render:
    kind: inplace
    account_id: "123456789012"
    region: eu-west-1
    revision_bucket: releases
    revision_key_prefix: shop/
    target_group_arns:
      - arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/shop/0123456789abcdef
    alarm_names: [shop-5xx]
  delegate_to: localhost
  register: inplace_policy

- name: Render the records table's policy
  rollwright.deploy.iam_policy_render:
    kind: records
    account_id: "123456789012"
    region: eu-west-1
    table: rollwright-deployments
  delegate_to: localhost
  register: records_policy

- name: Attach both to the deployer role
  amazon.aws.iam_policy:
    iam_type: role
    iam_name: shop-deployer
    policy_name: "rollwright-{{ item.name }}"
    policy_json: "{{ item.policy | to_json }}"
  loop:
    - {name: inplace, policy: "{{ inplace_policy.policy }}"}
    - {name: records, policy: "{{ records_policy.policy }}"}
"""

RETURN = r"""
policy:
  description: The IAM policy document.
  returned: success
  type: dict
  sample: {"Version": "2012-10-17", "Statement": [{"Sid": "ReadAlarms", "Effect": "Allow",
           "Action": ["cloudwatch:DescribeAlarms"], "Resource": ["arn:aws:cloudwatch:eu-west-1:123456789012:alarm:shop-5xx"]}]}
actions:
  description: Every action the policy allows, with what the deployment uses it for.
  returned: success
  type: list
  elements: dict
  sample: [{"action": "cloudwatch:DescribeAlarms", "purpose": "poll the deployment group's alarms (stop and roll back on ALARM)"}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.iam_policy import (
    ACTION_PURPOSES,
    POLICY_KINDS,
    PolicyInputError,
    PolicyInputs,
    policy_actions,
    render_policy,
)

_LIST = dict(type="list", elements="str", default=[])
_STR = dict(type="str", default="")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kind=dict(type="str", required=True, choices=list(POLICY_KINDS)),
            account_id=dict(type="str", required=True),
            region=dict(type="str", required=True),
            partition=dict(type="str", default="aws", choices=["aws", "aws-cn", "aws-us-gov"]),
            revision_bucket=_STR, revision_key_prefix=dict(_STR, no_log=False),
            target_group_arns=_LIST, target_group_names=_LIST, classic_elb_names=_LIST, alarm_names=_LIST,
            listener_arns=_LIST, listener_rule_arns=_LIST, auto_scaling_group_names=_LIST,
            launch_template=dict(type="bool", default=False),
            original_instance_tags=dict(type="dict", default={}),
            delete_original_auto_scaling_group=dict(type="bool", default=False),
            instance_role_arns=_LIST, function_names=_LIST, hook_function_names=_LIST,
            code_bucket=_STR, code_key_prefix=dict(_STR, no_log=False), table=_STR,
            create_table=dict(type="bool", default=False), queue_arns=_LIST, hook_role_arns=_LIST,
        ),
        supports_check_mode=True,
    )
    params = dict(module.params)
    kind = params.pop("kind")
    params["original_instance_tags"] = {str(k): str(v) for k, v in (params["original_instance_tags"] or {}).items()}
    try:
        policy = render_policy(kind, PolicyInputs(**params))
    except PolicyInputError as exc:
        module.fail_json(msg=str(exc))
    actions = [{"action": a, "purpose": ACTION_PURPOSES.get(a, "")} for a in policy_actions(policy)]
    module.exit_json(changed=False, policy=policy, actions=actions)


if __name__ == "__main__":
    main()
