# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deployment session (module_utils/deployments/session.py): record, lock, lease keeper, end and the
recovery dispatch, against both record backends (SQLite in a file, DynamoDB on the AWS emulator) and a
real detached lease keeper process."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import bluegreen
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests as cr
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import session as ds
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import inplace
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.recovery import RecoveryError
from ansible_collections.rollwright.deploy.plugins.module_utils.records import DeploymentRecord, HostRecord, open_store
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import LockHeld


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return open_store("sqlite", {"path": str(tmp_path / "records.sqlite3")})
    aws = request.getfixturevalue("aws")
    options = {"table": f"rw-session-{uuid.uuid4().hex[:8]}", "region": aws.region, "endpoint_url": aws.endpoint}
    open_store("dynamodb", dict(options, create_table=True), client_factory=aws.client)
    return open_store("dynamodb", options, client_factory=aws.client)


def _record(kind: str = "lambda", group: str = "orders-api:live") -> DeploymentRecord:
    return DeploymentRecord(application="orders-api", deployment_group=group, deployment_type=kind,
                            revision={"function": "orders-api", "alias": "live", "current_version": "1"},
                            hosts=[HostRecord(name="orders-api")])


def test_one_lock_ttl_default_for_every_deployment_type():
    assert ds.DEFAULT_LOCK_TTL == 60.0
    assert inplace.DEFAULT_LOCK_TTL is ds.DEFAULT_LOCK_TTL and bluegreen.DEFAULT_LOCK_TTL is ds.DEFAULT_LOCK_TTL
    assert ds.lease_interval(ds.DEFAULT_LOCK_TTL) == 10.0 and ds.lease_interval(3) == 1.0


def test_a_session_records_locks_appends_events_and_ends(store):
    session = ds.DeploymentSession.open(store, _record())
    lock = store.get_lock("orders-api", "orders-api:live")
    assert lock.deployment_id == session.deployment_id and lock.ttl == ds.DEFAULT_LOCK_TTL
    assert session.to_state({})["lock"]["token"] == session.lock["token"]
    session.mark_in_progress()
    session.event("orders-api", "AllowTraffic", "InProgress", message="step 1/2")
    time.sleep(0.01)
    before = lock.heartbeat_at
    session.renew()
    assert store.get_lock("orders-api", "orders-api:live").heartbeat_at > before
    live = store.get(session.deployment_id)
    assert live.status == "InProgress" and live.host("orders-api").event("AllowTraffic").message == "step 1/2"
    request = cr.submit(store, session.deployment_id, "stop")
    final = session.end("Succeeded")
    assert final.status == "Succeeded" and store.get_lock("orders-api", "orders-api:live") is None
    (closed,) = store.list_requests(session.deployment_id)
    assert closed.request_id == request.request_id and closed.state == "Refused"
    # a step of the same deployment picks the session up from its state
    again = ds.DeploymentSession.from_state(store, session.to_state({"deployment_id": session.deployment_id}))
    assert again.lock == session.lock and again.release() is False  # released already


def test_a_held_lock_refuses_the_next_deployment(store):
    first = ds.DeploymentSession.open(store, _record(kind="in_place", group="web"))
    with pytest.raises(LockHeld, match=first.deployment_id):
        ds.DeploymentSession.open(store, _record(kind="in_place", group="web"))  # recorded as Failed
    with pytest.raises(LockHeld):
        ds.DeploymentSession.open(store, _record(kind="lambda", group="web"), record_refusal=False)  # not recorded
    statuses = sorted(r.status for r in store.list("orders-api", "web", limit=10))
    assert statuses == ["Created", "Failed"]
    store.update_status(first.deployment_id, "Stopped", error="controller died")
    with pytest.raises(LockHeld, match="rollwright.deploy.recover"):  # the holder ended: how to recover it
        ds.DeploymentSession.open(store, _record(kind="in_place", group="web"))


def test_the_lease_keeper_renews_the_lock_and_marks_a_dead_controllers_deployment_stopped(tmp_path):
    """A real detached keeper: it beats while its controller (here a sleep process) lives; once that dies it
    marks the Lambda deployment Stopped, names the Lambda recovery and keeps the lock for it."""
    path = str(tmp_path / "records.sqlite3")
    store = open_store("sqlite", {"path": path})
    controller = subprocess.Popen(["sleep", "60"])  # pylint: disable=consider-using-with
    try:
        session = ds.DeploymentSession.open(store, _record(), ttl=3.0)
        session.mark_in_progress()
        keeper = session.start_lease(ds.LeaseSettings({"backend": "sqlite", "sqlite_path": path}, {},
                                                      work_dir=str(tmp_path / "lease")),
                                     controller=(controller.pid, lease.process_start(controller.pid)))
        assert lease.process_alive(keeper["pid"], keeper["start"])
        first = store.get_lock("orders-api", "orders-api:live").heartbeat_at
        deadline = time.monotonic() + 15
        while store.get_lock("orders-api", "orders-api:live").heartbeat_at == first:
            assert time.monotonic() < deadline, (tmp_path / "lease" / f"{session.deployment_id}.log").read_text()
            time.sleep(0.1)
        assert store.get(session.deployment_id).extra["controller"]["pid"] == controller.pid
        controller.kill()
        controller.wait()
        while store.get(session.deployment_id).status != "Stopped":
            assert time.monotonic() < deadline, (tmp_path / "lease" / f"{session.deployment_id}.log").read_text()
            time.sleep(0.1)
        record = store.get(session.deployment_id)
        assert "rollwright_lambda_recover=true" in record.error and record.extra["interrupted"]["noticed_by"] == "lease keeper"
        assert "held for recovery" in store.get_lock("orders-api", "orders-api:live").owner
    finally:
        controller.kill()
        lease.stop_lease_keeper(session.keeper)


def test_the_keeper_leaves_a_handed_over_lock_alone(tmp_path):
    """Split blue/green: the lock handed over to the record (a new token) is not the keeper's: when the job's
    controller ends, the deployment stays Ready."""
    store = open_store("sqlite", {"path": str(tmp_path / "records.sqlite3")})
    session = ds.DeploymentSession.open(store, _record(kind="blue_green_ec2", group="web"))
    store.update_status(session.deployment_id, "Ready")
    store.take_over("orders-api", "web", session.deployment_id, owner="awaiting approval", ttl=600, live=True,
                    token=session.lock["token"])
    keeper = lease.LeaseKeeper(store, session.lock, 4242, "1", poll=0, sleep=lambda s: None, alive=lambda p, s: False)
    assert "no longer ours" in keeper.run()
    assert store.get(session.deployment_id).status == "Ready"
    assert store.get_lock("orders-api", "web").owner == "awaiting approval"


def test_recovery_is_dispatched_on_the_deployment_type(store):
    session = ds.DeploymentSession.open(store, _record())
    with pytest.raises(RecoveryError, match="rollwright_lambda_recover=true"):
        ds.recover(store, None, store.get(session.deployment_id))
    session.end("Succeeded")
    outcome = ds.recover(store, None, store.get(session.deployment_id))
    assert outcome["changed"] is False and "nothing to do" in outcome["message"]


def test_lambda_recovery_closes_the_record_and_releases_the_lock(store):
    session = ds.DeploymentSession.open(store, _record())
    session.mark_in_progress()
    calls = []

    def put_back(version):
        calls.append(version)
        return {"changed": True, "before": {"function_version": "1", "additional_version_weights": {"2": 0.1}},
                "final_alias": {"function_version": version, "additional_version_weights": {}}, "msg": "alias back"}

    with pytest.raises(RecoveryError, match="rollwright_force_lock=true"):
        ds.recover_lambda(store, "orders-api", "orders-api:live", put_back)
    assert calls == []
    result = ds.recover_lambda(store, "orders-api", "orders-api:live", put_back, force=True)
    assert calls == ["1"] and result["recovered_deployment_id"] == session.deployment_id
    record = store.get(session.deployment_id)
    assert record.status == "Stopped" and record.host("orders-api").status == "Failed"
    assert record.extra["recovery"]["alias_before"]["additional_version_weights"] == {"2": 0.1}
    assert store.get_lock("orders-api", "orders-api:live") is None


_ORPHAN_SCRIPT = r"""
import json, multiprocessing, os, sys, time
sys.path[:0] = sys.argv[2:]
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import ControllerGone

def worker(out, controller):
    while os.getppid() == controller:  # the controller dies before this step begins
        time.sleep(0.01)
    seen = {"controller": controller, "parent_now": os.getppid(), "controller_pid": lease.controller_pid()}
    for name, guard in (("guard_fork_time", lease.controller_guard()),
                        ("guard_parent_now", lease.controller_guard(os.getppid()))):
        try:
            guard()
            seen[name] = "went on"
        except ControllerGone as exc:
            seen[name] = str(exc)
    with open(out, "w") as fh:
        json.dump(seen, fh)

if __name__ == "__main__":
    multiprocessing.get_context("fork").Process(target=worker, args=(sys.argv[1], os.getpid())).start()
    os._exit(0)  # killed: the worker is orphaned before it reads its parent
"""


def test_a_step_whose_controller_died_before_it_began_sees_it_gone(tmp_path):
    """Ansible forks a worker per task; a kill of ansible-playbook right after the fork orphans the worker before
    its step takes the controller's pid. The guard takes the pid recorded at the fork, so that step stops at its
    first change instead of going on (a guard built on the parent at the step's start never fires)."""
    import json
    import os
    import sys

    import ansible_collections

    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN_SCRIPT)
    out = tmp_path / "seen.json"
    roots = [os.path.dirname(os.path.dirname(ansible_collections.__file__))] + sys.path
    subprocess.run([sys.executable, str(script), str(out), *roots], check=True, timeout=30)
    for _attempt in range(500):
        if out.exists() and out.stat().st_size:
            break
        time.sleep(0.02)
    seen = json.loads(out.read_text())
    assert seen["controller_pid"] == seen["controller"] != seen["parent_now"]
    assert f"pid {seen['controller']}) died" in seen["guard_fork_time"]
    assert seen["guard_parent_now"] == "went on"  # what a guard on the parent at the step's start would do
