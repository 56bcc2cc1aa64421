# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 17, in-place: notifications (SNS topic -> SQS queue in the emulator, a webhook on 127.0.0.1)
and the timeline report (rendered in headless Chromium) of a successful deployment and of a failed one
rolled back automatically; dead webhooks (a refused port, a port that never answers) cost at most
their timeout. Two hosts behind a target group, OneAtATime, through ``rollwright.deploy.inplace``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.bundles import build_bundle
from tests.harness.ansible_run import run_playbook
from tests.integration import notify_helpers as N
from tests.integration.test_rollback_recover import (  # noqa: F401  # pylint: disable=unused-import  # fixtures
    VALIDATE_VERSION, _edit, bundle, store, tg, work)

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
APP = "notifyapp"
GROUP = "fleet"
TIMEOUT = 1.0  # each dead webhook may cost the deployment this much, no more (the default, and the maximum)
SLOW = "#!/bin/sh\nsleep 7\n"  # a BeforeInstall hook long enough for a progress line (after 5 s)


def slow_bundle(out: Path) -> Path:
    return build_bundle("v1", out, extra_files={"scripts/validate_version.sh": VALIDATE_VERSION, "scripts/slow.sh": SLOW},
                        edit_appspec=_edit(slow_before_install=True))


@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    from tests.harness.world import down, up

    made = up(tmp_path_factory.mktemp("notify-world"), 2, emulator_handle=aws.handle.to_json(), region=aws.region)
    try:
        yield made
    finally:
        down(made.dir)


def deploy(world: Any, aws: Any, work: Path, tg: str, revision: Path, notify: dict, **extra: Any) -> Any:
    extra_vars = {"rollwright_hosts": GROUP, "rollwright_application": APP, "rollwright_target_group_arns": tg,
                  "rollwright_record_sqlite_path": str(work / "records.sqlite3"), "rollwright_healthy_timeout": 60,
                  "rollwright_deployment_config": "CodeDeployDefault.OneAtATime", "rollwright_revision": str(revision),
                  "rollwright_notifications": notify, "rollwright_report_dir": str(work / "reports"), **extra}
    return run_playbook(str(ROOT / "playbooks" / "inplace.yml"), world.inventory, extra_vars=extra_vars, aws_env=aws.env,
                        control_path_dir=str(world.control_path_dir), timeout=300)


def test_success_notifies_in_order_dead_webhooks_cost_at_most_their_timeout(
        world: Any, aws: Any, tg: str, work: Path, store: Any) -> None:
    topic = N.SnsQueue(aws, f"notify-ok-{world.world_id}")
    refused, blackhole = N.RefusedPort(), N.BlackholePort()
    try:
        with N.WebhookReceiver() as hook:
            result = deploy(world, aws, work, tg, slow_bundle(work / "slow"),
                            N.notifications(hook, topic, refused.url, blackhole.url, timeout=TIMEOUT))
            assert result.rc == 0, result
            # a hook running longer than 5 s shows a progress line (host, event, script, elapsed)
            for host in ("host1", "host2"):
                assert re.search(rf"rollwright: {host}: BeforeInstall scripts/slow.sh running \(\d+ s\)", result.stdout), \
                    result.stdout[-3000:]
            (found,) = store.list(APP, GROUP, limit=1)
            record = store.get(found.deployment_id).to_dict()
            expected = N.expected_events(record)
            assert expected[0] == ("DeploymentStart", None) and expected[-1] == ("DeploymentSuccess", None)
            assert len(expected) == 6  # start, 2 x (instance start, success), success
            assert N.events_of(hook.messages()) == expected
            assert N.events_of(topic.drain()) == expected
            # the webhook got the secret header, and every message names the deployment and its report
            assert all(headers.get("X-Rollwright-Secret") == N.SECRET for _t, headers, _b in hook.received)
            for message in hook.messages():
                assert message["deployment_id"] == record["deployment_id"] and message["application"] == APP
                assert message["deployment_group"] == GROUP and message["revision"]["sha256"] == record["revision"]["sha256"]
                assert message["report"] == str(work / "reports" / f"{record['deployment_id']}.html")
                assert message["started_by"] == record["started_by"]
            # Every message waited behind the two dead endpoints (listed first): the sum of those waits
            # is what they cost the deployment.
            from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import parse_time

            held = sum(arrived - parse_time(body["time"]).timestamp() for arrived, _h, body in hook.received)
            print(f"\nnotifications: {len(hook.received)} messages, held up {held:.2f} s by two dead webhooks "
                  f"(timeout {TIMEOUT} s each); blackhole connections: {len(blackhole.accepted)}")
            assert held <= 2 * TIMEOUT + 0.6, held
            assert len(blackhole.accepted) == 1  # one timed-out attempt, then skipped for the deployment
            failures = record["extra"]["notification_failures"]
            assert {f["destination"] for f in failures} == {refused.url, blackhole.url}
            assert N.SECRET not in result.stdout + result.stderr
    finally:
        refused.close()
        blackhole.close()
    # the secret is in no record either
    assert N.SECRET not in str(record)
    shown = N.check_report(work / "reports" / f"{record['deployment_id']}.html", record, work / "success.png")
    assert shown["classes"].get("lb-band") == 2  # each host's time out of the target group
    assert "Notifications not delivered" in shown["dom"]
    assert (work / "reports" / f"history-{APP}-{GROUP}.html").exists()
    N.keep_artifact(work / "success.png", "report-inplace-success.png")


def test_failure_and_automatic_rollback_notify_in_order(world: Any, aws: Any, tg: str, work: Path, store: Any) -> None:
    """Runs after the successful deployment above (its revision is what the rollback returns to)."""
    topic = N.SnsQueue(aws, f"notify-rb-{world.world_id}")
    for host in ("host1", "host2"):  # v2 fails ValidateService wherever it goes: the first batch fails
        world.fleet.exec(host, ["sh", "-c", "mkdir -p /srv && touch /srv/fail-validate"])
    try:
        with N.WebhookReceiver() as hook:
            result = deploy(world, aws, work, tg, bundle("v2", work / "b", fail_on_marker=True),
                            N.notifications(hook, topic), rollwright_auto_rollback={"on_failure": True})
    finally:
        for host in ("host1", "host2"):
            world.fleet.exec(host, ["sh", "-c", "rm -f /srv/fail-validate"])
    assert result.rc != 0 and "Rolled back by deployment" in result.stdout + result.stderr, result
    rollback_found, failed_found = store.list(APP, GROUP, limit=2)
    failed = store.get(failed_found.deployment_id).to_dict()
    rollback = store.get(rollback_found.deployment_id).to_dict()
    assert failed["status"] == "Failed" and rollback["status"] == "Succeeded" and rollback["rollback_of"] == failed["deployment_id"]
    expected = N.expected_events(failed) + N.expected_events(rollback)
    (bad,) = [h["name"] for h in failed["hosts"] if h["status"] == "Failed"]
    assert expected[:3] == [("DeploymentStart", None), ("InstanceStart", bad), ("InstanceFailure", bad)], expected
    assert ("DeploymentFailure", None) in expected and ("DeploymentRollback", None) in expected
    assert N.events_of(hook.messages()) == expected
    assert N.events_of(topic.drain()) == expected
    # The job log: the host's failure is reported as handled by the deployment, not as a failed task.
    lifecycle = [r["host_results"]["main"][bad] for t in result.tasks() if t["name"].endswith("Deploy the next batch "
                 "(BlockTraffic, lifecycle events, AllowTraffic)") for r in t["hosts"].values()
                 if bad in (r.get("host_results") or {}).get("main", {})]
    assert lifecycle and lifecycle[0].get("lifecycle_failed") is True and not lifecycle[0].get("failed"), \
        [(t["name"], {h: sorted(r) for h, r in t["hosts"].items()}) for t in result.tasks() if "batch" in t["name"]]
    assert f"rollwright: {bad}: " in result.stdout and "handled by the deployment" in result.stdout
    failure = next(m for m in hook.messages() if m["event"] == "DeploymentFailure")
    assert failure["failure"]["host"] == bad and failure["failure"]["event"] == "ValidateService"
    assert failure["failure"]["script"] and failure["failure"]["exit_code"] == 3, failure
    assert f"{bad} ValidateService" in failure["summary"]
    assert next(m for m in hook.messages() if m["event"] == "DeploymentRollback")["rollback_of"] == failed["deployment_id"]
    shown = N.check_report(work / "reports" / f"{failed['deployment_id']}.html", failed, work / "failed.png")
    assert f'href="{rollback["deployment_id"]}.html"' in shown["dom"]
    N.check_report(work / "reports" / f"{rollback['deployment_id']}.html", rollback, work / "rollback.png")
    N.keep_artifact(work / "failed.png", "report-inplace-failed-rolled-back.png")
