# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18: an EC2 blue/green deployment runs as an IAM user holding exactly its rendered policy, on
this module's own IAM-enforcing emulator.

The original Auto Scaling group's launch template gives its instances a role (an instance profile),
so copying the group passes that role to EC2: the policy's iam:PassRole is exercised, and without it
the deployment fails before anything is launched. Every other removal: ``make iam-matrix``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration import iam_scenarios as S
from tests.integration import inplace_helpers as H
from tests.integration.iam_scenarios import bluegreen_world, enforced  # noqa: F401  pylint: disable=unused-import

pytestmark = [pytest.mark.fleet, pytest.mark.slow]


@pytest.fixture(scope="module")
def bluegreen(enforced: Any, bluegreen_world: Any, tmp_path_factory: pytest.TempPathFactory) -> S.BlueGreenScenario:  # noqa: F811
    """One original group for the module: the removal runs first (it changes nothing), then the deployment."""
    made = S.BlueGreenScenario(enforced, bluegreen_world, tmp_path_factory.mktemp("iam-bg"), H.unique("iambg"))
    yield made
    made.env.cleanup()


def test_bluegreen_without_pass_role_fails_before_harm(bluegreen: S.BlueGreenScenario) -> None:
    s = bluegreen
    blue = s.env.asg_ids(s.blue_asg)
    result = s.deploy(S.user_env(s.aws, *S.without(s.policies(), "iam:PassRole")))
    assert result.rc != 0 and any(f"iam:PassRole on resource: {s.instance_role}" in f for f in S.failures(result)), \
        S.failures(result)
    # the original fleet still serves, whole and healthy
    assert s.serving_target_group() == s.env.tg
    assert s.env.asg_ids(s.blue_asg) == blue
    assert {i for i, state in s.env.members().items() if state == "healthy"} == set(blue)


def test_bluegreen_copy_asg_listener_with_its_policy(bluegreen: S.BlueGreenScenario) -> None:
    s = bluegreen
    blue = s.env.asg_ids(s.blue_asg)
    result = s.deploy(S.user_env(s.aws, *s.policies()))
    assert result.rc == 0, S.failures(result)
    assert s.serving_target_group() == s.green_tg
    green = {i for i, state in s.env.members(s.green_tg).items() if state == "healthy"}
    assert len(green) == len(blue) and not green & set(blue)
    assert s.env.asg_ids(s.blue_asg) == []  # the original group was scaled to zero
