# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18, the one-action-removed matrix of in-place (``make iam-matrix``; not part of ``make test``).

For every action of the in-place and records policies of the in-place scenario (two hosts behind a
target group and a classic ELB, versioned S3 revision, an alarm, automatic rollback, DynamoDB
records), a deployment runs as an IAM user holding the policies minus that one action, on an emulator
enforcing IAM. It must fail, with an error naming the missing action, and leave every host in service
in every load balancer. Lambda and blue/green: test_matrix_lambda.py, test_matrix_bluegreen.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.iam_policy import (
    PolicyInputs,
    policy_actions,
    render_policy,
    template_document,
)
from tests.integration import iam_scenarios as S

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

# Removing s3:GetObject leaves the pinned revision deployable (AWS authorises HeadObject/GetObject of a
# given version by s3:GetObjectVersion, the emulator too): the case checks that, then that an unpinned
# revision (its latest version) fails naming s3:GetObject.
PINNED_NEEDS_ONLY_GET_OBJECT_VERSION = "s3:GetObject"


def _actions() -> list[str]:
    return sorted(set(policy_actions(render_policy("inplace", PolicyInputs(
        account_id="123456789012", region="us-east-1", revision_bucket="b", target_group_arns=[
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/x/y"], classic_elb_names=["c"], alarm_names=["a"])))
        + policy_actions(template_document("records"))) - {"dynamodb:CreateTable"})


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Any:
    S.needs_root()
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
def test_one_action_removed(scenario: S.InplaceScenario, action: str) -> None:
    env = S.user_env(scenario.aws, *S.without(scenario.policies(), action))
    try:
        if action == PINNED_NEEDS_ONLY_GET_OBJECT_VERSION:
            pinned = scenario.deploy(env, "v2")
            assert pinned.rc == 0, S.output(pinned)[-3000:]
            back = scenario.deploy(S.user_env(scenario.aws, *scenario.policies()), "v1")
            assert back.rc == 0, S.output(back)[-3000:]
        result = scenario.deploy(env, "v2", pinned=action != PINNED_NEEDS_ONLY_GET_OBJECT_VERSION)
        text = S.output(result)
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
