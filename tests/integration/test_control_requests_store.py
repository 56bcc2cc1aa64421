# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Control requests in the record store, SQLite and DynamoDB (emulator over HTTP): their own rows/items,
compare-and-set state moves, and requesters racing the controller's own writes without losing any."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests as cr
from ansible_collections.rollwright.deploy.plugins.module_utils.records import (
    ControlRequest,
    DeploymentRecord,
    InvalidRecord,
    RecordNotFound,
    RequestConflict,
)
# the same two-backend fixtures (SQLite file, DynamoDB table on the emulator)
from tests.integration.test_records_contract import spec, store  # noqa: F401  # pylint: disable=unused-import


def running(store, deployment_type="in_place"):
    rec = store.create(DeploymentRecord(application="shop", deployment_group="web", deployment_type=deployment_type))
    store.update_status(rec.deployment_id, "InProgress")
    return rec.deployment_id


def test_requests_are_their_own_rows_and_move_by_compare_and_set(store):
    did = running(store)
    added = store.add_request(did, ControlRequest(action="stop", options={"rollback": True}, requested_by="alice"))
    assert added.request_id.startswith("r-") and added.state == "Pending" and added.requested_at
    # the record itself is untouched by requests, and the controller's writes do not touch them
    store.set_extra(did, "inplace", {"minimum": 2})
    store.event(did, "h1", "Install", "InProgress")
    assert store.get(did).extra == {"inplace": {"minimum": 2}}
    [listed] = store.list_requests(did)
    assert listed.to_dict() == added.to_dict()
    seen = store.update_request(did, added.request_id, "Acknowledged", ("Pending",), handled_by="controller")
    assert seen.state == "Acknowledged" and seen.acknowledged_at and seen.ended_at is None
    with pytest.raises(RequestConflict) as exc:
        store.update_request(did, added.request_id, "Acknowledged", ("Pending",), handled_by="recover")
    assert exc.value.current.state == "Acknowledged" and exc.value.current.handled_by == "controller"
    done = store.update_request(did, added.request_id, "Done", ("Acknowledged",), message="stopped")
    assert done.state == "Done" and done.ended_at and done.message == "stopped"
    assert store.get(did).status == "InProgress"  # a request never changes the record by itself
    with pytest.raises(RecordNotFound):
        store.update_request(did, "r-20260101000000000000-abcdef", "Done", ("Pending",))
    with pytest.raises(RecordNotFound):
        store.add_request("d-NOSUCHXXX", ControlRequest(action="stop"))
    with pytest.raises(InvalidRecord, match="action"):
        store.add_request(did, ControlRequest(action="explode"))


def test_submit_refuses_what_does_not_apply(store):
    inplace = running(store)
    with pytest.raises(cr.RequestRefused, match="promote: does not apply to a in_place deployment"):
        cr.submit(store, inplace, "promote")
    with pytest.raises(cr.RequestRefused, match="resume: .* is not paused"):
        cr.submit(store, inplace, "resume")
    with pytest.raises(cr.RequestRefused, match="no successful deployment to roll back to"):
        cr.submit(store, inplace, "stop", rollback=True)
    with pytest.raises(cr.RequestRefused, match="max_pause"):
        cr.submit(store, inplace, "pause", max_pause=-5)
    planned = cr.submit(store, inplace, "pause", max_pause=60, check_mode=True)
    assert planned.request_id is None and store.list_requests(inplace) == []  # check mode writes nothing
    cr.submit(store, inplace, "pause", max_pause=60)
    with pytest.raises(cr.RequestRefused, match="already paused"):
        cr.submit(store, inplace, "pause")
    cr.submit(store, inplace, "stop")
    with pytest.raises(cr.RequestRefused, match="already has a stop pending"):
        cr.submit(store, inplace, "resume")
    store.update_status(inplace, "Stopped")
    with pytest.raises(cr.RequestRefused, match="already ended as Stopped; nothing to stop"):
        cr.submit(store, inplace, "stop")
    lam = running(store, "lambda")
    assert cr.submit(store, lam, "promote").state == "Pending"
    # marked Stopped by the lease keeper when its controller died: the refusal says recovery is still due
    dead = running(store, "lambda")
    store.update_status(dead, "Stopped", error="the controller died")
    store.set_extra(dead, "interrupted", {"noticed_by": "lease keeper"})
    with pytest.raises(cr.RequestRefused, match=f"stop: deployment {dead} was marked Stopped when its controller died; "
                       "the alias may still split traffic: run the rollwright.deploy.lambda playbook with "
                       "-e rollwright_lambda_recover=true"):
        cr.submit(store, dead, "stop")
    store.set_extra(dead, "recovery", {"done": True})
    with pytest.raises(cr.RequestRefused, match="already ended as Stopped; nothing to promote"):
        cr.submit(store, dead, "promote")


def test_take_folds_requests_and_hold_ends_on_resume_or_max_pause(store):
    did = running(store)
    lines = []
    cr.submit(store, did, "pause", max_pause=30)
    cr.submit(store, did, "resume")
    decision = cr.take(store, did, allowed=cr.APPLICABLE["in_place"], progress=lines.append)
    assert decision.action is None  # a resume right after the pause ends it at once
    assert [(r.action, r.state) for r in store.list_requests(did)] == [("pause", "Done"), ("resume", "Done")]
    assert any("seen" in line for line in lines)
    cr.submit(store, did, "pause", max_pause=1)
    decision = cr.take(store, did, allowed=cr.APPLICABLE["in_place"])
    assert decision.action == "pause"
    assert cr.status(store, store.get(did))["paused"] is True
    beats = []
    ticks = iter(range(100))
    decision = cr.hold(store, did, decision, allowed=cr.APPLICABLE["in_place"], heartbeat=lambda: beats.append(1),
                       clock=lambda: float(next(ticks)) * 0.4, sleep=lambda s: None)
    assert decision.action == "stop" and "maximum pause of 1 s" in decision.reason
    assert len(beats) >= 2  # the lock is renewed while the pause holds
    assert store.list_requests(did)[-1].state == "Done"


def _acknowledge_all(spec, did, barrier, queue):
    store = spec.open()
    barrier.wait()
    won = []
    for request in store.list_requests(did):
        try:
            store.update_request(did, request.request_id, "Acknowledged", ("Pending",), handled_by=str(os.getpid()))
            won.append(request.request_id)
        except RequestConflict:
            pass
    queue.put(won)


def _request_many(spec, did, barrier, index):
    store = spec.open()
    barrier.wait()
    for _n in range(5):
        store.add_request(did, ControlRequest(action="pause", options={"max_pause": 10.0}, requested_by=f"r{index}"))


def _controller_writes(spec, did, barrier):
    store = spec.open()
    barrier.wait()
    for n in range(10):
        store.event(did, "h1", f"Event{n}", "Succeeded")
        store.set_extra(did, f"k{n}", n)
        store.update_host(did, "h1", status="InProgress")
        store.update_status(did, "InProgress")


def test_requesters_racing_the_controller_lose_nothing(spec, store):
    """Three requesters add 15 requests while the controller writes events, extra keys, host and status;
    every write of both sides is there; then two processes race to acknowledge them: each is won once."""
    did = running(store)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_request_many, args=(spec, did, barrier, i)) for i in range(3)]
    procs.append(ctx.Process(target=_controller_writes, args=(spec, did, barrier)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rec = store.get(did)
    assert {e.name for e in rec.host("h1").events} == {f"Event{n}" for n in range(10)}
    assert dict(rec.extra) == {f"k{n}": n for n in range(10)}
    requests = store.list_requests(did)
    assert len(requests) == 15 and len({r.request_id for r in requests}) == 15
    assert sorted(r.requested_by for r in requests) == sorted(f"r{i}" for i in range(3) for _n in range(5))
    assert {r.state for r in requests} == {"Pending"} and rec.status == "InProgress"
    # two processes (say the controller and recover) race to acknowledge the same requests: each is won once
    barrier2 = ctx.Barrier(2)
    queue = ctx.Queue()
    racers = [ctx.Process(target=_acknowledge_all, args=(spec, did, barrier2, queue)) for _n in range(2)]
    for p in racers:
        p.start()
    won = [queue.get(timeout=120) for _p in racers]
    for p in racers:
        p.join(60)
    assert sorted(won[0] + won[1]) == sorted(r.request_id for r in requests)
    assert not set(won[0]) & set(won[1])
    assert {r.state for r in store.list_requests(did)} == {"Acknowledged"}
