# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lambda_shift role through ``ansible-playbook rollwright.deploy.lambda``, against the emulator.

Each test runs the collection's playbook on a localhost inventory and then reads the deployment
record (SQLite, a file per test) and the alias directly: the record says what happened, the alias
shows it really happened, and the group's lock is free afterwards.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import DeploymentRecord, HostRecord, open_store
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import parse_time
from tests.integration.test_lambda_deploy import LambdaWorld

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = "rollwright.deploy.lambda"
pytestmark = pytest.mark.slow

OK = {"payload": json.dumps({"status": "Succeeded"}), "function_error": None}
CRASH = {"payload": json.dumps({"errorMessage": "smoke test crashed", "errorType": "Exception"}), "function_error": "Unhandled"}


@pytest.fixture
def world(aws):
    return LambdaWorld(aws)


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")
    return path


@pytest.fixture
def db(tmp_path):
    return tmp_path / "records.sqlite3"


def _vars(world, db, **kw):
    base = {"rollwright_lambda_function_name": world.name, "rollwright_lambda_alias": "live",
            "rollwright_lambda_target_version": "2", "rollwright_record_sqlite_path": str(db)}
    base.update(kw)
    return base


def _msgs(run):
    return [h.get("msg") for t in run.tasks() for h in t["hosts"].values() if h.get("failed")]


def _store(db):
    return open_store("sqlite", {"path": str(db)})


def _only_record(db, world):
    store = _store(db)
    records = store.list(world.name, f"{world.name}:live", limit=10)
    assert len(records) == 1, [r.to_dict() for r in records]
    return store.get(records[0].deployment_id), store


def _events(record):
    (target,) = record.hosts
    return target, {ev.name: ev for ev in target.events}


def test_linear_shift_is_recorded_succeeded(world, inventory, db, ansible_run):
    # check mode: the plan only; no lock, no record, no change
    run = ansible_run(PLAYBOOK, inventory, timeout=120, check=True, extra_vars=_vars(world, db))
    assert run.rc == 0, run
    assert run.task("rollwright.deploy.lambda_shift : Plan the deployment (read only)")["localhost"]["status"] == "Planned"
    assert world.alias() == ("1", {}) and _store(db).list(world.name, limit=10) == []

    world.aws.queue_lambda_results([OK, OK])
    run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=_vars(
        world, db, rollwright_deployment_config={"type": "linear", "percentage": 40, "interval": "1s"},
        rollwright_lambda_before_allow_traffic_hook=world.pre, rollwright_lambda_after_allow_traffic_hook=world.post,
        rollwright_auto_rollback_alarms=[world.alarm], rollwright_lambda_poll_interval=0.5))
    assert run.rc == 0, run
    assert world.alias() == ("2", {})
    record, store = _only_record(db, world)
    shift = run.task("rollwright.deploy.lambda_shift : Shift the alias to the new version")["localhost"]
    assert record.deployment_id == shift["deployment_id"]  # the record's id is the deployment's id
    assert record.deployment_type == "lambda" and record.status == "Succeeded" and record.error is None
    assert record.application == world.name and record.deployment_group == f"{world.name}:live"
    assert record.revision == {"function": world.name, "alias": "live", "current_version": "1", "target_version": "2",
                               "publish": False}
    assert record.configuration == {"type": "linear", "percentage": 40, "interval": "1s"}
    assert record.start_time and record.end_time and record.start_time < record.end_time
    target, events = _events(record)
    assert target.name == world.name and target.status == "Succeeded"
    assert [ev.name for ev in target.events] == ["BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic"]
    assert all(ev.status == "Succeeded" and ev.start_time and ev.end_time for ev in target.events)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", t)  # the record's canonical times
               for ev in target.events for t in (ev.start_time, ev.end_time))
    assert record.start_time <= events["BeforeAllowTraffic"].start_time and events["AfterAllowTraffic"].end_time <= record.end_time
    assert events["BeforeAllowTraffic"].end_time <= events["AllowTraffic"].start_time
    assert events["AllowTraffic"].end_time <= events["AfterAllowTraffic"].start_time
    assert f"hook {world.pre} Succeeded" in events["BeforeAllowTraffic"].message
    assert "step 1 at +" in events["AllowTraffic"].message and "(planned +1.0s): 80.0%" in events["AllowTraffic"].message
    planned = record.extra["steps_planned"]
    actual = record.extra["steps_actual"]
    assert [s["at_seconds"] for s in planned] == [0.0, 1.0, 2.0]
    assert [s["weight"] for s in planned] == [0.4, 0.8, 1.0]
    assert [s["planned_seconds"] for s in actual] == [0.0, 1.0, 2.0]
    # never early, never far late (headroom for a loaded machine; `make bench-timing` measures the drift)
    assert all(-0.05 <= s["drift_seconds"] < 3.0 for s in actual), actual
    assert [h["lifecycle_event"] for h in record.extra["hooks"]] == ["BeforeAllowTraffic", "AfterAllowTraffic"]
    assert record.extra["lambda"]["final_alias"] == {"function_version": "2", "additional_version_weights": {}}
    assert store.get_lock(world.name, f"{world.name}:live") is None

    # again: the alias is already there -> Unchanged, changed nothing, and no second record
    again = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=_vars(world, db))
    assert again.rc == 0, again
    assert again.task("rollwright.deploy.lambda_shift : Plan the deployment (read only)")["localhost"]["status"] == "Unchanged"
    assert not any(h.get("changed") for t in again.tasks() for h in t["hosts"].values()
                   if not t["name"].endswith("Plan the deployment (read only)"))
    _only_record(db, world)


def test_hook_failure_is_recorded_failed(world, inventory, db, ansible_run):
    world.aws.queue_lambda_results([OK, CRASH])
    run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=_vars(
        world, db, rollwright_deployment_config={"type": "canary", "percentage": 50, "interval": "1s"},
        rollwright_lambda_before_allow_traffic_hook=world.pre, rollwright_lambda_after_allow_traffic_hook=world.post))
    assert run.rc != 0
    assert any("Failed" in (m or "") and "AfterAllowTraffic hook" in (m or "") for m in _msgs(run)), _msgs(run)
    assert world.alias() == ("1", {})  # the engine rolled the alias back; the record says so
    record, store = _only_record(db, world)
    assert record.status == "Failed" and "AfterAllowTraffic hook" in record.error
    target, events = _events(record)
    assert target.status == "Failed"
    assert [(ev.name, ev.status) for ev in target.events] == [
        ("BeforeAllowTraffic", "Succeeded"), ("AllowTraffic", "Succeeded"), ("AfterAllowTraffic", "Failed")]
    message = events["AfterAllowTraffic"].message
    assert f"hook {world.post} Failed (function error (Unhandled))" in message and "smoke test crashed" in message
    assert "rolled back to version 1" in message
    assert record.extra["lambda"]["rolled_back"] is True
    assert [s["weight"] for s in record.extra["steps_actual"]] == [0.5, 1.0]
    assert store.get_lock(world.name, f"{world.name}:live") is None  # released although the deployment failed

    # a failing BeforeAllowTraffic hook: no traffic moved, AllowTraffic never ran
    world.aws.queue_lambda_results([CRASH])
    run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=_vars(
        world, db, rollwright_application="orders", rollwright_lambda_before_allow_traffic_hook=world.pre))
    assert run.rc != 0
    store = _store(db)
    (second,) = store.list("orders", limit=5)
    second = store.get(second.deployment_id)
    assert second.status == "Failed" and second.deployment_group == f"{world.name}:live"
    assert [(ev.name, ev.status) for ev in second.hosts[0].events] == [
        ("BeforeAllowTraffic", "Failed"), ("AllowTraffic", "Skipped"), ("AfterAllowTraffic", "Skipped")]
    assert world.alias() == ("1", {})
    assert store.get_lock("orders", f"{world.name}:live") is None


def test_alarm_stops_and_rolls_back(world, inventory, db, ansible_run, aws):
    cw = aws.client("cloudwatch")

    def fire():
        # once the alias has left version 1 alone, the alarm goes off (the wait covers the playbook's own
        # timeout: on a loaded machine the run can take 30 s to reach the shift)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if world.alias()[1]:
                cw.set_alarm_state(AlarmName=world.alarm, StateValue="ALARM", StateReason="Errors > 1 in test")
                return
            time.sleep(0.05)

    firing = threading.Thread(target=fire, daemon=True)
    firing.start()
    # the role's former names (deprecated aliases of rollwright_deployment_config, rollwright_auto_rollback_alarms):
    # still read - the canary's 10 % and the alarm below come from them - with a deprecation warning naming the new ones
    run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=_vars(
        world, db, rollwright_lambda_deployment_config={"type": "canary", "percentage": 10, "interval": "30s"},
        rollwright_lambda_alarms=world.alarm, rollwright_lambda_poll_interval=0.5))
    firing.join(5)
    check = run.task("rollwright.deploy.lambda_shift : Refuse unknown rollwright variables (a misspelt option would be "
                     "ignored otherwise)")["localhost"]
    assert sorted(d["msg"].split(" is deprecated: use ")[1].split(" ")[0] for d in check["deprecations"]) == [
        "rollwright_auto_rollback_alarms", "rollwright_deployment_config"], check
    assert all(d["version"] == "0.3.0" and d["collection_name"] == "rollwright.deploy" for d in check["deprecations"])
    assert run.rc != 0
    assert world.alias() == ("1", {})
    record, store = _only_record(db, world)
    assert record.status == "Stopped" and world.alarm in record.error
    _target, events = _events(record)
    assert events["AllowTraffic"].status == "Failed" and events["AfterAllowTraffic"].status == "Skipped"
    # stopped by the alarm, long before the 30 s promote: timed from the shift itself (AllowTraffic), not
    # from the playbook's start, which is machine speed (37 s at load 20)
    allow = events["AllowTraffic"]
    shifted_for = (parse_time(allow.end_time) - parse_time(allow.start_time)).total_seconds()
    assert shifted_for < 25, allow
    assert f"alarm {world.alarm} in ALARM" in events["AllowTraffic"].message
    assert "Errors > 1 in test" in events["AllowTraffic"].message
    assert "rolled back to version 1" in events["AllowTraffic"].message
    assert [e["alarm"] for e in record.extra["alarm_events"]] == [world.alarm]
    assert [s["weight"] for s in record.extra["steps_actual"]] == [0.1]
    assert store.get_lock(world.name, f"{world.name}:live") is None


def test_locked_group_fails_at_once_and_changes_nothing(world, inventory, db, ansible_run):
    store = _store(db)
    held = store.acquire_lock(world.name, f"{world.name}:live", "d-HELD00001", owner="ops@elsewhere pid 42")
    run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=_vars(world, db))
    assert run.rc != 0
    (msg,) = _msgs(run)
    assert "is locked by deployment d-HELD00001" in msg and "ops@elsewhere pid 42" in msg, msg
    # at once: the refusing task does not wait for the lock (waiting would mean the holder's 120 s ttl);
    # timed on that task alone - the playbook's start is machine speed (20 s at load 20)
    assert run.task_seconds("rollwright.deploy.lambda_shift : Shift the alias to the new version") < 15
    assert world.alias() == ("1", {})
    assert store.list(world.name, limit=10) == []  # no record was created
    lock = store.get_lock(world.name, f"{world.name}:live")
    assert lock is not None and lock.deployment_id == "d-HELD00001"
    store.release_lock(held)


def test_recovery_after_the_controller_died(world, inventory, db, ansible_run):
    group = f"{world.name}:live"
    store = _store(db)
    # what a dead controller leaves: a held (live) lock, an InProgress record, a weighted alias
    record = store.create(DeploymentRecord(
        application=world.name, deployment_group=group, deployment_type="lambda",
        revision={"function": world.name, "alias": "live", "current_version": "1", "target_version": "3"},
        configuration="CodeDeployDefault.LambdaLinear10PercentEvery1Minute", hosts=[HostRecord(name=world.name)]))
    store.update_status(record.deployment_id, "InProgress")
    store.update_host(record.deployment_id, world.name, status="InProgress")
    store.acquire_lock(world.name, group, record.deployment_id, owner="ci@dead-runner pid 4242", ttl=3600)
    world.lam.update_alias(FunctionName=world.name, Name="live", FunctionVersion="1",
                           RoutingConfig={"AdditionalVersionWeights": {"3": 0.3}})

    # a new deployment is refused before it takes anything: the alias splits traffic (and the group is locked)
    run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=_vars(world, db))
    assert run.rc != 0 and any("already splits traffic" in m and "rollwright_lambda_recover=true" in m for m in _msgs(run)), _msgs(run)
    assert len(store.list(world.name, limit=10)) == 1

    # recovery without force refuses too, and says how
    recover = _vars(world, db, rollwright_lambda_recover=True)
    del recover["rollwright_lambda_target_version"]
    run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=recover)
    assert run.rc != 0
    assert any("rollwright_force_lock=true" in m and "ci@dead-runner pid 4242" in m for m in _msgs(run)), _msgs(run)
    assert world.alias() == ("1", {"3": 0.3})

    run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars={**recover, "rollwright_force_lock": True})
    assert run.rc == 0, run
    assert world.alias() == ("1", {})
    after = store.get(record.deployment_id)
    assert after.status == "Stopped" and "controller was lost" in after.error and "ci@dead-runner pid 4242" in after.error
    assert after.hosts[0].status == "Failed"
    assert after.extra["recovery"]["alias_before"] == {"function_version": "1", "additional_version_weights": {"3": 0.3}}
    assert store.get_lock(world.name, group) is None

    # the group deploys again
    run = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=_vars(world, db, rollwright_lambda_target_version="3"))
    assert run.rc == 0, run
    assert world.alias() == ("3", {})
    assert [r.status for r in store.list(world.name, group, limit=10)] == ["Succeeded", "Stopped"]
