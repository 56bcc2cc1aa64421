# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 17, Lambda: a canary shift rolled back by a CloudWatch alarm sends DeploymentStart,
DeploymentRollback and DeploymentStop (SNS topic -> SQS queue in the emulator, a webhook on 127.0.0.1),
and its timeline report (traffic step chart with the alarm check) renders in headless Chromium.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.integration import notify_helpers as N
from tests.integration.test_lambda_deploy import LambdaWorld

pytestmark = pytest.mark.slow
PLAYBOOK = "rollwright.deploy.lambda"


def test_alarm_rollback_notifies_and_reports(aws: Any, ansible_run: Any, tmp_path: Any) -> None:
    world = LambdaWorld(aws)
    inventory = tmp_path / "hosts"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={N.ROOT / '.venv/bin/python'}\n")
    db, reports = tmp_path / "records.sqlite3", tmp_path / "reports"
    cw = aws.client("cloudwatch")

    def fire() -> None:
        deadline = time.monotonic() + 110  # as long as the run may take on a loaded machine
        while time.monotonic() < deadline:  # once the alias sends 10 % to version 2, the alarm goes off
            if world.alias()[1]:
                cw.set_alarm_state(AlarmName=world.alarm, StateValue="ALARM", StateReason="Errors > 1 in test")
                return
            time.sleep(0.05)

    topic = N.SnsQueue(aws, f"notify-{world.name}")
    firing = threading.Thread(target=fire, daemon=True)
    with N.WebhookReceiver() as hook:
        firing.start()
        run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars={
            "rollwright_lambda_function_name": world.name, "rollwright_lambda_alias": "live",
            "rollwright_lambda_target_version": "2", "rollwright_record_sqlite_path": str(db),
            "rollwright_deployment_config": {"type": "canary", "percentage": 10, "interval": "30s"},
            "rollwright_auto_rollback_alarms": world.alarm, "rollwright_lambda_poll_interval": 0.5,
            "rollwright_notifications": N.notifications(hook, topic), "rollwright_report_dir": str(reports)})
        firing.join(5)
    assert run.rc != 0 and world.alias() == ("1", {}), run
    store = open_store("sqlite", {"path": str(db)})
    (found,) = store.list(world.name, f"{world.name}:live", limit=5)
    record = store.get(found.deployment_id).to_dict()
    assert record["status"] == "Stopped" and record["extra"]["lambda"]["rolled_back"] is True
    expected = [("DeploymentStart", None), ("DeploymentRollback", None), ("DeploymentStop", None)]
    assert N.events_of(hook.messages()) == expected
    assert N.events_of(topic.drain()) == expected
    stop = hook.messages()[-1]
    assert stop["deployment_type"] == "lambda" and world.alarm in stop["error"], stop
    assert stop["revision"]["function"] == world.name and stop["report"] == str(reports / f"{record['deployment_id']}.html")
    assert N.SECRET not in run.stdout + run.stderr
    shown = N.check_report(reports / f"{record['deployment_id']}.html", record, tmp_path / "lambda.png")
    assert shown["classes"].get("traffic-step") == 1 and shown["classes"].get("alarm-check") == 1, shown["classes"]
    assert "rolled back" in shown["dom"]
    N.keep_artifact(tmp_path / "lambda.png", "report-lambda-alarm-rollback.png")
