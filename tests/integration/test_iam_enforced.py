# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18: in-place deployments run as an IAM user holding exactly their rendered policies.

The emulator of this module enforces IAM (actions, resources and the conditions the policies use,
see tests/harness/_moto_iam.py); it is this module's own, because enforcement is global to a moto
server. Lambda, events and blue/green have modules of their own (test_iam_enforced_*.py), so the
three run side by side on the suite's workers. Here: the in-place scenario passes with its policies
(automatic rollback and recover included), and two removals that once left a host out of its load
balancers now fail before harm, naming the action. Every other removal: ``make iam-matrix``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration import iam_scenarios as S
from tests.integration import inplace_helpers as H
from tests.integration.iam_scenarios import enforced  # noqa: F401  pylint: disable=unused-import

pytestmark = [pytest.mark.fleet, pytest.mark.slow]


@pytest.fixture(scope="module")
def inplace(enforced: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: F811
    S.needs_root()
    from tests.harness.world import down

    world = S.inplace_world(tmp_path_factory, enforced)
    try:
        yield S.InplaceScenario(enforced, world, tmp_path_factory.mktemp("iam-inplace"), "iamip")
    finally:
        down(world.dir)


def test_enforcement_is_on(enforced: Any) -> None:  # noqa: F811
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


# Each of these once left a host out of its load balancers (engine defects found by the matrix):
# RegisterTargets is now proven at the start (with the attributes the waits need, read there too), before
# any host leaves; a block refused by the classic ELB after the target groups puts them back.
@pytest.mark.parametrize("action", ["elasticloadbalancing:RegisterTargets",
                                    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer"])
def test_inplace_without_one_action_fails_before_harm(inplace: S.InplaceScenario, action: str) -> None:
    result = inplace.deploy(S.user_env(inplace.aws, *S.without(inplace.policies(), action)))
    assert result.rc != 0, S.output(result)
    assert action in S.output(result), S.output(result)[-3000:]
    assert not inplace.out_of_service()
    if action.endswith("DeregisterInstancesFromLoadBalancer"):
        assert "put back what this batch had already left" in S.output(result), S.output(result)[-3000:]


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
