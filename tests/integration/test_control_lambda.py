# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 16: promote and stop in the middle of a Lambda linear shift (``rollwright.deploy.lambda`` against
the emulator, alias weights sampled every 50 ms), and requests against dead controllers closed by recovery
(a killed Lambda shift; an in-place record whose lease went stale)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests as cr
from ansible_collections.rollwright.deploy.plugins.module_utils.records import DeploymentRecord, open_store
from tests.harness.ansible_run import VENV_BIN, ansible_env
from tests.integration import inplace_helpers as H
from tests.integration.test_lambda_deploy import LambdaWorld

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
LINEAR = {"type": "linear", "percentage": 10, "interval": "2s"}  # 10 steps, 18 s when left alone


def step_recorded(store: Any, function: str, text: str) -> bool:
    """The newest deployment of ``function``'s alias has an AllowTraffic event whose message holds ``text``."""
    found = store.list(function, f"{function}:live", limit=1)
    if not found:
        return False
    event = next((h.event("AllowTraffic") for h in store.get(found[0].deployment_id).hosts if h.name == function), None)
    return event is not None and text in (event.message or "")


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")
    return path


class Shift:
    """The Lambda playbook in a thread, with the alias sampled every 50 ms."""

    def __init__(self, world: LambdaWorld, ansible_run: Any, inventory: Path, db: Path):
        self.world, self.db = world, db
        self.weights: list = []
        self.result: Any = None
        extra = {"rollwright_lambda_function_name": world.name, "rollwright_lambda_alias": "live",
                 "rollwright_lambda_target_version": "2", "rollwright_record_sqlite_path": str(db),
                 "rollwright_deployment_config": LINEAR,
                 "rollwright_lock_ttl": 6}  # the lease keeper renews it every second
        self.thread = threading.Thread(target=lambda: setattr(self, "result", ansible_run(
            "rollwright.deploy.lambda", inventory, extra_vars=extra, timeout=120)), daemon=True)
        self.thread.start()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        while self.thread.is_alive():
            self.weights.append(self.world.alias())
            time.sleep(0.05)
        self.weights.append(self.world.alias())

    def wait_weight(self, weight: float) -> None:
        deadline = time.monotonic() + 60
        while not any(w.get("2", 0) >= weight - 1e-9 for _v, w in self.weights):
            assert time.monotonic() < deadline and self.thread.is_alive(), self.result
            time.sleep(0.05)

    def wait(self) -> Any:
        self.thread.join(120)
        self.sampler.join(5)
        return self.result

    def record(self) -> Any:
        store = open_store("sqlite", {"path": str(self.db)})
        (summary,) = store.list(self.world.name, f"{self.world.name}:live", limit=5)
        return store.get(summary.deployment_id), store


def test_promote_mid_linear_shift_goes_to_100_percent_now(aws: Any, ansible_run: Any, inventory: Path,
                                                          tmp_path: Path) -> None:
    world = LambdaWorld(aws)
    shift = Shift(world, ansible_run, inventory, tmp_path / "records.sqlite3")
    shift.wait_weight(0.2)
    # while the shift runs: its events are in the record already, and the lease keeper (the only renewer while
    # no pause holds) keeps the 6 s lock fresh
    live, store = shift.record()
    (function,) = live.hosts
    assert live.status == "InProgress" and function.status == "InProgress"
    assert [e.name for e in function.events] == ["BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic"]
    allow = function.event("AllowTraffic")
    assert allow.status == "InProgress" and allow.start_time and "% on version 2" in allow.message, allow
    assert function.event("AfterAllowTraffic").status == "Pending"
    assert live.extra["lock_ttl"] == 6 and live.extra["controller"]["pid"] > 1  # written by the keeper at its start
    lock = store.get_lock(world.name, f"{world.name}:live")
    deadline = time.monotonic() + 5
    while store.get_lock(world.name, f"{world.name}:live").heartbeat_at == lock.heartbeat_at:
        assert time.monotonic() < deadline, "nothing renewed the lock"
        time.sleep(0.1)
    promote = ansible_run("rollwright.deploy.promote", inventory, timeout=60, extra_vars={
        "rollwright_application": world.name, "rollwright_deployment_group": f"{world.name}:live",
        "rollwright_record_sqlite_path": str(tmp_path / "records.sqlite3"), "rollwright_control_wait": True})
    assert promote.rc == 0, promote
    result = shift.wait()
    assert result.rc == 0, result
    record, store = shift.record()
    assert record.status == "Succeeded" and world.alias() == ("2", {})
    seen = [round(w.get("2", 0), 2) for v, w in shift.weights if v == "1"]
    assert 0.2 in seen and max(seen) < 0.9, shift.weights  # it jumped from a low weight straight to 100 %
    steps = record.extra["steps_actual"]
    assert steps[-1]["promote"] and len(steps) < 10, steps
    assert steps[-1]["actual_seconds"] < 18 - 2, steps  # promoted before the 18 s the steps would have taken
    (request,) = store.list_requests(record.deployment_id)
    assert request.action == "promote" and request.state == "Done" and "remaining steps skipped" in request.message
    assert "seen" in result.stdout  # the progress line printed when the request was seen


def test_stop_mid_linear_shift_puts_the_alias_back(aws: Any, ansible_run: Any, inventory: Path, tmp_path: Path) -> None:
    world = LambdaWorld(aws)
    db = tmp_path / "records.sqlite3"
    shift = Shift(world, ansible_run, inventory, db)
    shift.wait_weight(0.2)
    record, store = shift.record()
    assert cr.status(store, record)["controller_alive"]
    cr.submit(store, record.deployment_id, "stop")
    result = shift.wait()
    assert result.rc != 0
    record, store = shift.record()
    assert record.status == "Stopped" and "stopped on request" in record.error
    assert world.alias() == ("1", {})
    # observed: version 1 throughout, weights rising from 10 % by steps, then straight back to no routing
    assert all(v == "1" for v, _w in shift.weights), shift.weights
    weighted = [i for i, (_v, w) in enumerate(shift.weights) if w]
    rising = [shift.weights[i][1]["2"] for i in weighted]
    assert rising == sorted(rising) and 0.2 <= rising[-1] < 0.9, shift.weights
    assert weighted[-1] < len(shift.weights) - 1 and shift.weights[-1] == ("1", {})
    (request,) = store.list_requests(record.deployment_id)
    assert request.state == "Done" and request.handled_by == "controller"
    assert store.get_lock(world.name, f"{world.name}:live") is None


def test_requests_against_dead_controllers_are_closed_by_recovery(aws: Any, ansible_run: Any, inventory: Path,
                                                                  tmp_path: Path) -> None:
    # Lambda: the controller is SIGKILLed mid-shift; a promote and a stop arrive for it; recovery closes both
    world = LambdaWorld(aws)
    db = tmp_path / "records.sqlite3"
    store = open_store("sqlite", {"path": str(db)})
    base = {"rollwright_lambda_function_name": world.name, "rollwright_lambda_alias": "live",
            "rollwright_record_sqlite_path": str(db)}
    vars_file = tmp_path / "shift.json"
    vars_file.write_text(json.dumps(dict(base, rollwright_lambda_target_version="2",
                                         rollwright_deployment_config={"type": "canary", "percentage": 10,
                                                                       "interval": "10m"})))
    env = ansible_env(aws.env, str(tmp_path / "cp"), {"ANSIBLE_STDOUT_CALLBACK": "default"})
    with open(tmp_path / "shift.log", "w") as log:
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "rollwright.deploy.lambda",
                                 "-e", f"@{vars_file}"], cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not step_recorded(store, world.name, "step 1/"):
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "shift.log").read_text()[-3000:]
            time.sleep(0.05)
        assert world.alias() == ("1", {"2": 0.1})
        # The requests must arrive while the controller still counts as alive: once its lease keeper sees it
        # dead (within half a second) the record is Stopped and requests are refused. So the controller is
        # frozen first (it only reads the record while it waits for step 2), the requests written, then killed.
        os.killpg(proc.pid, signal.SIGSTOP)
        (summary,) = store.list(world.name, f"{world.name}:live", limit=5)
        promote = cr.submit(store, summary.deployment_id, "promote")
        stop = cr.submit(store, summary.deployment_id, "stop")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    H.wait_until(lambda: store.get(summary.deployment_id).status == "Stopped", 30, interval=0.1,
                 what="the lease keeper marked the killed deployment Stopped")
    assert [r.state for r in store.list_requests(summary.deployment_id)] == ["Pending", "Pending"]  # nobody acts
    with pytest.raises(cr.RequestRefused, match="was marked Stopped when its controller died; .*rollwright_lambda_recover"):
        cr.submit(store, summary.deployment_id, "resume")
    recovered = ansible_run("rollwright.deploy.lambda", inventory, timeout=120,
                            extra_vars=dict(base, rollwright_lambda_recover=True, rollwright_force_lock=True))
    assert recovered.rc == 0, recovered
    assert world.alias() == ("1", {}) and store.get(summary.deployment_id).status == "Stopped"
    closed = {r.request_id: r for r in store.list_requests(summary.deployment_id)}
    assert closed[promote.request_id].state == "Refused" and "went back to version 1" in closed[promote.request_id].message
    assert closed[stop.request_id].state == "Done" and closed[stop.request_id].handled_by == "recover"

    # in-place: a deployment whose lease went stale (its controller died) gets a stop with rollback and a pause;
    # the recover playbook ends it Stopped, closes both, and names the rollback command it did not run
    first = store.create(DeploymentRecord(application="shop", deployment_group="web", status="Succeeded"))
    dead = store.create(DeploymentRecord(application="shop", deployment_group="web"))
    store.update_status(dead.deployment_id, "InProgress")
    store.acquire_lock("shop", "web", dead.deployment_id, ttl=0.5)
    pause = cr.submit(store, dead.deployment_id, "pause")
    stop = cr.submit(store, dead.deployment_id, "stop", rollback=True)
    time.sleep(1.0)  # the lease is stale now
    assert not cr.status(store, store.get(dead.deployment_id))["controller_alive"]
    recovered = ansible_run("rollwright.deploy.recover", inventory, timeout=60, extra_vars={
        "rollwright_application": "shop", "rollwright_deployment_group": "web", "rollwright_record_sqlite_path": str(db)})
    assert recovered.rc == 0, recovered
    assert store.get(dead.deployment_id).status == "Stopped" and store.get_lock("shop", "web") is None
    closed = {r.request_id: r for r in store.list_requests(dead.deployment_id)}
    assert closed[pause.request_id].state == "Done" and closed[stop.request_id].state == "Done"
    assert "rollwright.deploy.rollback" in closed[stop.request_id].message
