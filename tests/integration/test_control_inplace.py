# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 16: control requests against a running in-place HalfAtATime rollout on a 4-host fleet behind an
ALB target group (1 s draining and registration), with the healthy count sampled every 100 ms by a monitor
thread (never below 2). A batch takes a few seconds, so a request sent as soon as a batch is seen running
lands before the next batch is planned.

One test, three deployments in order (each needs the one before): v1 paused at the batch boundary and
resumed with ``rollwright.deploy.resume``; v2 stopped in the middle (its batch finishes, the other is
never started); v3 stopped with rollback (its hosts go back to v1, the last successful revision). Then the
refusals, through the ``rollwright.deploy.control`` playbook. Hosts are checked over HTTP and nsenter.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests as cr
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

APP, GROUP = "ctl-inplace", "g"


@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with H.fleet_world(aws, tmp_path_factory, 4, "control-world") as made:
        yield made


class Rollout:
    """One deployment running in a thread while the test watches its record and sends requests."""

    def __init__(self, world: Any, ansible_run: Any, state_dir: Path, bundle: Path, arn: str):
        self.store = open_store("sqlite", {"path": str(state_dir / "rollwright" / "deployments.sqlite3")})
        self.before = {r.deployment_id for r in self.store.list(APP, GROUP)} if (state_dir / "rollwright").exists() else set()
        extra = {"rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_deployment_group": GROUP,
                 "rollwright_revision": str(bundle), "rollwright_deployment_config": "CodeDeployDefault.HalfAtATime",
                 "rollwright_target_group_arns": arn, "rollwright_file_exists_behavior": "OVERWRITE",
                 "rollwright_healthy_timeout": 30}
        self.result: Any = None
        self.thread = threading.Thread(target=lambda: setattr(self, "result", ansible_run(
            "rollwright.deploy.inplace", world.inventory, extra_vars=extra, timeout=240,
            env={"XDG_STATE_HOME": str(state_dir)})), daemon=True)
        self.thread.start()

    def record(self) -> Any:
        found = [r for r in self.store.list(APP, GROUP, limit=5) if r.deployment_id not in self.before]
        return self.store.get(found[-1].deployment_id) if found else None  # the oldest new one: not its rollback

    def batches(self, record: Any) -> list:
        return (record.extra.get("inplace") or {}).get("plan_preview") or []

    def in_batch(self, number: int) -> Any:
        """The record once a host of batch `number` is InProgress."""
        def check():
            record = self.record()
            batches = self.batches(record) if record else []
            return record if len(batches) >= number and any(
                record.host(h).status == "InProgress" for h in batches[number - 1]) else None
        return H.wait_until(check, 90, 0.05, f"batch {number} in progress")

    def wait(self) -> Any:
        self.thread.join(240)
        assert self.result is not None, "the deployment did not end"
        return self.result


def test_pause_resume_stop_and_stop_with_rollback_mid_rollout(world: Any, ansible_run: Any, tmp_path: Path) -> None:
    H.reset_hosts(world)
    hosts = [h.name for h in world.hosts]
    arn = H.create_target_group(world, [h.instance_id for h in world.hosts])
    bundles = {v: build_bundle(v, tmp_path / "bundles") for v in ("v1", "v2", "v3")}
    served = {h.name: h.address for h in world.hosts}
    group_vars = {"rollwright_application": APP, "rollwright_deployment_group": GROUP}
    env = {"XDG_STATE_HOME": str(tmp_path)}

    def everywhere() -> dict:
        return {n: (H.served(served[n]), H.installed(world, n)) for n in hosts}

    def all_in_target_group() -> None:
        states = H.tg_states(world, arn)
        assert sorted(i for i, _port in states) == sorted(h.instance_id for h in world.hosts), states
        assert set(states.values()) == {"healthy"}, states

    with H.HealthMonitor(world, target_group_arn=arn) as mon:
        # ---- v1: pause before batch 2, hold across the boundary, resume with the playbook
        run = Rollout(world, ansible_run, tmp_path, bundles["v1"], arn)
        record = run.in_batch(1)
        cr.submit(run.store, record.deployment_id, "pause", max_pause=120)
        first, second = run.batches(record)
        H.wait_until(lambda: run.store.list_requests(record.deployment_id)[0].state == "Acknowledged", 60, 0.05,
                     "pause seen at the batch boundary")
        held_from = time.monotonic()
        time.sleep(1.5)  # about as long as a batch takes: it holds
        now = run.store.get(record.deployment_id)
        assert all(now.host(h).status == "Succeeded" for h in first)
        assert all(now.host(h).status == "Pending" for h in second), now.to_dict()["hosts"]
        live = cr.status(run.store, now)
        assert live["paused"] and live["controller_alive"] and live["lease"]["heartbeat_age"] < 5, live
        resumed = ansible_run("rollwright.deploy.resume", world.inventory, extra_vars=group_vars, env=env, timeout=60)
        assert resumed.rc == 0, resumed
        result = run.wait()
        assert result.rc == 0, result
        assert time.monotonic() - held_from > 1.5
        assert run.store.get(record.deployment_id).status == "Succeeded"
        assert [(r.action, r.state) for r in run.store.list_requests(record.deployment_id)] == \
            [("pause", "Done"), ("resume", "Done")]
        assert "paused" in result.stdout and "seen" in result.stdout  # the progress lines of the request
        assert everywhere() == {n: ("sample-app v1", "sample-app v1") for n in hosts}

        # ---- v2: stop in the middle of batch 1: it finishes, batch 2 never starts
        run = Rollout(world, ansible_run, tmp_path, bundles["v2"], arn)
        record = run.in_batch(1)
        cr.submit(run.store, record.deployment_id, "stop")
        result = run.wait()
        first, second = run.batches(record)
        stopped = run.store.get(record.deployment_id)
        assert result.rc != 0 and stopped.status == "Stopped" and "stopped on request" in stopped.error
        assert [h.status for h in stopped.hosts if h.name in first] == ["Succeeded"] * len(first)
        assert [h.status for h in stopped.hosts if h.name in second] == ["Skipped"] * len(second)
        assert [(r.action, r.state) for r in run.store.list_requests(record.deployment_id)] == [("stop", "Done")]
        assert {n: v for n, v in everywhere().items() if n in first} == \
            {n: ("sample-app v2", "sample-app v2") for n in first}
        assert {n: v for n, v in everywhere().items() if n in second} == \
            {n: ("sample-app v1", "sample-app v1") for n in second}
        all_in_target_group()

        # ---- v3: stop with rollback: the hosts it reached go back to v1 (the last successful revision)
        run = Rollout(world, ansible_run, tmp_path, bundles["v3"], arn)
        record = run.in_batch(1)
        cr.submit(run.store, record.deployment_id, "stop", rollback=True)
        result = run.wait()
        stopped = run.store.get(record.deployment_id)
        assert stopped.status == "Stopped" and stopped.rolled_back_by, stopped.to_dict()
        rollback = run.store.get(stopped.rolled_back_by)
        assert rollback.creator == "rollback" and rollback.status == "Succeeded"
        assert run.store.list_requests(record.deployment_id)[0].message.endswith("a rollback deployment follows")
        assert everywhere() == {n: ("sample-app v1", "sample-app v1") for n in hosts}
        all_in_target_group()
    assert not mon.errors, mon.errors
    assert len(mon.samples) > 100
    assert mon.minimum == 2, mon.samples  # HalfAtATime of 4: never below 2 healthy, stop or not
    assert mon.counts[-1] == 4

    # ---- refusals, through the playbook: what does not apply is refused with a reason, nothing written
    ended = ansible_run("rollwright.deploy.control", world.inventory, env=env, timeout=60, extra_vars={
        "rollwright_control_action": "stop", "rollwright_deployment_id": record.deployment_id})
    assert ended.rc != 0 and f"deployment {record.deployment_id} already ended as Stopped" in ended.stdout
    nothing = ansible_run("rollwright.deploy.pause", world.inventory, env=env, timeout=60, extra_vars=group_vars)
    assert nothing.rc != 0 and f"{APP}/{GROUP} has no running deployment" in nothing.stdout
    assert len(run.store.list_requests(record.deployment_id)) == 1
