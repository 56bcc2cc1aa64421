# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18, the one-action-removed matrix (``make iam-matrix``; not part of ``make test``: ~20 deployments).

For every action of the in-place and records policies of the in-place scenario (two hosts behind a
target group and a classic ELB, versioned S3 revision, an alarm, automatic rollback, DynamoDB
records), a deployment runs as an IAM user holding the policies minus that one action, on an emulator
enforcing IAM. It must fail, with an error naming the missing action, and leave every host in service
in every load balancer. Actions the scenario does not exercise are listed with the reason; for them
the deployment must pass (so the list cannot go stale silently).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.iam_policy import (
    PolicyInputs,
    policy_actions,
    render_policy,
    template_document,
    without_action,
)
from tests.integration import iam_scenarios as S

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

NOT_EXERCISED = {
    "s3:GetObject": "the revision is pinned by version: AWS authorises HeadObject/GetObject of a version by s3:GetObjectVersion",
}
# Removing these makes the deployment fail after a host left its load balancers, and it stays out:
# the engine does not check permissions (or read what it needs) before taking a batch out, and does not
# put back what it took out when a later call of the same step is denied. Strict: fixed engine -> XPASS.
HARMFUL = {
    "elasticloadbalancing:RegisterTargets": "deregistered targets cannot be registered again",
    "elasticloadbalancing:RegisterInstancesWithLoadBalancer": "deregistered instances cannot be registered again",
    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer":
        "the batch is already out of its target groups when the classic ELB refuses; it is not put back",
    "elasticloadbalancing:DescribeLoadBalancerAttributes":
        "the connection draining timeout is read after the batch is deregistered; it is not put back",
    "elasticloadbalancing:DescribeTargetGroupAttributes":
        "the deregistration delay is read after the batch is deregistered; it is not put back",
}


def _actions() -> list[str]:
    return sorted(set(policy_actions(render_policy("inplace", PolicyInputs(
        account_id="123456789012", region="us-east-1", revision_bucket="b", target_group_arns=[
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/x/y"], classic_elb_names=["c"], alarm_names=["a"])))
        + policy_actions(template_document("records"))) - {"dynamodb:CreateTable"})


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    from tests.harness.world import down

    aws, stop = S.enforced_emulator(tmp_path_factory.mktemp("matrix-emulator"))
    world = S.inplace_world(tmp_path_factory, aws)
    try:
        made = S.InplaceScenario(aws, world, tmp_path_factory.mktemp("matrix"), "iammx")
        first = made.deploy(S.user_env(aws, *made.policies()), "v1")
        assert first.rc == 0, S.output(first)
        yield made
    finally:
        down(world.dir)
        stop()


@pytest.mark.parametrize("action", _actions())
def test_one_action_removed(scenario: S.InplaceScenario, action: str, request: pytest.FixtureRequest) -> None:
    if action in HARMFUL:
        request.node.add_marker(pytest.mark.xfail(reason=f"known harm: {HARMFUL[action]}", strict=True))
    policies = [p for p in (without_action(p, action) for p in scenario.policies()) if p["Statement"]]
    result = scenario.deploy(S.user_env(scenario.aws, *policies), "v2")
    text = S.output(result)
    if action in NOT_EXERCISED:
        assert result.rc == 0, text[-3000:]
        return
    try:
        assert result.rc != 0, text[-3000:]
        assert action in text, text[-3000:]
        assert not scenario.out_of_service()
    finally:
        # put the fleet back for the next action with the full policies: recover (a removed dynamodb:DeleteItem
        # leaves the group's lock held), then v1 everywhere, all in service
        full = S.user_env(scenario.aws, *scenario.policies())
        recovered = scenario.recover(full)
        assert recovered.rc == 0, S.output(recovered)[-3000:]
        back = scenario.deploy(full, "v1")
        assert back.rc == 0, S.output(back)[-3000:]
