# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18, the one-action-removed matrix of EC2 blue/green (``make iam-matrix``; not part of ``make test``).

For every action of the blue/green policy of the blue/green scenario (a copy of a 3-instance Auto
Scaling group whose launch template has an instance profile, behind an ALB listener that is rerouted
to the replacement target group, originals terminated), a deployment runs as an IAM user holding the
policy minus that one action, each case on a fresh group. It must fail, naming the action, with a
fleet serving whole and healthy behind the listener. Actions this scenario only calls on a path it
does not take are listed with the reason; for them the deployment must pass (so the list cannot go
stale silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.iam_policy import PolicyInputs, policy_actions, render_policy
from tests.integration import iam_scenarios as S
from tests.integration import inplace_helpers as H
from tests.integration.iam_scenarios import bluegreen_world, enforced  # noqa: F401  pylint: disable=unused-import

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

NOT_EXERCISED: dict[str, str] = {
    "autoscaling:DeleteAutoScalingGroup":
        "deletes the copy on rollback, or the original with delete_original_auto_scaling_group: a deployment that "
        "succeeds with the default original_action does neither",
    "autoscaling:PutLifecycleHook":
        "gives the copy the original's launching lifecycle hooks: the original group of this scenario has none",
}


def _actions() -> list[str]:
    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:"
    return sorted(set(policy_actions(render_policy("bluegreen", PolicyInputs(
        account_id="123456789012", region="us-east-1", target_group_arns=[f"{arn}targetgroup/a/1", f"{arn}targetgroup/b/2"],
        listener_arns=[f"{arn}listener/app/l/1/2"], auto_scaling_group_names=["blue"],
        instance_role_arns=["arn:aws:iam::123456789012:role/app"])))))


@pytest.mark.parametrize("action", _actions())
def test_one_action_removed(enforced: Any, bluegreen_world: Any, tmp_path: Path, action: str) -> None:  # noqa: F811
    s = S.BlueGreenScenario(enforced, bluegreen_world, tmp_path, H.unique("mxbg"))
    try:
        blue = s.env.asg_ids(s.blue_asg)
        result = s.deploy(S.user_env(s.aws, *S.without(s.policies(), action)))
        failures = S.failures(result)
        if action in NOT_EXERCISED:
            assert result.rc == 0, failures
            return
        assert result.rc != 0, S.output(result)[-3000:]
        assert any(action in f for f in failures), failures
        assert s.serving_whole(len(blue)), (s.serving_target_group(), s.env.members(s.serving_target_group()))
        print(f"{action}: serving {'original' if s.serving_target_group() == s.env.tg else 'replacement'}; {failures[-1][:300]}")
    finally:
        s.env.cleanup()
