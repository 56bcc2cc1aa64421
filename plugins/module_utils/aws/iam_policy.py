# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Least-privilege IAM policies for each deployment type, rendered for one deployment group.

One place for what the collection may call on AWS: the statements below are the shipped policies
(``extensions/iam/*.json`` are these rendered with ``${...}`` placeholders, see
:func:`template_document`), the ``iam_policy_render`` module renders them for a group's inputs, and
the unit suite checks that every boto3 call in ``plugins/`` and the shipped event sources is allowed by one of them.

Each statement allows only what its deployment type calls, on the group's resources where AWS
supports resource-level permissions (Describe* calls of ELB, EC2 and Auto Scaling do not: they get
``*``). Statements for inputs a group does not use (no classic ELB, no alarm, ...) are left out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

POLICY_KINDS = ("inplace", "bluegreen", "lambda", "records", "events")

#: The tag the blue/green engine puts on the instances and Auto Scaling groups it creates.
REPLACEMENT_TAG_KEY = "rollwright:fleet"
REPLACEMENT_TAG_VALUE = "replacement"

#: What each action is used for (docs/iam.md and the module's ``actions`` result).
ACTION_PURPOSES: dict[str, str] = {
    "s3:GetObject": "download the revision bundle (HeadObject and GetObject) when no version is pinned",
    "s3:GetObjectVersion": "download a pinned version of the revision bundle or of the Lambda code",
    "elasticloadbalancing:DescribeTargetGroups": "resolve target group names, check the groups exist and read their health check settings",
    "elasticloadbalancing:DescribeTargetGroupAttributes": "read deregistration_delay.timeout_seconds (how long to wait for draining), at the start",
    "elasticloadbalancing:DescribeTargetHealth": "snapshot memberships, wait for draining and for healthy targets",
    "elasticloadbalancing:RegisterTargets":
        "put a batch's instances back into their target groups; proven at the start by registering an in-service target again (a no-op)",
    "elasticloadbalancing:DeregisterTargets": "take a batch's instances out of their target groups",
    "elasticloadbalancing:DescribeLoadBalancers": "check the classic ELBs exist and list their instances",
    "elasticloadbalancing:DescribeLoadBalancerAttributes": "read a classic ELB's connection draining timeout, at the start",
    "elasticloadbalancing:DescribeInstanceHealth": "wait for classic ELB instances to be InService / out of service",
    "elasticloadbalancing:RegisterInstancesWithLoadBalancer":
        "put a batch's instances back into their classic ELBs; proven at the start by registering an in-service instance again (a no-op)",
    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer": "take a batch's instances out of their classic ELBs",
    "elasticloadbalancing:DescribeListeners": "read the listener whose forward action is rerouted",
    "elasticloadbalancing:DescribeRules": "read the listener rule whose forward action is rerouted",
    "elasticloadbalancing:ModifyListener": "point the listener's forward action at the replacement target group",
    "elasticloadbalancing:ModifyRule": "point the listener rule's forward action at the replacement target group",
    "cloudwatch:DescribeAlarms": "poll the deployment group's alarms (stop and roll back on ALARM)",
    "ec2:DescribeInstances": "find the original and replacement instances, wait for replacements to run",
    "ec2:RunInstances": "launch replacement instances from the launch template",
    "ec2:CreateTags": "tag replacement instances at launch (RunInstances with TagSpecifications)",
    "ec2:TerminateInstances": "terminate replacement instances (rollback) or tagged original instances",
    "iam:PassRole": "launch replacements whose launch template has an instance profile; put a launching hook that notifies a queue",
    "autoscaling:DescribeAutoScalingGroups": "read the original group to copy it, wait for the copy's instances",
    "autoscaling:CreateAutoScalingGroup": "create the replacement group, a copy of the original",
    "autoscaling:CreateOrUpdateTags": "tag the replacement group at creation",
    "autoscaling:UpdateAutoScalingGroup": "scale the original group to zero after the reroute",
    "autoscaling:DeleteAutoScalingGroup": "delete the replacement group (rollback) or the original group (when asked)",
    "autoscaling:AttachLoadBalancerTargetGroups": "attach the serving target groups to the group that now serves",
    "autoscaling:AttachLoadBalancers": "attach the serving classic ELBs to the group that now serves",
    "autoscaling:DetachLoadBalancerTargetGroups": "detach the target groups from the group that no longer serves",
    "autoscaling:DetachLoadBalancers": "detach the classic ELBs from the group that no longer serves",
    "autoscaling:DescribeLifecycleHooks": "read a group's launching hooks (blue/green copies them to the replacement group)",
    "autoscaling:PutLifecycleHook": "create or update a launching hook (asg_lifecycle_hook; blue/green copies)",
    "autoscaling:DeleteLifecycleHook": "remove a launching hook (asg_lifecycle_hook with state absent)",
    "autoscaling:CompleteLifecycleAction": "put a held instance in service (CONTINUE) or terminate it (ABANDON) after its scale-out deployment",
    "s3:ListBucketVersions": "list the bundle versions under the watched prefix (pending_revision_info, the s3_revisions source)",
    "sqs:ReceiveMessage": "read S3 or lifecycle hook notifications from the event sources' queue",
    "sqs:DeleteMessage": "remove a notification from the queue once it is handled",
    "lambda:GetFunction": "read the function's code hash and state; check the hook functions exist before shifting",
    "lambda:GetFunctionConfiguration": "wait for the function to be Active after an update",
    "lambda:GetAlias": "read the alias's current version and routing",
    "lambda:ListVersionsByFunction": "find the published version matching the code",
    "lambda:PublishVersion": "publish the new version",
    "lambda:UpdateFunctionCode": "upload new code (only when code is given)",
    "lambda:UpdateAlias": "shift the alias's traffic step by step",
    "lambda:InvokeFunction": "run the BeforeAllowTraffic / AfterAllowTraffic hook functions",
    "dynamodb:DescribeTable": "check the records table and its indexes",
    "dynamodb:CreateTable": "create the records table (only with create_table)",
    "dynamodb:GetItem": "read a deployment record or a group's lock",
    "dynamodb:PutItem": "create records and take the group's lock (conditional writes; also inside transactions)",
    "dynamodb:UpdateItem": "update records, host and event states, renew the lock (also inside transactions)",
    "dynamodb:DeleteItem": "release the group's lock, prune old records",
    "dynamodb:Query": "list a group's or an application's deployments (table and its indexes)",
}

# The IAM service prefix of boto3 services whose name differs.
_IAM_PREFIX = {"elb": "elasticloadbalancing", "elbv2": "elasticloadbalancing", "monitoring": "cloudwatch"}
# API operations authorised by other (or more) IAM actions than their own name.
_OPERATION_ACTIONS = {
    "lambda:Invoke": ["lambda:InvokeFunction"],
    "s3:HeadObject": ["s3:GetObject", "s3:GetObjectVersion"],  # GetObjectVersion when a version is given
    "s3:GetObject": ["s3:GetObject", "s3:GetObjectVersion"],
    "dynamodb:TransactWriteItems": ["dynamodb:PutItem", "dynamodb:UpdateItem"],  # the records' Put + Update
    "s3:ListObjectVersions": ["s3:ListBucketVersions"],
}


def iam_actions_for(service: str, operation: str) -> list[str]:
    """The IAM actions a boto3 call needs: ``iam_actions_for("elbv2", "RegisterTargets")``."""
    key = f"{service}:{operation}"
    return list(_OPERATION_ACTIONS.get(key) or [f"{_IAM_PREFIX.get(service, service)}:{operation}"])


_ACCOUNT_RE = re.compile(r"^\d{12}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_PLACEHOLDER_RE = re.compile(r"^\$\{[A-Za-z]+\}$")


class PolicyInputError(RollwrightError, ValueError):
    """A bad input (message names it and what was expected)."""


@dataclass
class PolicyInputs:
    """A deployment group's inputs; names, not ARNs, where AWS builds the ARN from a name."""

    account_id: str
    region: str
    partition: str = "aws"
    revision_bucket: str = ""
    revision_key_prefix: str = ""
    target_group_arns: list[str] = field(default_factory=list)
    target_group_names: list[str] = field(default_factory=list)
    classic_elb_names: list[str] = field(default_factory=list)
    alarm_names: list[str] = field(default_factory=list)
    listener_arns: list[str] = field(default_factory=list)
    listener_rule_arns: list[str] = field(default_factory=list)
    auto_scaling_group_names: list[str] = field(default_factory=list)
    launch_template: bool = False
    original_instance_tags: dict[str, str] = field(default_factory=dict)
    delete_original_auto_scaling_group: bool = False
    instance_role_arns: list[str] = field(default_factory=list)
    function_names: list[str] = field(default_factory=list)
    hook_function_names: list[str] = field(default_factory=list)
    code_bucket: str = ""
    code_key_prefix: str = ""
    table: str = ""
    create_table: bool = False
    queue_arns: list[str] = field(default_factory=list)
    hook_role_arns: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not (_ACCOUNT_RE.match(self.account_id) or _PLACEHOLDER_RE.match(self.account_id)):
            raise PolicyInputError(f"account_id: expected a 12-digit AWS account ID, got {self.account_id!r}")
        if not (_REGION_RE.match(self.region) or _PLACEHOLDER_RE.match(self.region)):
            raise PolicyInputError(f"region: expected an AWS region such as eu-west-1, got {self.region!r}")
        if self.partition not in ("aws", "aws-cn", "aws-us-gov") and not _PLACEHOLDER_RE.match(self.partition):
            raise PolicyInputError(f"partition: expected aws, aws-cn or aws-us-gov, got {self.partition!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if not isinstance(item, str) or not item.strip():
                        raise PolicyInputError(f"{f.name}[{i}]: expected a non-empty string, got {item!r}")
        for i, arn in enumerate(self.target_group_arns):
            if ":targetgroup/" not in arn:
                raise PolicyInputError(f"target_group_arns[{i}]: expected a target group ARN, got {arn!r}")
        for i, arn in enumerate(self.listener_arns):
            if ":listener/" not in arn:
                raise PolicyInputError(f"listener_arns[{i}]: expected a listener ARN, got {arn!r}")
        for i, arn in enumerate(self.listener_rule_arns):
            if ":listener-rule/" not in arn:
                raise PolicyInputError(f"listener_rule_arns[{i}]: expected a listener rule ARN, got {arn!r}")
        for name in ("instance_role_arns", "hook_role_arns"):
            for i, arn in enumerate(getattr(self, name)):
                if ":role/" not in arn:
                    raise PolicyInputError(f"{name}[{i}]: expected an IAM role ARN, got {arn!r}")
        for i, arn in enumerate(self.queue_arns):
            if ":sqs:" not in arn:
                raise PolicyInputError(f"queue_arns[{i}]: expected an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME), got {arn!r}")
        if self.revision_key_prefix and not self.revision_bucket:
            raise PolicyInputError("revision_key_prefix: given without revision_bucket")
        if self.code_key_prefix and not self.code_bucket:
            raise PolicyInputError("code_key_prefix: given without code_bucket")


def _statement(sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


class _Arns:
    def __init__(self, p: PolicyInputs):
        self.p = p
        self.prefix = f"arn:{p.partition}"

    def regional(self, service: str, resource: str, sep: str = ":") -> str:
        return f"{self.prefix}:{service}:{self.p.region}:{self.p.account_id}{sep}{resource}"

    def objects(self, bucket: str, key_prefix: str) -> str:
        return f"{self.prefix}:s3:::{bucket}/{key_prefix}*"

    def function(self, name: str) -> list[str]:
        return [self.regional("lambda", f"function:{name}"), self.regional("lambda", f"function:{name}:*")]

    def auto_scaling_group(self, name: str) -> str:
        return self.regional("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{name}")


def _load_balancer_statements(p: PolicyInputs, arns: _Arns, rerouting: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    describe: list[str] = []
    if p.target_group_arns or p.target_group_names:
        describe += ["elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
                     "elasticloadbalancing:DescribeTargetHealth"]
    if p.classic_elb_names:
        describe += ["elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
                     "elasticloadbalancing:DescribeInstanceHealth"]
    if rerouting and p.listener_arns:
        describe.append("elasticloadbalancing:DescribeListeners")
    if rerouting and p.listener_rule_arns:
        describe.append("elasticloadbalancing:DescribeRules")
    if describe:
        out.append(_statement("DescribeLoadBalancing", describe, ["*"]))
    groups = list(p.target_group_arns) + [arns.regional("elasticloadbalancing", f"targetgroup/{n}/*") for n in p.target_group_names]
    if groups:
        out.append(_statement("TargetGroupMembership",
                              ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"], groups))
    if p.classic_elb_names:
        out.append(_statement("ClassicELBMembership",
                              ["elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                               "elasticloadbalancing:DeregisterInstancesFromLoadBalancer"],
                              [arns.regional("elasticloadbalancing", f"loadbalancer/{n}") for n in p.classic_elb_names]))
    return out


def _alarm_statement(p: PolicyInputs, arns: _Arns) -> list[dict[str, Any]]:
    if not p.alarm_names:
        return []
    return [_statement("ReadAlarms", ["cloudwatch:DescribeAlarms"], [arns.regional("cloudwatch", f"alarm:{n}") for n in p.alarm_names])]


def _revision_statement(p: PolicyInputs, arns: _Arns) -> list[dict[str, Any]]:
    if not p.revision_bucket:
        return []
    return [_statement("ReadRevision", ["s3:GetObject", "s3:GetObjectVersion"], [arns.objects(p.revision_bucket, p.revision_key_prefix)])]


def _inplace(p: PolicyInputs, arns: _Arns) -> list[dict[str, Any]]:
    return _revision_statement(p, arns) + _load_balancer_statements(p, arns) + _alarm_statement(p, arns)


def _bluegreen(p: PolicyInputs, arns: _Arns) -> list[dict[str, Any]]:
    out = _revision_statement(p, arns) + _load_balancer_statements(p, arns, rerouting=True) + _alarm_statement(p, arns)
    describe = ["ec2:DescribeInstances"]
    if p.auto_scaling_group_names:
        describe += ["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeLifecycleHooks"]
    out.append(_statement("DescribeFleet", describe, ["*"]))
    if p.listener_arns:
        out.append(_statement("RerouteListener", ["elasticloadbalancing:ModifyListener"], list(p.listener_arns)))
    if p.listener_rule_arns:
        out.append(_statement("RerouteListenerRule", ["elasticloadbalancing:ModifyRule"], list(p.listener_rule_arns)))
    replacement = {"StringEquals": {f"aws:ResourceTag/{REPLACEMENT_TAG_KEY}": REPLACEMENT_TAG_VALUE}}
    if p.launch_template or p.auto_scaling_group_names:
        # RunInstances is authorised on the instance, its volumes, interfaces, subnet, security groups,
        # launch template and image: every one in this account and region (and public images).
        out.append(_statement("LaunchReplacements", ["ec2:RunInstances"],
                              [arns.regional("ec2", "*"), f"{arns.prefix}:ec2:{p.region}::image/*"]))
    if p.launch_template:
        out.append(_statement("TagReplacementsAtLaunch", ["ec2:CreateTags"], [arns.regional("ec2", "instance/*")],
                              {"StringEquals": {"ec2:CreateAction": "RunInstances"}}))
    if p.launch_template or p.auto_scaling_group_names:
        # replacements carry the tag (launched with it, or propagated from the copied group)
        out.append(_statement("TerminateReplacements", ["ec2:TerminateInstances"], [arns.regional("ec2", "instance/*")], replacement))
    if p.auto_scaling_group_names:
        # the original group's instances, which Auto Scaling tags with their group's name
        out.append(_statement("TerminateOriginalGroupInstances", ["ec2:TerminateInstances"], [arns.regional("ec2", "instance/*")],
                              {"StringEquals": {"aws:ResourceTag/aws:autoscaling:groupName": list(p.auto_scaling_group_names)}}))
    if p.original_instance_tags:
        out.append(_statement("TerminateOriginals", ["ec2:TerminateInstances"], [arns.regional("ec2", "instance/*")],
                              {"StringEquals": {f"aws:ResourceTag/{k}": v for k, v in sorted(p.original_instance_tags.items())}}))
    if p.auto_scaling_group_names:
        originals = [arns.auto_scaling_group(n) for n in p.auto_scaling_group_names]
        copies = [arns.auto_scaling_group(f"{n}-*") for n in p.auto_scaling_group_names]
        attach = ["autoscaling:AttachLoadBalancerTargetGroups", "autoscaling:DetachLoadBalancerTargetGroups"] \
            if (p.target_group_arns or p.target_group_names) else []
        if p.classic_elb_names:
            attach += ["autoscaling:AttachLoadBalancers", "autoscaling:DetachLoadBalancers"]
        out.append(_statement("CopyAutoScalingGroup", ["autoscaling:CreateAutoScalingGroup", "autoscaling:CreateOrUpdateTags"],
                              copies, {"StringEquals": {f"aws:RequestTag/{REPLACEMENT_TAG_KEY}": REPLACEMENT_TAG_VALUE}}))
        out.append(_statement("ManageGroups", attach + ["autoscaling:UpdateAutoScalingGroup"], originals + copies))
        # finish gives the copy the original's launching hooks, so its scale-outs wait for the revision
        out.append(_statement("CopyLaunchHooks", ["autoscaling:PutLifecycleHook"], copies))
        out.append(_statement("DeleteReplacementGroups", ["autoscaling:DeleteAutoScalingGroup"], copies,
                              {"StringEquals": {f"autoscaling:ResourceTag/{REPLACEMENT_TAG_KEY}": REPLACEMENT_TAG_VALUE}}))
        if p.delete_original_auto_scaling_group:
            out.append(_statement("DeleteOriginalGroups", ["autoscaling:DeleteAutoScalingGroup"], originals))
    if p.instance_role_arns:
        out.append(_statement("PassInstanceRole", ["iam:PassRole"], list(p.instance_role_arns),
                              {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}))
    return out


def _lambda(p: PolicyInputs, arns: _Arns) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    functions = [a for n in p.function_names for a in arns.function(n)]
    if functions:
        out.append(_statement("ReadFunction", ["lambda:GetFunction", "lambda:GetFunctionConfiguration", "lambda:GetAlias",
                                               "lambda:ListVersionsByFunction"], functions))
        out.append(_statement("ShiftAlias", ["lambda:PublishVersion", "lambda:UpdateAlias"], functions))
        if p.code_bucket:
            out.append(_statement("UpdateCode", ["lambda:UpdateFunctionCode"], functions))
    hooks = [a for n in p.hook_function_names for a in arns.function(n)]
    if hooks:
        out.append(_statement("InvokeHooks", ["lambda:GetFunction", "lambda:InvokeFunction"], hooks))
    if p.code_bucket:
        out.append(_statement("ReadCode", ["s3:GetObject", "s3:GetObjectVersion"], [arns.objects(p.code_bucket, p.code_key_prefix)]))
    return out + _alarm_statement(p, arns)


def _records(p: PolicyInputs, arns: _Arns) -> list[dict[str, Any]]:
    if not p.table:
        raise PolicyInputError("table: the records policy needs the DynamoDB table name")
    table = arns.regional("dynamodb", f"table/{p.table}")
    out = [
        _statement("ReadRecords", ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:Query"], [table, f"{table}/index/*"]),
        _statement("WriteRecords", ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"], [table]),
    ]
    if p.create_table:
        out.append(_statement("CreateRecordsTable", ["dynamodb:CreateTable"], [table]))
    return out


def _events(p: PolicyInputs, arns: _Arns) -> list[dict[str, Any]]:
    """Event-driven deployments: watching a bucket, reading a notification queue, holding scale-outs."""
    out: list[dict[str, Any]] = []
    if p.revision_bucket:
        prefix = {"StringLike": {"s3:prefix": [f"{p.revision_key_prefix}*"]}} if p.revision_key_prefix else None
        out.append(_statement("ListRevisionVersions", ["s3:ListBucketVersions"], [f"{arns.prefix}:s3:::{p.revision_bucket}"], prefix))
    if p.queue_arns:
        out.append(_statement("ReadNotifications", ["sqs:ReceiveMessage", "sqs:DeleteMessage"], list(p.queue_arns)))
    if p.auto_scaling_group_names:
        originals = [arns.auto_scaling_group(n) for n in p.auto_scaling_group_names]
        # after a blue/green copy the copy (ORIGINAL-DEPLOYMENTID) holds the scale-outs
        copies = [arns.auto_scaling_group(f"{n}-*") for n in p.auto_scaling_group_names]
        out.append(_statement("DescribeLaunches", ["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeLifecycleHooks"], ["*"]))
        out.append(_statement("CompleteLaunches", ["autoscaling:CompleteLifecycleAction"], originals + copies))
        out.append(_statement("ManageLaunchHooks", ["autoscaling:PutLifecycleHook", "autoscaling:DeleteLifecycleHook"], originals))
    if p.hook_role_arns:
        # a hook notifying a queue names the role Auto Scaling publishes with
        out.append(_statement("PassHookRole", ["iam:PassRole"], list(p.hook_role_arns),
                              {"StringEquals": {"iam:PassedToService": "autoscaling.amazonaws.com"}}))
    return out


_BUILDERS = {"inplace": _inplace, "bluegreen": _bluegreen, "lambda": _lambda, "records": _records, "events": _events}


def render_policy(kind: str, inputs: PolicyInputs) -> dict[str, Any]:
    """The IAM policy document for one deployment type and one group's inputs."""
    if kind not in _BUILDERS:
        raise PolicyInputError(f"kind: expected one of {', '.join(POLICY_KINDS)}, got {kind!r}")
    inputs.validate()
    statements = _BUILDERS[kind](inputs, _Arns(inputs))
    if not statements:
        raise PolicyInputError(f"{kind}: the inputs give this deployment type nothing to call "
                               "(expected at least one target group, classic ELB, function, table, bucket, queue or Auto Scaling group)")
    return {"Version": "2012-10-17", "Statement": statements}


def policy_actions(document: dict[str, Any]) -> list[str]:
    """Every action a policy document allows (sorted, once each)."""
    found: set[str] = set()
    for statement in document.get("Statement") or []:
        action = statement.get("Action")
        found.update([action] if isinstance(action, str) else action or [])
    return sorted(found)


def without_action(document: dict[str, Any], action: str) -> dict[str, Any]:
    """A copy of the document with one action removed (statements left empty are dropped)."""
    statements = []
    for statement in document["Statement"]:
        actions = [a for a in statement["Action"] if a != action]
        if actions:
            statements.append(dict(statement, Action=actions))
    return dict(document, Statement=statements)


# The placeholders of the shipped templates (CloudFormation ``Fn::Sub`` syntax).
TEMPLATE_INPUTS: dict[str, dict[str, Any]] = {
    "inplace": {"revision_bucket": "${RevisionBucket}", "revision_key_prefix": "${RevisionKeyPrefix}",
                "target_group_arns": ["${TargetGroupArn}"], "classic_elb_names": ["${ClassicLoadBalancerName}"],
                "alarm_names": ["${AlarmName}"]},
    "bluegreen": {"revision_bucket": "${RevisionBucket}", "revision_key_prefix": "${RevisionKeyPrefix}",
                  "target_group_arns": ["${TargetGroupArn}", "${ReplacementTargetGroupArn}"],
                  "classic_elb_names": ["${ClassicLoadBalancerName}"], "alarm_names": ["${AlarmName}"],
                  "listener_arns": ["${ListenerArn}"], "listener_rule_arns": ["${ListenerRuleArn}"],
                  "auto_scaling_group_names": ["${AutoScalingGroupName}"], "launch_template": True,
                  "original_instance_tags": {"${OriginalTagKey}": "${OriginalTagValue}"},
                  "delete_original_auto_scaling_group": True, "instance_role_arns": ["${InstanceRoleArn}"]},
    "lambda": {"function_names": ["${FunctionName}"], "hook_function_names": ["${HookFunctionName}"],
               "code_bucket": "${CodeBucket}", "code_key_prefix": "${CodeKeyPrefix}", "alarm_names": ["${AlarmName}"]},
    "records": {"table": "${TableName}", "create_table": True},
    "events": {"revision_bucket": "${RevisionBucket}", "revision_key_prefix": "${RevisionKeyPrefix}",
               "queue_arns": ["${QueueArn}"], "auto_scaling_group_names": ["${AutoScalingGroupName}"],
               "hook_role_arns": ["${HookRoleArn}"]},
}


def template_document(kind: str) -> dict[str, Any]:
    """The shipped template of a deployment type: every statement, names as ``${...}`` placeholders."""
    inputs = PolicyInputs(account_id="${AWS::AccountId}", region="${AWS::Region}", partition="${AWS::Partition}",
                          **TEMPLATE_INPUTS[kind])
    return {"Version": "2012-10-17", "Statement": _BUILDERS[kind](inputs, _Arns(inputs))}


def template_text(kind: str) -> str:
    return json.dumps(template_document(kind), indent=2) + "\n"
