# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18: every deployment type runs as an IAM user holding exactly its rendered policy.

The emulator of this module enforces IAM (actions, resources and the conditions the policies use,
see tests/harness/_moto_iam.py); it is this module's own, because enforcement is global to a moto
server. Each scenario passes with its policy, and fails before harm with an error naming the action
when one representative action is removed (the full one-action-removed matrix: ``make iam-matrix``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.iam_policy import without_action
from tests.integration import iam_scenarios as S
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]


@pytest.fixture(scope="module")
def enforced(tmp_path_factory: pytest.TempPathFactory) -> Any:
    aws, stop = S.enforced_emulator(tmp_path_factory.mktemp("iam-emulator"))
    try:
        yield aws
    finally:
        stop()


@pytest.fixture(scope="module")
def inplace(enforced: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    from tests.harness.world import down

    world = S.inplace_world(tmp_path_factory, enforced)
    try:
        yield S.InplaceScenario(enforced, world, tmp_path_factory.mktemp("iam-inplace"), "iamip")
    finally:
        down(world.dir)


def test_enforcement_is_on(enforced: Any) -> None:
    """An IAM user with nothing allowed is refused, naming the action and resource."""
    env = S.user_env(enforced, {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["elasticloadbalancing:DescribeTargetGroups"], "Resource": ["*"]}]})
    import boto3

    session = boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                            region_name=enforced.region)
    session.client("elbv2", endpoint_url=enforced.endpoint).describe_target_groups()
    with pytest.raises(Exception, match=r"not authorized to perform: cloudwatch:DescribeAlarms on resource: \*"):
        session.client("cloudwatch", endpoint_url=enforced.endpoint).describe_alarms()


def test_inplace_with_its_policy(inplace: S.InplaceScenario) -> None:
    env = S.user_env(inplace.aws, *inplace.policies())
    first = inplace.deploy(env, "v1")
    assert first.rc == 0, S.output(first)
    assert not inplace.out_of_service()
    # automatic rollback on failure, still as the IAM user: ValidateService fails on host1 (the first batch)
    H.fail_validate(inplace.world, "host1")
    try:
        second = inplace.deploy(env, "v2")
    finally:
        H.fail_validate(inplace.world, "host1", on=False)
    assert second.rc != 0 and "Rolled back by deployment" in S.output(second), S.output(second)
    rollback, failed, good = inplace.records()[:3]
    assert (rollback.status, failed.status, good.status) == ("Succeeded", "Failed", "Succeeded"), rollback.error
    assert H.wait_until(lambda: not inplace.out_of_service(), timeout=20, what="hosts back in service")


@pytest.mark.parametrize("action", ["elasticloadbalancing:DeregisterTargets", "cloudwatch:DescribeAlarms",
                                    "s3:GetObjectVersion", "dynamodb:PutItem"])
def test_inplace_without_one_action_fails_before_harm(inplace: S.InplaceScenario, action: str) -> None:
    policies = [without_action(p, action) for p in inplace.policies()]
    result = inplace.deploy(S.user_env(inplace.aws, *[p for p in policies if p["Statement"]]))
    assert result.rc != 0, S.output(result)
    assert action in S.output(result), S.output(result)[-3000:]
    assert not inplace.out_of_service()


def test_recover_with_the_inplace_policy(inplace: S.InplaceScenario) -> None:
    """A controller killed while a host is out of its load balancers; the recover playbook, as the same
    IAM user, puts it back and releases the lock."""
    env = S.user_env(inplace.aws, *inplace.policies())
    first = inplace.deploy(env, "v1")  # hosts on v1, so that v2 has work to do
    assert first.rc == 0, S.failures(first)
    inplace.deploy_killed_mid_batch(env)
    assert inplace.out_of_service()
    recovered = inplace.recover(env)
    assert recovered.rc == 0, S.output(recovered)[-3000:]
    assert H.wait_until(lambda: not inplace.out_of_service(), timeout=20, what="hosts back in service")
    assert inplace.records()[0].status in ("Failed", "Stopped")


@pytest.fixture(scope="module")
def lambda_scenario(enforced: Any, tmp_path_factory: pytest.TempPathFactory) -> S.LambdaScenario:
    return S.LambdaScenario(enforced, tmp_path_factory.mktemp("iam-lambda"), "iamfn")


def test_lambda_with_its_policy(lambda_scenario: S.LambdaScenario) -> None:
    s = lambda_scenario
    result = s.deploy(S.user_env(s.aws, *s.policies()))
    assert result.rc == 0, S.output(result)[-3000:]
    assert s.alias() == ("2", {})
    hooks = [i["function_name"] for i in s.aws.lambda_invocations()]
    assert hooks[-2:] == [s.fn.pre, s.fn.post], hooks


@pytest.mark.parametrize("action", ["lambda:UpdateAlias", "lambda:InvokeFunction", "s3:GetObjectVersion"])
def test_lambda_without_one_action_fails_before_harm(lambda_scenario: S.LambdaScenario, action: str) -> None:
    s = lambda_scenario
    policies = [p for p in (without_action(p, action) for p in s.policies()) if p["Statement"]]
    result = s.deploy(S.user_env(s.aws, *policies))
    assert result.rc != 0, S.output(result)[-3000:]
    assert action in S.output(result), S.output(result)[-3000:]
    assert s.alias() == ("1", {})  # all traffic on the old version: nothing half-shifted


@pytest.fixture(scope="module")
def bluegreen_world(enforced: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    from tests.harness.world import down, up

    world = up(tmp_path_factory.mktemp("iam-bg-world"), 0, emulator_handle=enforced.handle.to_json(), region=enforced.region)
    world.start_ec2_sync()
    try:
        yield world
    finally:
        world.stop_ec2_sync()
        down(world.dir)


@pytest.fixture
def bluegreen(enforced: Any, bluegreen_world: Any, tmp_path: Path) -> S.BlueGreenScenario:
    made = S.BlueGreenScenario(enforced, bluegreen_world, tmp_path, H.unique("iambg"))
    yield made
    made.env.cleanup()


def test_bluegreen_copy_asg_listener_with_its_policy(bluegreen: S.BlueGreenScenario) -> None:
    s = bluegreen
    blue = s.env.asg_ids(s.blue_asg)
    result = s.deploy(S.user_env(s.aws, *s.policies()))
    assert result.rc == 0, S.failures(result)
    assert s.serving_target_group() == s.green_tg
    green = {i for i, state in s.env.members(s.green_tg).items() if state == "healthy"}
    assert len(green) == len(blue) and not green & set(blue)
    assert s.env.asg_ids(s.blue_asg) == []  # the original group was scaled to zero


@pytest.mark.parametrize("action", ["elasticloadbalancing:ModifyListener", "autoscaling:CreateAutoScalingGroup"])
def test_bluegreen_without_one_action_fails_before_harm(bluegreen: S.BlueGreenScenario, action: str) -> None:
    s = bluegreen
    blue = s.env.asg_ids(s.blue_asg)
    result = s.deploy(S.user_env(s.aws, *[without_action(p, action) for p in s.policies()]))
    assert result.rc != 0 and any(action in f for f in S.failures(result)), S.failures(result)
    # the original fleet still serves, whole and healthy
    assert s.serving_target_group() == s.env.tg
    assert s.env.asg_ids(s.blue_asg) == blue
    assert {i for i, state in s.env.members().items() if state == "healthy"} == set(blue)
