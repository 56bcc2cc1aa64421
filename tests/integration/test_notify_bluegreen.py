# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 17, EC2 blue/green: a deployment that waits for approval (ready action stop, then
``rollwright.deploy.continue``) sends DeploymentStart, an InstanceStart per replacement instance,
DeploymentReady, InstanceSuccess per host and DeploymentSuccess (SNS topic -> SQS queue in the emulator,
a webhook on 127.0.0.1), and its timeline report (phases, the continue request) renders in headless Chromium.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration import inplace_helpers as H
from tests.integration import notify_helpers as N
from tests.integration.test_bluegreen_ec2 import (  # noqa: F401  # pylint: disable=unused-import  # fixtures
    CONTINUE, Env, bundles, env, failures, world)

pytestmark = [pytest.mark.fleet, pytest.mark.slow]


def test_ready_wait_for_approval_notifies_and_reports(env: Env, bundles: dict[str, Path], aws: Any) -> None:  # noqa: F811
    blue_asg = env.blue_asg()
    topic = N.SnsQueue(aws, f"notify-{env.name}-{int(time.time())}")
    reports = env.state_dir / "reports"
    continued: dict[str, Any] = {}

    with N.WebhookReceiver() as hook:
        def approve() -> None:  # continue once the webhook says the deployment is ready
            H.wait_until(lambda: any(m["event"] == "DeploymentReady" for m in hook.messages()), 150, interval=0.2,
                         what="DeploymentReady notification")
            continued["at_ready"] = list(hook.messages())
            continued["result"] = env.ansible_run(CONTINUE, env.world.inventory, env={"XDG_STATE_HOME": str(env.state_dir)},
                                                  extra_vars={"rollwright_application": f"bg-{env.name}",
                                                              "rollwright_deployment_group": "g"})

        approver = threading.Thread(target=approve, daemon=True)
        approver.start()
        result = env.run(bundles["v2"], bluegreen_ec2_copy_auto_scaling_group=blue_asg,
                         bluegreen_ec2_ready_action="stop", bluegreen_ec2_ready_wait="120s",
                         rollwright_notifications=N.notifications(hook, topic), rollwright_report_dir=str(reports))
        approver.join(30)
    assert continued.get("result") is not None and continued["result"].rc == 0, continued
    assert result.rc == 0, failures(result) or result
    record = env.record()
    assert record["status"] == "Succeeded"
    replacements = record["extra"]["bluegreen"]["replacement_ids"]
    succeeded = sorted(h["name"] for h in record["hosts"] if h["status"] == "Succeeded")
    assert set(replacements) <= set(succeeded)
    head = [("DeploymentStart", None)] + [("InstanceStart", r) for r in replacements] + [("DeploymentReady", None)]
    for messages in (hook.messages(), topic.drain()):
        got = N.events_of(messages)
        assert got[:len(head)] == head, got
        assert sorted(h for e, h in got[len(head):-1] if e == "InstanceSuccess") == succeeded, got
        assert [e for e, _h in got[len(head):-1]] == ["InstanceSuccess"] * len(succeeded), got
        assert got[-1] == ("DeploymentSuccess", None), got
    # nothing after Ready reached the receiver before the approval
    assert N.events_of(continued["at_ready"]) == head
    shown = N.check_report(reports / f"{record['deployment_id']}.html", record, env.state_dir / "bluegreen.png")
    phases = [a.get("data-phase") for tag, a in shown["elements"] if "phase" in (a.get("class") or "").split()]
    assert phases[:2] == ["provisioning", "installing"] and "ready" in phases and "rerouting" in phases, phases
    assert shown["classes"].get("request") == 1  # the continue request, drawn where it happened
    N.keep_artifact(env.state_dir / "bluegreen.png", "report-bluegreen-approval.png")
