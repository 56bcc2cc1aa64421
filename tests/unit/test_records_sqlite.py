# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite deployment records: model, history, lock, and several processes writing at once."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import time

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import (
    DeploymentRecord,
    HostRecord,
    InvalidRecord,
    InvalidTransition,
    LockHeld,
    LockLost,
    RecordExists,
    RecordNotFound,
    StoreNotReady,
    open_store,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records.sqlite import (
    SCHEMA_VERSION,
    SQLiteRecordStore,
    default_path,
)

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
EVENTS = ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall", "ApplicationStart",
          "ValidateService"]


@pytest.fixture
def store(tmp_path):
    s = open_store("sqlite", {"path": str(tmp_path / "records.sqlite3")})
    yield s
    s.close()


def new(store, group="web", app="shop", **kw):
    return store.create(DeploymentRecord(application=app, deployment_group=group, **kw))


# ---- records ------------------------------------------------------------------------------

def test_create_fills_id_time_and_owner(store):
    rec = new(store, revision={"bucket": "b", "key": "k.zip", "version": "v1", "etag": '"abc"'},
              configuration="CodeDeployDefault.HalfAtATime")
    assert re.match(r"^d-[A-Z0-9]{9}$", rec.deployment_id)
    assert ISO.match(rec.create_time)
    assert re.match(r"^.+@.+ pid \d+$", rec.started_by)
    got = store.get(rec.deployment_id)
    assert got.status == "Created" and got.creator == "user" and got.deployment_type == "in_place"
    assert got.revision["etag"] == '"abc"' and got.configuration == "CodeDeployDefault.HalfAtATime"
    assert got.to_dict() == DeploymentRecord.from_dict(got.to_dict()).to_dict()


def test_ids_are_distinct(store):
    ids = {new(store).deployment_id for _i in range(30)}
    assert len(ids) == 30


def test_create_rejects_bad_fields_naming_them(store):
    with pytest.raises(InvalidRecord, match="deployment_type: expected one of in_place, blue_green_ec2, lambda"):
        new(store, deployment_type="canary")
    with pytest.raises(InvalidRecord, match="creator"):
        new(store, creator="robot")
    with pytest.raises(InvalidRecord, match="deployment_group"):
        new(store, group="a#b")
    with pytest.raises(InvalidRecord, match="deployment_id"):
        new(store, deployment_id="d-lower1234")


def test_duplicate_id_is_refused(store):
    rec = new(store)
    with pytest.raises(RecordExists, match=rec.deployment_id):
        new(store, deployment_id=rec.deployment_id)


def test_get_unknown_raises(store):
    with pytest.raises(RecordNotFound, match="d-AAAAAAAAA"):
        store.get("d-AAAAAAAAA")
    with pytest.raises(RecordNotFound):
        store.event("d-AAAAAAAAA", "h1", "Install", "InProgress")


def test_event_updates_are_merged_in_order(store):
    rec = new(store)
    did = rec.deployment_id
    store.set_hosts(did, [HostRecord(name="h1", instance_id="i-1"), HostRecord(name="h2")])
    store.event(did, "h1", "ApplicationStop", "Skipped", message="first deployment on this host")
    store.event(did, "h1", "BeforeInstall", "InProgress")
    started = store.get(did).host("h1").event("BeforeInstall").start_time
    assert ISO.match(started)
    time.sleep(0.01)
    store.event(did, "h1", "BeforeInstall", "Succeeded",
                scripts=[{"location": "scripts/a.sh", "exit_code": 0, "seconds": 0.2}], message="ok\n")
    store.event(did, "h1", "AfterInstall", "Failed", start="2026-11-26T10:00:00Z", end="2026-11-26T10:00:05+00:00",
                message="exit 3")
    got = store.get(did)
    h1 = got.host("h1")
    assert [e.name for e in h1.events] == ["ApplicationStop", "BeforeInstall", "AfterInstall"]
    bi = h1.event("BeforeInstall")
    assert bi.status == "Succeeded" and bi.start_time == started and bi.end_time > started
    assert bi.scripts == [{"location": "scripts/a.sh", "exit_code": 0, "seconds": 0.2}] and bi.message == "ok\n"
    ai = h1.event("AfterInstall")
    assert (ai.start_time, ai.end_time) == ("2026-11-26T10:00:00.000000Z", "2026-11-26T10:00:05.000000Z")
    assert h1.event("ApplicationStop").status == "Skipped" and h1.event("ApplicationStop").start_time is None
    assert [h.name for h in got.hosts] == ["h1", "h2"] and got.host("h2").events == []
    with pytest.raises(InvalidRecord, match="event status"):
        store.event(did, "h1", "Install", "Done")
    with pytest.raises(InvalidRecord, match="start"):
        store.event(did, "h1", "Install", "InProgress", start="yesterday")


def test_update_host_touches_only_given_fields(store):
    did = new(store).deployment_id
    membership = [{"kind": "elbv2", "target_group_arn": "arn:tg", "target_id": "i-1", "port": 80,
                   "availability_zone": None}]
    store.update_host(did, "h1", status="InProgress", instance_id="i-1")
    store.update_host(did, "h1", lb_membership=membership)
    store.update_host(did, "h1", lb_restored=True)
    h1 = store.get(did).host("h1")
    assert (h1.status, h1.instance_id, h1.lb_membership, h1.lb_restored) == ("InProgress", "i-1", membership, True)
    with pytest.raises(InvalidRecord, match="lb_membership"):
        store.update_host(did, "h1", lb_membership={"kind": "elbv2"})


def test_status_times_and_finality(store):
    did = new(store).deployment_id
    rec = store.update_status(did, "InProgress")
    assert ISO.match(rec.start_time) and rec.end_time is None
    assert store.update_status(did, "InProgress").start_time == rec.start_time
    done = store.update_status(did, "Failed", error="ValidateService failed on h1")
    assert done.end_time >= done.start_time and done.error == "ValidateService failed on h1"
    with pytest.raises(InvalidTransition, match="already finished as Failed"):
        store.update_status(did, "Succeeded")
    assert store.get(did).status == "Failed"


def test_rollback_links_both_ways(store):
    orig = new(store).deployment_id
    rb = new(store, creator="rollback", rollback_of=orig).deployment_id
    assert store.get(orig).rolled_back_by == rb and store.get(rb).rollback_of == orig
    with pytest.raises(RecordNotFound):
        new(store, creator="rollback", rollback_of="d-ZZZZZZZZZ")


def test_extra_keys_are_independent(store):
    did = new(store, extra={"fleet": ["i-a"]}).deployment_id
    store.set_extra(did, "alias_weights", {"3": 0.1})
    store.set_extra(did, "alias_weights", {"3": 0.2})
    assert store.get(did).extra == {"fleet": ["i-a"], "alias_weights": {"3": 0.2}}


def test_list_newest_first_with_filters(store):
    a = new(store, group="web")
    b = new(store, group="api")
    c = new(store, group="web")
    new(store, app="other", group="web")
    store.update_status(a.deployment_id, "Succeeded")
    store.update_status(c.deployment_id, "Failed")
    assert [r.deployment_id for r in store.list("shop")] == [c.deployment_id, b.deployment_id, a.deployment_id]
    assert [r.deployment_id for r in store.list("shop", "web")] == [c.deployment_id, a.deployment_id]
    assert [r.deployment_id for r in store.list("shop", "web", status="Succeeded")] == [a.deployment_id]
    assert [r.deployment_id for r in store.list("shop", limit=2)] == [c.deployment_id, b.deployment_id]
    assert store.list("shop", "web")[0].hosts == []
    assert store.list("nobody") == []
    with pytest.raises(InvalidRecord, match="limit"):
        store.list("shop", limit=0)


def test_last_successful(store):
    assert store.last_successful("shop", "web") is None
    first = new(store)
    store.update_status(first.deployment_id, "Succeeded")
    second = new(store)
    store.event(second.deployment_id, "h1", "Install", "Succeeded")
    store.update_status(second.deployment_id, "Succeeded")
    failed = new(store)
    store.update_status(failed.deployment_id, "Failed")
    last = store.last_successful("shop", "web")
    assert last.deployment_id == second.deployment_id
    assert last.host("h1").event("Install").status == "Succeeded"  # full record, hosts included
    assert store.last_successful("shop", "api") is None


# ---- lock ----------------------------------------------------------------------------------

def test_lock_held_message_names_holder_owner_and_times(store):
    did = new(store).deployment_id
    lock = store.acquire_lock("shop", "web", did, owner="alice@ctl pid 4242")
    with pytest.raises(LockHeld) as err:
        store.acquire_lock("shop", "web", "d-BBBBBBBBB", owner="bob@ctl2 pid 1")
    msg = str(err.value)
    assert re.match(
        rf"^deployment group shop/web is locked by deployment {did} \(started by alice@ctl pid 4242 at "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, last heartbeat \d+ s ago\)", msg), msg
    assert not err.value.stale and err.value.info.deployment_id == did
    info = store.get_lock("shop", "web")
    assert (info.deployment_id, info.owner, info.stale) == (did, "alice@ctl pid 4242", False)
    # another group is independent
    store.release_lock(store.acquire_lock("shop", "api", "d-CCCCCCCCC"))
    store.heartbeat(lock)
    assert store.release_lock(lock) is True
    assert store.get_lock("shop", "web") is None
    assert store.release_lock(lock) is False


def test_stale_lock_needs_force(store):
    old = store.acquire_lock("shop", "web", "d-AAAAAAAAA", owner="alice@ctl pid 1", ttl=0.3)
    with pytest.raises(LockHeld) as live:
        store.acquire_lock("shop", "web", "d-BBBBBBBBB", force=True)  # force never breaks a live lock
    assert not live.value.stale
    time.sleep(0.5)
    assert store.get_lock("shop", "web").stale
    with pytest.raises(LockHeld) as stale:
        store.acquire_lock("shop", "web", "d-BBBBBBBBB")
    assert stale.value.stale
    assert "stale" in str(stale.value) and "recovery" in str(stale.value) and "force" in str(stale.value)
    new_lock = store.acquire_lock("shop", "web", "d-BBBBBBBBB", owner="bob@ctl pid 2", force=True)
    assert store.get_lock("shop", "web").deployment_id == "d-BBBBBBBBB"
    with pytest.raises(LockLost, match="d-BBBBBBBBB"):
        store.heartbeat(old)
    with pytest.raises(LockLost):
        store.release_lock(old)
    assert store.release_lock(new_lock) is True
    assert new_lock.token != old.token


def test_heartbeat_keeps_lock_fresh(store):
    lock = store.acquire_lock("shop", "web", "d-AAAAAAAAA", ttl=0.4)
    for _i in range(4):
        time.sleep(0.2)
        store.heartbeat(lock)
    assert not store.get_lock("shop", "web").stale
    with pytest.raises(LockHeld):
        store.acquire_lock("shop", "web", "d-BBBBBBBBB", force=True)


def _race_for_lock(path, index, barrier, results):
    store = SQLiteRecordStore(path)
    did = "d-RACE%05d" % index
    barrier.wait()
    try:
        store.acquire_lock("shop", "web", did, owner=f"worker{index}@ctl pid 0")
        results.put(("won", did))
    except LockHeld as exc:
        results.put(("lost", str(exc)))


def test_eight_processes_race_for_the_lock_exactly_one_wins(tmp_path):
    path = str(tmp_path / "race.sqlite3")
    SQLiteRecordStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race_for_lock, args=(path, i, barrier, results)) for i in range(8)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=600) for _proc in procs]  # spawned interpreters start slowly on a loaded machine
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    winners = [d for kind, d in outcomes if kind == "won"]
    assert len(winners) == 1, outcomes
    losers = [m for kind, m in outcomes if kind == "lost"]
    assert len(losers) == 7 and all(f"locked by deployment {winners[0]}" in m for m in losers)
    assert SQLiteRecordStore(path).get_lock("shop", "web").deployment_id == winners[0]


def _write_events(path, did, index, barrier):
    store = SQLiteRecordStore(path)
    host = f"h{index % 4}"  # two writers per host: per-event rows must keep both
    barrier.wait()
    for n, name in enumerate(EVENTS):
        event = f"{name}{index}"
        store.event(did, host, event, "InProgress")
        store.event(did, host, event, "Succeeded", scripts=[{"writer": index, "n": n}])
    store.update_host(did, host, instance_id=f"i-{index % 4}")
    store.set_extra(did, f"writer{index}", index)


def test_concurrent_event_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "events.sqlite3")
    store = SQLiteRecordStore(path)
    did = store.create(DeploymentRecord(application="shop", deployment_group="web")).deployment_id
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_write_events, args=(path, did, i, barrier)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    rec = store.get(did)
    assert sorted(h.name for h in rec.hosts) == ["h0", "h1", "h2", "h3"]
    events = {(h.name, e.name): e for h in rec.hosts for e in h.events}
    assert len(events) == 8 * len(EVENTS)
    for index in range(8):
        for n, name in enumerate(EVENTS):
            ev = events[(f"h{index % 4}", f"{name}{index}")]
            assert ev.status == "Succeeded" and ev.start_time and ev.end_time
            assert ev.scripts == [{"writer": index, "n": n}]
    assert rec.extra == {f"writer{i}": i for i in range(8)}


# ---- file, schema ---------------------------------------------------------------------------

def test_default_path_respects_xdg_state_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_path() == tmp_path / "state" / "rollwright" / "deployments.sqlite3"
    store = open_store("sqlite", {})
    assert store.path == default_path() and store.path.exists()
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".local" / "state" / "rollwright" / "deployments.sqlite3"


def test_schema_is_versioned_and_wal(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = SQLiteRecordStore(str(path))
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    conn = sqlite3.connect(str(path))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"deployments", "hosts", "events", "extra", "locks"} <= tables
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreNotReady, match="newer than this collection"):
        SQLiteRecordStore(str(path))


def test_unknown_backend_is_named():
    with pytest.raises(InvalidRecord, match="backend: expected one of sqlite, dynamodb"):
        open_store("redis", {})
