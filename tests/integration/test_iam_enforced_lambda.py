# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18: Lambda deployments and event-driven calls run as an IAM user holding exactly their
rendered policies, on this module's own IAM-enforcing emulator (no fleet: everything runs on localhost).

Every other removal of an action: ``make iam-matrix`` (tests/iam_matrix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration import iam_scenarios as S
from tests.integration.iam_scenarios import enforced  # noqa: F401  pylint: disable=unused-import

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def lambda_scenario(enforced: Any, tmp_path_factory: pytest.TempPathFactory) -> S.LambdaScenario:  # noqa: F811
    return S.LambdaScenario(enforced, tmp_path_factory.mktemp("iam-lambda"), "iamfn")


def test_lambda_with_its_policy(lambda_scenario: S.LambdaScenario) -> None:
    s = lambda_scenario
    result = s.deploy(S.user_env(s.aws, *s.policies()))
    assert result.rc == 0, S.output(result)[-3000:]
    assert s.alias() == ("2", {})
    hooks = [i["function_name"] for i in s.aws.lambda_invocations()]
    assert hooks[-2:] == [s.fn.pre, s.fn.post], hooks


def test_lambda_without_delete_item_fails_before_the_shift(lambda_scenario: S.LambdaScenario) -> None:
    """dynamodb:DeleteItem (releasing the lock) is only needed once the alias has shifted: the records
    store proves it when it takes the lock, so the deployment fails before the shift (the lock stays
    held: the last deployment of this function here). The other removals: ``make iam-matrix``."""
    s = lambda_scenario
    result = s.deploy(S.user_env(s.aws, *S.without(s.policies(), "dynamodb:DeleteItem")))
    assert result.rc != 0, S.output(result)[-3000:]
    assert "dynamodb:DeleteItem" in S.output(result), S.output(result)[-3000:]
    assert s.alias() == ("1", {})  # all traffic on the old version: nothing shifted


def test_events_with_their_policy(enforced: Any, tmp_path: Path) -> None:  # noqa: F811
    """The launching hook set up with its notification role, a held instance completed, the pending
    uploads listed (S3 ListObjectVersions under the prefix) and the s3_revisions source reading the
    upload's notification from SQS and deleting it: all as a user holding the events and records policies.
    Without s3:ListBucketVersions the source says which call was refused and what it needs."""
    s = S.EventsScenario(enforced, tmp_path, "iamev")
    env = S.user_env(s.aws, *s.policies())
    version = s.upload()
    done = s.hook_hold_complete_list_unhook(env)
    assert done.rc == 0, S.failures(done)
    held = done.task("scale out")["localhost"]["stdout"]
    assert held.startswith("i-") and s.instance_states() == {held: "InService"}, held
    pending = done.task("pending")["localhost"]
    assert [u["version_id"] for u in pending["uploads"]] == [version], pending
    assert not s.group.asg.describe_lifecycle_hooks(AutoScalingGroupName=s.group.name)["LifecycleHooks"]

    # the upload is emitted from the listing at start; its notification, received later, is deleted
    events = s.run_source(env, lambda events, log: bool(events) and s.queue_empty())
    assert [e["s3_revision"]["version_id"] for e in events] == [version], s.source_output
    assert "failed" not in s.source_output and s.queue_empty(), s.source_output

    events = s.run_source(S.user_env(s.aws, *S.without(s.policies(), "s3:ListBucketVersions")),
                          lambda events, log: "ListObjectVersions" in log)
    assert events == [] and "Access Denied (IAM: needs s3:ListBucketVersions)" in s.source_output, s.source_output
