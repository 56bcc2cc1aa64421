# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18, the one-action-removed matrix of Lambda (``make iam-matrix``; not part of ``make test``).

For every action of the Lambda and records policies of the Lambda scenario (new code from a
versioned S3 object, published and shifted linearly with BeforeAllowTraffic / AfterAllowTraffic hooks
and an alarm, DynamoDB records), a deployment runs as an IAM user holding the policies minus that one
action. Each case has a fresh function (so the code really is new and every call is made). It must
fail, naming the action, with the alias still wholly on the old version (nothing half-shifted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.iam_policy import policy_actions
from tests.integration import iam_scenarios as S
from tests.integration import inplace_helpers as H
from tests.integration.iam_scenarios import enforced  # noqa: F401  pylint: disable=unused-import

pytestmark = [pytest.mark.slow]

# The code is pinned by its S3 version (s3:GetObjectVersion): without s3:GetObject that deployment passes;
# the same code unpinned (its latest version) fails naming s3:GetObject.
PINNED_NEEDS_ONLY_GET_OBJECT_VERSION = "s3:GetObject"


def _actions() -> list[str]:
    aws = S.AWS("http://unused", "us-east-1", {}, None)
    return sorted({a for p in S.LambdaScenario.policies_for(aws, "f", "pre", "post", "b", "alarm", "t") for a in policy_actions(p)}
                  - {"dynamodb:CreateTable"})


@pytest.mark.parametrize("action", _actions())
def test_one_action_removed(enforced: Any, tmp_path: Path, action: str) -> None:  # noqa: F811
    s = S.LambdaScenario(enforced, tmp_path, H.unique("mxfn"))
    env = S.user_env(s.aws, *S.without(s.policies(), action))
    if action == PINNED_NEEDS_ONLY_GET_OBJECT_VERSION:
        pinned = s.deploy(env)
        assert pinned.rc == 0 and s.alias() == ("2", {}), S.output(pinned)[-3000:]
        (tmp_path / "unpinned").mkdir()
        s = S.LambdaScenario(enforced, tmp_path / "unpinned", H.unique("mxfn"))
        env = S.user_env(s.aws, *S.without(s.policies(), action))
    result = s.deploy(env, pinned=action != PINNED_NEEDS_ONLY_GET_OBJECT_VERSION)
    text = S.output(result)
    assert result.rc != 0, text[-3000:]
    assert action in text, text[-3000:]
    assert s.alias() == ("1", {}), s.alias()
