# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11 for EC2 blue/green: ``--check`` plans (instances to launch, reroute) and changes nothing;
options the role does not support are refused instead of ignored.

The world and the blue fleet are test_bluegreen_ec2's (an Auto Scaling group of 3 behind a target
group); what the dry run leaves alone is read from the emulator: Auto Scaling groups, instances,
target health sampled every 100 ms, and the record file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration import inplace_helpers as H
from tests.integration.test_bluegreen_ec2 import N, Env, TrafficMonitor, failures
from tests.integration.test_bluegreen_ec2 import world  # noqa: F401  # pylint: disable=unused-import  # the fixture

pytestmark = [pytest.mark.fleet, pytest.mark.slow]


@pytest.fixture
def env(world: Any, ansible_run: Any, tmp_path: Path, request: Any) -> Any:
    made = Env(world, ansible_run, tmp_path, request.node.name.split("[")[0].replace("test_", "")[:12].replace("_", "-"))
    yield made
    made.cleanup()


def _shown(result: Any) -> list[str]:
    return [str(line) for task in result.tasks() if task["name"].endswith("Show the deployment summary")
            for res in task["hosts"].values() for line in (res.get("summary_lines") or [])]


def test_dry_run_plans_the_fleet_and_changes_nothing(env: Env, tmp_path: Path) -> None:
    from tests.bundles import build_bundle

    bundle = build_bundle("v2", tmp_path / "bundles")
    blue_asg = env.blue_asg()
    blue = env.asg_ids(blue_asg)
    groups_before = sorted(g["AutoScalingGroupName"] for g in env.asg.describe_auto_scaling_groups()["AutoScalingGroups"])
    instances_before = {i["InstanceId"] for r in env.ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    with TrafficMonitor(env, blue) as mon:
        result = env.ansible_run("rollwright.deploy.bluegreen_ec2", env.world.inventory, check=True, timeout=180,
                                 env={"XDG_STATE_HOME": str(env.state_dir)}, extra_vars={
                                     "rollwright_application": f"bg-{env.name}", "rollwright_deployment_group": "g",
                                     "rollwright_revision": str(bundle), "rollwright_target_group_arns": env.tg,
                                     "bluegreen_ec2_copy_auto_scaling_group": blue_asg,
                                     "bluegreen_ec2_original_wait": "5m"})
    assert result.rc == 0, failures(result) or result
    shown = _shown(result)
    assert shown[0].startswith("DRY RUN - nothing was changed"), shown
    assert any(f"copy Auto Scaling group {blue_asg} as {blue_asg}-<deployment id>: {N} instance(s) launched" in line
               for line in shown), shown
    assert any(line.startswith("  original fleet (3):") and all(i in line for i in blue) for line in shown), shown
    assert any(f"reroute: register replacements into target group {env.tg}" in line and "batches of 1" in line
               for line in shown), shown
    assert "  originals: terminated after 300.0 s" in shown, shown
    # nothing launched, nothing rerouted, nothing recorded
    assert sorted(g["AutoScalingGroupName"] for g in env.asg.describe_auto_scaling_groups()["AutoScalingGroups"]) \
        == groups_before
    assert {i["InstanceId"] for r in env.ec2.describe_instances()["Reservations"] for i in r["Instances"]} == instances_before
    assert not mon.errors and mon.min_healthy == N and max(s["green"] for s in mon.samples) == 0, mon.samples
    assert not (env.state_dir / "rollwright" / "deployments.sqlite3").exists() \
        or env.store().list(f"bg-{env.name}", "g", limit=5) == []


def test_options_blue_green_does_not_support_are_refused(env: Env, tmp_path: Path) -> None:
    result = env.ansible_run("rollwright.deploy.bluegreen_ec2", env.world.inventory, timeout=120,
                             env={"XDG_STATE_HOME": str(env.state_dir)}, extra_vars={
                                 "rollwright_application": f"bg-{env.name}", "rollwright_revision": "/nonexistent.zip",
                                 "rollwright_target_group_arns": env.tg, "rollwright_lock_ttl": 30,
                                 "rollwright_auto_rollback": {"on_alarm": True, "alarms": ["high-5xx"]}})
    assert result.rc != 0
    message = " ".join(failures(result))
    assert "rollwright_lock_ttl: not supported here" in message and "rollwright_auto_rollback: not supported here" in message
    assert not H.tg_states(env.world, env.tg)  # nothing was looked up or changed: the group is still empty
