# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18: the shipped IAM policies cover every AWS call of the collection, and render per group.

``test_every_boto3_call_is_covered`` reads plugins/ and extensions/eda/plugins/ (AST, no import) for boto3 client calls: attribute
calls named like an operation of a service the collection makes clients for, paginators, and operation
names passed as strings (``_call("register_targets")``, ``getattr(client, call)``). Every one must be
allowed by a shipped policy, so a new call cannot ship without its permission.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import access_denied_hint
from ansible_collections.rollwright.deploy.plugins.module_utils.aws.iam_policy import (
    ACTION_PURPOSES,
    POLICY_KINDS,
    iam_actions_for,
    PolicyInputError,
    PolicyInputs,
    policy_actions,
    render_policy,
    template_document,
    template_text,
    without_action,
)

ROOT = Path(__file__).resolve().parents[2]
# Every directory of Python the collection ships that may call AWS (the EDA event sources too).
SCANNED = (ROOT / "plugins", ROOT / "extensions" / "eda" / "plugins")


def _sources() -> list[Path]:
    return sorted(path for top in SCANNED for path in top.rglob("*.py"))


# Actions AWS checks on a call besides the call's own action (no call of their own in plugins/).
IMPLIED_ACTIONS = {
    "ec2:CreateTags": "RunInstances with TagSpecifications",
    "autoscaling:CreateOrUpdateTags": "CreateAutoScalingGroup with Tags",
    "iam:PassRole": "RunInstances / CreateAutoScalingGroup from a launch template with an instance profile; "
                    "PutLifecycleHook with a RoleARN",
}
# Strings that spell an operation name but are option or event names, not calls.
NOT_CALLS = {
    "publish": "lambda_deploy's publish option and progress event (lambda:PublishVersion is publish_version)",
    "delete_auto_scaling_group": "the blue/green original option of that name (the call is an attribute call)",
    "create_table": "the records option of that name (the call is an attribute call)",
}
# Modules that receive a client instead of making one: the service an ambiguous name belongs to.
FILE_SERVICES = {
    "plugins/module_utils/traffic/loadbalancers/classic_elb.py": "elb",
    "plugins/module_utils/traffic/loadbalancers/elbv2.py": "elbv2",
    "plugins/module_utils/traffic/listener.py": "elbv2",
    "plugins/module_utils/deployments/alarms.py": "cloudwatch",
}


def _client_services() -> set[str]:
    """Every service the collection makes a client for: client("x") / retrying_client("x") literals."""
    found = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if _is_client_call(node):
                found.add(node.args[0].value)
    return found


def _is_client_call(node: ast.AST) -> bool:
    """``client("svc")``, ``x.client("svc")`` or ``x.retrying_client("svc")``."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr in ("client", "retrying_client")) or (isinstance(func, ast.Name) and func.id == "client")


def _operations(services: set[str]) -> dict[str, set[str]]:
    """snake_case operation name -> {"service:Operation", ...} over the given services."""
    session = botocore.session.get_session()
    ops: dict[str, set[str]] = defaultdict(set)
    for service in services:
        for op in session.get_service_model(service).operation_names:
            ops[xform_name(op)].add(f"{service}:{op}")
    return ops


def _file_services(path: Path) -> set[str]:
    rel = str(path.relative_to(ROOT))
    found = {FILE_SERVICES[rel]} if rel in FILE_SERVICES else set()
    for node in ast.walk(ast.parse(path.read_text())):
        if _is_client_call(node):
            found.add(node.args[0].value)
    return found


def _receiver_service(node: ast.AST) -> str | None:
    """The service of ``x.client("svc").operation(...)``, else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        inner = node.func.value
        if _is_client_call(inner):
            return str(inner.args[0].value)
    return None


def collection_calls() -> dict[str, list[str]]:
    """"service:Operation" -> where (file:line) for every boto3 call found in the scanned directories."""
    services = _client_services()
    ops = _operations(services)
    calls: dict[str, list[str]] = defaultdict(list)
    unresolved = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        # bound methods handed to a caller: ``call(sqs.receive_message, ...)`` (run in a thread)
        passed = {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call) for arg in node.args
                  if isinstance(arg, ast.Attribute)}
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ops:
                    name = node.func.attr
                elif node.func.attr == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                    name = node.args[0].value
            elif isinstance(node, ast.Attribute) and id(node) in passed:
                name = node.attr
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in ops and node.value not in NOT_CALLS:
                name = node.value
            if name is None or name not in ops:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            candidates = ops[name]
            receiver = _receiver_service(node)
            if receiver:
                candidates = {c for c in candidates if c.split(":")[0] == receiver}
            elif len(candidates) > 1:
                candidates = {c for c in candidates if c.split(":")[0] in _file_services(path)}
            if len(candidates) != 1:
                unresolved.append(f"{where}: {name} (services {sorted(ops[name])}; add the file to FILE_SERVICES)")
                continue
            calls[next(iter(candidates))].append(where)
    assert not unresolved, "calls whose service is ambiguous:\n" + "\n".join(unresolved)
    return dict(calls)


def iam_actions(call: str) -> list[str]:
    return iam_actions_for(*call.split(":"))


def shipped_actions() -> set[str]:
    return {a for kind in POLICY_KINDS for a in policy_actions(template_document(kind))}


def test_the_scan_finds_the_known_calls():
    """The scan is not blind: it sees calls made each way (attribute, paginator, string, bound method passed on)."""
    calls = collection_calls()
    for call in ("elbv2:RegisterTargets", "elb:DeregisterInstancesFromLoadBalancer", "ec2:DescribeInstances",
                 "lambda:UpdateAlias", "dynamodb:GetItem", "dynamodb:TransactWriteItems", "s3:HeadObject",
                 "autoscaling:DetachLoadBalancers", "cloudwatch:DescribeAlarms", "elbv2:ModifyRule",
                 "sqs:ReceiveMessage", "sqs:DeleteMessage", "s3:ListObjectVersions", "autoscaling:CompleteLifecycleAction"):
        assert call in calls, call
    assert "sns:Publish" not in calls


def test_every_boto3_call_is_covered():
    shipped = shipped_actions()
    missing = [f"{action} (for {call} at {', '.join(where)})"
               for call, where in sorted(collection_calls().items()) for action in iam_actions(call) if action not in shipped]
    assert not missing, "boto3 calls no shipped policy (plugins/module_utils/aws/iam_policy.py) allows:\n" + "\n".join(missing)


def test_every_shipped_action_is_used():
    used = {a for call in collection_calls() for a in iam_actions(call)} | set(IMPLIED_ACTIONS)
    unused = sorted(shipped_actions() - used)
    assert not unused, f"shipped actions no call of the collection needs: {unused}"


def test_every_action_has_a_purpose():
    assert sorted(shipped_actions()) == sorted(ACTION_PURPOSES)


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_shipped_template_is_the_rendered_one(kind):
    path = ROOT / "extensions" / "iam" / f"{kind}.json"
    assert path.read_text() == template_text(kind), f"{path} is stale: run `make iam-templates`"
    json.loads(path.read_text())


def _inputs(**kw):
    return PolicyInputs(account_id="123456789012", region="eu-west-1", **kw)


def _by_sid(doc):
    return {s["Sid"]: s for s in doc["Statement"]}


def test_inplace_scoped_to_the_group():
    tg = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/shop/0123456789abcdef"
    doc = render_policy("inplace", _inputs(revision_bucket="rel", revision_key_prefix="shop/", target_group_arns=[tg],
                                           alarm_names=["shop-5xx"]))
    sids = _by_sid(doc)
    assert set(sids) == {"ReadRevision", "DescribeLoadBalancing", "TargetGroupMembership", "ReadAlarms"}
    assert sids["ReadRevision"]["Resource"] == ["arn:aws:s3:::rel/shop/*"]
    assert sids["TargetGroupMembership"]["Resource"] == [tg]
    assert sids["ReadAlarms"]["Resource"] == ["arn:aws:cloudwatch:eu-west-1:123456789012:alarm:shop-5xx"]
    # no classic ELB: none of its actions
    assert not [a for a in policy_actions(doc) if "Instance" in a or a.endswith("DescribeLoadBalancers")]


def test_classic_elb_names_and_target_group_names():
    doc = render_policy("inplace", _inputs(classic_elb_names=["web"], target_group_names=["api"]))
    sids = _by_sid(doc)
    assert sids["ClassicELBMembership"]["Resource"] == ["arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/web"]
    assert sids["TargetGroupMembership"]["Resource"] == ["arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/*"]


def test_bluegreen_terminate_and_delete_only_tagged():
    doc = render_policy("bluegreen", _inputs(auto_scaling_group_names=["web"], launch_template=True,
                                             target_group_arns=["arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/a/b"]))
    sids = _by_sid(doc)
    assert sids["TerminateReplacements"]["Condition"] == {"StringEquals": {"aws:ResourceTag/rollwright:fleet": "replacement"}}
    assert sids["DeleteReplacementGroups"]["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/rollwright:fleet": "replacement"}}
    assert sids["DeleteReplacementGroups"]["Resource"] == [
        "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/web-*"]
    assert "DeleteOriginalGroups" not in sids


def test_bluegreen_copies_launch_hooks_to_the_copy_only():
    doc = render_policy("bluegreen", _inputs(auto_scaling_group_names=["web"]))
    sids = _by_sid(doc)
    assert sids["CopyLaunchHooks"]["Resource"] == [
        "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/web-*"]
    assert "autoscaling:DescribeLifecycleHooks" in sids["DescribeFleet"]["Action"]
    assert "autoscaling:DeleteLifecycleHook" not in policy_actions(doc)


def test_events_watch_queue_and_launches():
    queue = "arn:aws:sqs:eu-west-1:123456789012:shop-uploads"
    doc = render_policy("events", _inputs(revision_bucket="rel", revision_key_prefix="shop/", queue_arns=[queue],
                                          auto_scaling_group_names=["web"]))
    sids = _by_sid(doc)
    assert sids["ListRevisionVersions"]["Resource"] == ["arn:aws:s3:::rel"]
    assert sids["ListRevisionVersions"]["Condition"] == {"StringLike": {"s3:prefix": ["shop/*"]}}
    assert sids["ReadNotifications"]["Resource"] == [queue]
    group = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/web"
    assert sids["CompleteLaunches"]["Resource"] == [group, group + "-*"]
    assert sids["ManageLaunchHooks"]["Resource"] == [group]
    assert "PassHookRole" not in sids
    role = "arn:aws:iam::123456789012:role/asg-lifecycle-to-sqs"
    passing = _by_sid(render_policy("events", _inputs(auto_scaling_group_names=["web"], hook_role_arns=[role])))["PassHookRole"]
    assert passing["Resource"] == [role]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "autoscaling.amazonaws.com"}}
    # polling a whole bucket, no queue, no hooks: one statement, no prefix condition
    only = render_policy("events", _inputs(revision_bucket="rel"))
    assert [s["Sid"] for s in only["Statement"]] == ["ListRevisionVersions"] and "Condition" not in only["Statement"][0]


def test_lambda_functions_and_hooks():
    doc = render_policy("lambda", _inputs(function_names=["f"], hook_function_names=["h"]))
    sids = _by_sid(doc)
    assert sids["InvokeHooks"]["Resource"] == ["arn:aws:lambda:eu-west-1:123456789012:function:h",
                                               "arn:aws:lambda:eu-west-1:123456789012:function:h:*"]
    assert "lambda:UpdateFunctionCode" not in policy_actions(doc)


def test_records_table_and_indexes():
    doc = render_policy("records", _inputs(table="t"))
    assert "dynamodb:CreateTable" not in policy_actions(doc)
    assert _by_sid(doc)["ReadRecords"]["Resource"][1] == "arn:aws:dynamodb:eu-west-1:123456789012:table/t/index/*"


@pytest.mark.parametrize("kind,kw,match", [
    ("inplace", {"account_id": "12"}, r"^account_id: expected a 12-digit"),
    ("inplace", {"region": "mars"}, r"^region: expected an AWS region"),
    ("inplace", {"target_group_arns": ["nope"]}, r"^target_group_arns\[0\]: expected a target group ARN"),
    ("inplace", {"classic_elb_names": [""]}, r"^classic_elb_names\[0\]: expected a non-empty string"),
    ("records", {}, r"^table: the records policy needs"),
    ("lambda", {}, r"^lambda: the inputs give this deployment type nothing"),
    ("events", {}, r"^events: the inputs give this deployment type nothing"),
    ("events", {"queue_arns": ["https://sqs.eu-west-1.amazonaws.com/1/q"]}, r"^queue_arns\[0\]: expected an SQS queue ARN"),
    ("nope", {"table": "t"}, r"^kind: expected one of"),
])
def test_bad_inputs_are_named(kind, kw, match):
    base = {"account_id": "123456789012", "region": "eu-west-1"}
    with pytest.raises(PolicyInputError, match=match):
        render_policy(kind, PolicyInputs(**{**base, **kw}))


def test_without_action_drops_emptied_statements():
    doc = render_policy("inplace", _inputs(alarm_names=["a"], classic_elb_names=["c"]))
    out = without_action(doc, "cloudwatch:DescribeAlarms")
    assert "ReadAlarms" not in _by_sid(out) and "cloudwatch:DescribeAlarms" in policy_actions(doc)
    assert policy_actions(out) == [a for a in policy_actions(doc) if a != "cloudwatch:DescribeAlarms"]


def test_module_renders_in_check_mode(tmp_path):
    """The module end to end through ansible (check mode: the same result, nothing to change)."""
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - rollwright.deploy.iam_policy_render:\n        kind: records\n        account_id: '123456789012'\n"
        "        region: eu-west-1\n        table: t\n      register: out\n"
        "    - ansible.builtin.copy: {content: '{{ out | to_json }}', dest: '" + str(tmp_path / "out.json") + "'}\n"
        "      check_mode: false\n"
        "    - rollwright.deploy.iam_policy_render: {kind: records, account_id: '1', region: eu-west-1, table: t}\n"
        "      register: bad\n      ignore_errors: true\n"
        "    - ansible.builtin.assert: {that: ['bad is failed', \"bad.msg.startswith('account_id: expected a 12-digit')\"]}\n")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--check", "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}",
                           str(play)], cwd=str(ROOT), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["changed"] is False
    assert out["policy"] == render_policy("records", _inputs(table="t"))
    assert {"action": "dynamodb:Query", "purpose": ACTION_PURPOSES["dynamodb:Query"]} in out["actions"]


def test_matrix_removal_is_what_the_matrix_runs():
    """Every action of every template can be removed alone (the matrix's unit of work)."""
    for kind in POLICY_KINDS:
        doc = template_document(kind)
        for action in policy_actions(doc):
            assert action not in policy_actions(without_action(doc, action))


def test_access_denied_hint_names_the_action_only_when_aws_does_not():
    from botocore.exceptions import ClientError

    s3 = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")
    assert access_denied_hint(s3, "s3") == " (IAM: needs s3:GetObject or s3:GetObjectVersion)"
    named = ClientError({"Error": {"Code": "AccessDenied", "Message": "... not authorized to perform: "
                                   "elasticloadbalancing:RegisterTargets on resource: x"}}, "RegisterTargets")
    assert access_denied_hint(named, "elbv2") == ""
    cbor = ClientError({"Error": {"Code": "403", "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "DescribeAlarms")
    assert access_denied_hint(cbor, "cloudwatch") == " (IAM: needs cloudwatch:DescribeAlarms)"
    other = ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "GetObject")
    assert access_denied_hint(other, "s3") == ""
