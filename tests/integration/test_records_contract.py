# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One contract for every record store: SQLite in a temp dir and DynamoDB on the emulator over HTTP.

Also runs ``rollwright.deploy.deployment_info`` through ``ansible`` against both backends.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
import uuid
from pathlib import Path

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import (
    DeploymentRecord,
    HostRecord,
    InvalidTransition,
    LockHeld,
    LockLost,
    RecordNotFound,
    StoreNotReady,
    open_store,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records.dynamodb import DynamoDBRecordStore
from tests.harness.ansible_run import run_playbook

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["sqlite", "dynamodb"]
MEMBERSHIP = [
    {"kind": "elbv2", "target_group_arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/abc",
     "target_id": "i-0abc", "port": 8080, "availability_zone": None},
    {"kind": "haproxy", "instance": "lb1", "backend": "web", "server": "h1", "state": "ready", "weight": 100},
]


class Spec:
    """How to open one store, picklable so that spawned processes can open their own."""

    def __init__(self, backend: str, options: dict, env: dict):
        self.backend, self.options, self.env = backend, options, env

    def open(self):
        os.environ.update(self.env)
        return open_store(self.backend, self.options)


@pytest.fixture(params=BACKENDS)
def spec(request, tmp_path):
    if request.param == "sqlite":
        return Spec("sqlite", {"path": str(tmp_path / "records.sqlite3")}, {})
    aws = request.getfixturevalue("aws")
    table = f"rw-records-{uuid.uuid4().hex[:10]}"
    s = Spec("dynamodb", {"table": table, "region": aws.region, "endpoint_url": aws.endpoint}, dict(aws.env))
    open_store("dynamodb", dict(s.options, create_table=True), client_factory=aws.client)
    return s


@pytest.fixture
def store(spec):
    s = spec.open()
    yield s
    s.close()


def new(store, group="web", app="shop", **kw):
    return store.create(DeploymentRecord(application=app, deployment_group=group, **kw))


# ---- records ------------------------------------------------------------------------------

def test_create_and_get_round_trip(store):
    rec = new(store, deployment_type="blue_green_ec2",
              revision={"bucket": "rel", "key": "web.zip", "version": "v3", "etag": '"9b2c"', "size": 1234},
              configuration={"minimum_healthy_hosts": {"type": "FLEET_PERCENT", "value": 75}},
              extra={"replacement_fleet": ["i-1", "i-2"]},
              hosts=[HostRecord(name="h1", instance_id="i-1", lb_membership=MEMBERSHIP), HostRecord(name="h2")])
    assert re.match(r"^d-[A-Z0-9]{9}$", rec.deployment_id)
    got = store.get(rec.deployment_id)
    assert got.to_dict() == rec.to_dict()
    assert got.host("h1").lb_membership == MEMBERSHIP and got.extra == {"replacement_fleet": ["i-1", "i-2"]}
    assert got.configuration["minimum_healthy_hosts"]["value"] == 75
    with pytest.raises(RecordNotFound):
        store.get("d-000000000")


def test_event_updates(store):
    did = new(store).deployment_id
    store.set_hosts(did, [HostRecord(name="h1"), HostRecord(name="h2")])
    store.event(did, "h1", "ApplicationStop", "Skipped")
    store.event(did, "h1", "BeforeInstall", "InProgress")
    store.event(did, "h2", "BeforeInstall", "InProgress")
    start = store.get(did).host("h1").event("BeforeInstall").start_time
    store.event(did, "h1", "BeforeInstall", "Succeeded", scripts=[{"location": "s/a.sh", "exit_code": 0}], message="done")
    store.event(did, "h2", "BeforeInstall", "Failed", message="exit 2: missing /opt/app")
    store.update_host(did, "h2", status="Failed", instance_id="i-2")
    store.update_host(did, "h1", lb_membership=MEMBERSHIP)
    store.update_host(did, "h1", lb_restored=True, status="Succeeded")
    store.set_extra(did, "alias_weights", {"7": 0.1})
    got = store.get(did)
    h1, h2 = got.host("h1"), got.host("h2")
    assert [e.name for e in h1.events] == ["ApplicationStop", "BeforeInstall"]
    bi = h1.event("BeforeInstall")
    assert (bi.status, bi.start_time, bi.message) == ("Succeeded", start, "done") and bi.end_time >= start
    assert bi.scripts == [{"location": "s/a.sh", "exit_code": 0}]
    assert (h1.status, h1.lb_membership, h1.lb_restored) == ("Succeeded", MEMBERSHIP, True)
    assert (h2.status, h2.instance_id, h2.event("BeforeInstall").status) == ("Failed", "i-2", "Failed")
    assert got.extra == {"alias_weights": {"7": 0.1}}


def test_status_and_rollback_links(store):
    did = new(store).deployment_id
    assert store.update_status(did, "InProgress").start_time
    assert store.update_status(did, "Failed", error="h2 failed").end_time
    with pytest.raises(InvalidTransition):
        store.update_status(did, "Succeeded")
    rb = new(store, creator="rollback", rollback_of=did)
    assert store.get(did).rolled_back_by == rb.deployment_id
    assert store.get(rb.deployment_id).rollback_of == did
    with pytest.raises(RecordNotFound):
        new(store, creator="rollback", rollback_of="d-000000000")


def test_list_newest_first_and_last_successful(store):
    assert store.last_successful("shop", "web") is None
    made = []
    for group, status in [("web", "Succeeded"), ("api", "Succeeded"), ("web", "Succeeded"), ("web", "Failed"),
                          ("web", None)]:
        rec = new(store, group=group)
        if status:
            store.update_status(rec.deployment_id, status)
        made.append(rec.deployment_id)
    new(store, app="other")
    assert [r.deployment_id for r in store.list("shop")] == made[::-1]
    assert [r.deployment_id for r in store.list("shop", "web")] == [made[4], made[3], made[2], made[0]]
    assert [r.deployment_id for r in store.list("shop", "web", status="Succeeded")] == [made[2], made[0]]
    assert [r.deployment_id for r in store.list("shop", limit=3)] == [made[4], made[3], made[2]]
    assert [r.deployment_id for r in store.list("shop", "web", status="Failed", limit=1)] == [made[3]]
    assert store.last_successful("shop", "web").deployment_id == made[2]
    assert store.last_successful("shop", "api").deployment_id == made[1]


def test_lock_contract(store):
    # DynamoDB judges staleness on the store's clock, which the client knows from HTTP Date headers (whole
    # seconds): its estimate may move by up to half a second between two calls, so the TTL and the wait
    # leave that much room on either side.
    lock = store.acquire_lock("shop", "web", "d-AAAAAAAAA", owner="alice@ctl pid 4242", ttl=1.2)
    with pytest.raises(LockHeld) as err:
        store.acquire_lock("shop", "web", "d-BBBBBBBBB", owner="bob@ctl pid 7")
    assert str(err.value).startswith(
        "deployment group shop/web is locked by deployment d-AAAAAAAAA (started by alice@ctl pid 4242 at ")
    assert re.search(r"last heartbeat \d+ s ago\)", str(err.value))
    store.heartbeat(lock)
    assert store.get_lock("shop", "web").stale is False
    time.sleep(1.8)
    assert store.get_lock("shop", "web").stale is True
    with pytest.raises(LockHeld, match="force"):
        store.acquire_lock("shop", "web", "d-BBBBBBBBB")
    taken = store.acquire_lock("shop", "web", "d-BBBBBBBBB", owner="bob@ctl pid 7", force=True)
    with pytest.raises(LockLost):
        store.heartbeat(lock)
    with pytest.raises(LockLost):
        store.release_lock(lock)
    assert store.release_lock(taken) is True and store.release_lock(taken) is False
    assert store.get_lock("shop", "web") is None


def _race(spec, index, barrier, results):
    store = spec.open()
    did = "d-RACE%05d" % index
    barrier.wait()
    try:
        store.acquire_lock("shop", "web", did, owner=f"w{index}@ctl pid {os.getpid()}")
        results.put(("won", did))
    except LockHeld as exc:
        results.put(("lost", str(exc)))
    except Exception as exc:  # reported, so the test shows it
        results.put(("error", repr(exc)))


def test_eight_processes_race_for_the_lock(spec):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(spec, i, barrier, results)) for i in range(8)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=90) for _proc in procs]
    for p in procs:
        p.join(30)
    winners = [d for kind, d in outcomes if kind == "won"]
    assert len(winners) == 1, outcomes
    assert all(kind == "lost" and f"locked by deployment {winners[0]}" in m for kind, m in outcomes if m != winners[0])
    assert spec.open().get_lock("shop", "web").deployment_id == winners[0]


def _write(spec, did, index, barrier):
    store = spec.open()
    barrier.wait()
    for name in ("BeforeInstall", "AfterInstall", "ApplicationStart"):
        store.event(did, f"h{index % 2}", f"{name}-{index}", "InProgress")
        store.event(did, f"h{index % 2}", f"{name}-{index}", "Succeeded", message=f"w{index}")
    store.set_extra(did, f"w{index}", index)


def test_concurrent_writers_lose_no_update(spec, store):
    did = new(store).deployment_id
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_write, args=(spec, did, i, barrier)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
        assert p.exitcode == 0
    got = store.get(did)
    events = {(h.name, e.name): e for h in got.hosts for e in h.events}
    assert len(events) == 12 and all(e.status == "Succeeded" and e.start_time for e in events.values())
    assert got.extra == {f"w{i}": i for i in range(4)}


# ---- DynamoDB table set-up ----------------------------------------------------------------

def test_missing_dynamodb_table_explains_how_to_create_it(aws):
    store = DynamoDBRecordStore(aws.client("dynamodb"), "rw-missing-table")
    with pytest.raises(StoreNotReady) as err:
        store.ensure_table(create=False)
    assert "rw-missing-table does not exist" in str(err.value)
    assert "create_table=true" in str(err.value) and "aws dynamodb create-table --table-name rw-missing-table" in str(err.value)
    assert store.ensure_table(create=True) is True and store.ensure_table(create=False) is False
    client = aws.client("dynamodb")
    client.create_table(TableName="rw-not-ours", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    with pytest.raises(StoreNotReady, match="not a rollwright records table"):
        DynamoDBRecordStore(client, "rw-not-ours").ensure_table()


# ---- the module, through ansible ------------------------------------------------------------

def _ansible_tasks(steps: list[tuple[str, dict]], env: dict) -> list[dict]:
    """Run the modules ``steps`` name (module, args; args may template earlier results as ``{{ r0.deployment_id }}``)
    as the tasks of one ansible-playbook run on localhost, and return each task's result in order.

    One run for the whole sequence: every ansible start costs a second or two of CPU. A failing task does not end
    the run (its failure is asserted by the test); ``check_mode`` in the args runs that task in check mode.
    """
    tasks = []
    for index, (module, args) in enumerate(steps):
        args = dict(args)
        task = {"name": f"step {index}", "register": f"r{index}", "ignore_errors": True,
                "check_mode": bool(args.pop("check_mode", False))}
        task[module] = args
        tasks.append(task)
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks,
             "vars": {"ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python")}}]
    result = run_playbook(play, "localhost,", env=env)
    results = [task["hosts"]["localhost"] for task in result.tasks()]
    assert len(results) == len(steps), result
    return results


def test_deployment_info_module(spec, store):
    first = new(store, revision={"bucket": "rel", "key": "web.zip", "version": "v1"})
    store.update_status(first.deployment_id, "Succeeded")
    second = new(store)
    store.event(second.deployment_id, "h1", "ApplicationStop", "Failed", message="stop.sh exited 1")
    store.update_status(second.deployment_id, "Failed", error="ApplicationStop failed on h1")
    store.acquire_lock("shop", "web", second.deployment_id, owner="alice@ctl pid 4242")
    if spec.backend == "sqlite":
        backend_args = {"sqlite_path": spec.options["path"]}
    else:
        backend_args = {"backend": "dynamodb", "dynamodb_table": spec.options["table"]}

    info = "rollwright.deploy.deployment_info"
    res, by_id, unknown = _ansible_tasks([
        (info, dict(backend_args, application="shop", deployment_group="web", last_successful=True)),
        (info, dict(backend_args, deployment_id=second.deployment_id)),
        (info, dict(backend_args, deployment_id="d-000000000")),
    ], spec.env)
    assert not res.get("failed"), res
    assert res["changed"] is False
    assert [d["deployment_id"] for d in res["deployments"]] == [second.deployment_id, first.deployment_id]
    assert res["deployments"][0]["status"] == "Failed" and res["deployments"][0]["error"] == "ApplicationStop failed on h1"
    assert res["last_successful"]["deployment_id"] == first.deployment_id
    assert res["last_successful"]["revision"] == {"bucket": "rel", "key": "web.zip", "version": "v1"}
    assert res["lock"]["deployment_id"] == second.deployment_id and res["lock"]["owner"] == "alice@ctl pid 4242"
    assert res["lock"]["stale"] is False

    event = by_id["deployment"]["hosts"][0]["events"][0]
    assert (event["name"], event["status"], event["message"]) == ("ApplicationStop", "Failed", "stop.sh exited 1")

    assert unknown["failed"] is True and "no deployment d-000000000" in unknown["msg"]


def test_deployment_record_module(spec, store):
    if spec.backend == "sqlite":
        backend_args = {"sqlite_path": spec.options["path"]}
    else:
        backend_args = {"backend": "dynamodb", "dynamodb_table": spec.options["table"]}

    record = "rollwright.deploy.deployment_record"
    did_t = "{{ r0.deployment_id }}"  # the deployment the first task creates
    (created, locked, refused, dummy_event, dummy_host, failed, finished, missing, check, unlocked) = _ansible_tasks([
        (record, dict(backend_args, state="create", application="shop", deployment_group="web",
                      hosts=["h1", {"name": "h2", "instance_id": "i-2"}], revision={"bucket": "rel", "key": "web.zip"},
                      configuration="CodeDeployDefault.AllAtOnce")),
        (record, dict(backend_args, state="lock", application="shop", deployment_group="web", deployment_id=did_t,
                      owner="ci@runner pid 1")),
        (record, dict(backend_args, state="lock", application="shop", deployment_group="web", deployment_id="d-BBBBBBBBB")),
        (record, dict(backend_args, state="event", deployment_id=did_t, host="h1", event_name="BeforeInstall",
                      event_status="Failed", event_message="exit 3", scripts=[{"location": "s/b.sh", "exit_code": 3}])),
        (record, dict(backend_args, state="host", deployment_id=did_t, host="h1", host_status="Failed",
                      lb_membership=MEMBERSHIP)),
        (record, dict(backend_args, state="status", deployment_id=did_t, status="Failed", error="BeforeInstall failed on h1")),
        (record, dict(backend_args, state="status", deployment_id=did_t, status="Succeeded")),
        (record, dict(backend_args, state="status", deployment_id=did_t)),
        (record, dict(backend_args, state="create", application="shop", deployment_group="web", check_mode=True)),
        (record, dict(backend_args, state="unlock", application="shop", deployment_group="web", deployment_id=did_t,
                      lock_token="{{ r1.lock.token }}")),
    ], spec.env)
    assert created["changed"] is True, created
    did = created["deployment_id"]
    assert re.match(r"^d-[A-Z0-9]{9}$", did) and created["deployment"]["status"] == "Created"

    assert locked["changed"] is True and locked["lock"]["deployment_id"] == did, locked
    assert refused["failed"] is True and refused["msg"].startswith(f"deployment group shop/web is locked by deployment {did} "
                                                                   "(started by ci@runner pid 1 at ")
    assert refused["lock"]["deployment_id"] == did

    assert failed["deployment"]["status"] == "Failed" and failed["deployment"]["end_time"], failed
    assert finished["failed"] is True and "already finished as Failed" in finished["msg"]
    assert missing["failed"] is True and "status" in missing["msg"]  # required field is named

    # check mode writes nothing: the one record of the group is the first task's
    assert check["changed"] is True and not check.get("failed"), check
    assert [r.deployment_id for r in store.list("shop")] == [did]

    assert unlocked["changed"] is True and unlocked["released"] is True, unlocked
    rec = store.get(did)
    h1 = rec.host("h1")
    assert (h1.status, h1.lb_membership, h1.event("BeforeInstall").message) == ("Failed", MEMBERSHIP, "exit 3")
    assert rec.host("h2").instance_id == "i-2" and rec.error == "BeforeInstall failed on h1"
    assert store.get_lock("shop", "web") is None
