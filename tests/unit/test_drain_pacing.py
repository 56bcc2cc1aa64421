# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A large batch's hosts leave their load balancers paced to the controller (drain_pacing), and the engine's paced
BlockTraffic and main group (InPlaceRun.paced_main) against a real SQLite record and the in-memory load balancer of
test_inplace_engine, with host calls that run in threads as the real ones do."""

from __future__ import annotations

import math
import threading
import time

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import drain_pacing as dp
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import ELBv2Membership
from tests.unit import test_inplace_engine as engine
from tests.unit.test_inplace_engine import TG, FakeLB, failing, ok, start

HOSTS6 = [{"name": f"h{i}", "instance_id": f"i-{i:017d}"} for i in range(1, 7)]
IDS = {h["name"]: h["instance_id"] for h in HOSTS6}


# ------------------------------------------------------------------------------------------------ the pace


def test_the_pace_counts_only_the_time_a_word_was_on_its_way():
    rate = dp.ReachRate()
    rate.sent(2, 10.0)
    rate.reached(10.5)
    rate.reached(11.0)  # both reached: 1 s busy
    rate.sent(8, 50.0)  # 39 s idle in between, not counted
    for i in range(1, 9):
        rate.reached(50.0 + 0.25 * i)  # 2 s busy
    assert rate.count == 10 and rate.busy == pytest.approx(3.0)
    assert rate.per_second() == pytest.approx(10 / 3.0)
    few = dp.ReachRate()
    few.sent(3, 0.0)
    for t in (0.01, 0.02, 0.03):
        few.reached(t)
    assert few.per_second() is None  # the first few reach together: not a pace yet


@pytest.mark.parametrize("carried", ["12", True, float("nan"), float("inf"), -3.0, 0, None, {"pace": 9}])
def test_a_pace_read_back_from_the_state_is_used_only_when_it_is_a_positive_number(carried):
    assert dp.start_pace(carried, 2) == dp.START_PACE_PER_CORE * 2
    assert dp.start_pace(carried, None) == dp.START_PACE_PER_CORE
    below = dp.pace_ceiling(2) * 0.9  # a measured pace under the ceiling is kept as it is
    assert dp.start_pace(below, 2) == below
    assert dp.start_pace(30.0, 2) == dp.pace_ceiling(2) == dp.START_PACE_PER_CORE * 2  # never above the ceiling


def test_a_batch_leaves_at_once_when_the_drain_or_the_pace_is_not_known():
    hosts = [f"h{i}" for i in range(10)]
    for drain, pace in ((None, 8.0), (0.0, 8.0), (2.0, None)):
        pacer = dp.DrainPacer(hosts, drain, dp.ReachRate(), pace)
        assert not pacer.paced() and pacer.take(0.0) == hosts and pacer.waiting == []


def test_hosts_leave_a_few_at_a_time_and_no_more_out_without_their_word_than_one_drain_of_words():
    hosts = [f"h{i}" for i in range(40)]
    pacer = dp.DrainPacer(hosts, 2.0, dp.ReachRate(), 8.0)
    leaving_pace = 8.0 * dp.PACE_MARGIN
    depth = math.ceil(leaving_pace * 2.0)
    per_take = math.ceil(leaving_pace * dp.DEREGISTER_EVERY)
    assert pacer.paced() and pacer.depth() == depth
    first = pacer.take(0.0)
    assert first == hosts[:per_take]
    assert pacer.take(0.1) == [] and pacer.next_take(0.1) == pytest.approx(dp.DEREGISTER_EVERY - 0.1)
    now, taken = 0.0, list(first)
    while True:
        now += dp.DEREGISTER_EVERY
        more = pacer.take(now)
        if not more:
            break
        assert len(more) <= per_take
        taken += more
    assert pacer.take(now + 10) == pacer.take(now + 20) == []  # depth reached: nothing until a word reaches a host
    assert len(pacer.out) == depth and pacer.next_take(now + 10) is None and taken == hosts[:depth]
    pacer.sent(taken, now + 2.0)
    for i, host in enumerate(taken[:3]):
        pacer.reached(host, now + 2.0 + 0.1 * (i + 1))
    room = pacer.depth() - len(pacer.out)  # one host leaves per host reached (the depth itself moved with the pace)
    assert 3 <= room <= per_take and pacer.take(now + 30) == hosts[len(taken):len(taken) + room]
    pacer.done(taken[3:])  # their calls ended (or they failed to drain): they no longer wait
    assert len(pacer.take(now + 31)) == per_take


def test_the_batchs_own_words_correct_the_start_pace():
    hosts = [f"h{i}" for i in range(50)]
    pacer = dp.DrainPacer(hosts, 2.0, dp.ReachRate(), 8.0)
    pacer.sent(hosts[:30], 0.0)
    for i in range(30):
        pacer.reached(hosts[i], 0.5 * (i + 1))  # 2 hosts/s, much slower than the start pace
    assert pacer.pace() == pytest.approx((30 + dp.START_WEIGHT) / (15.0 + dp.START_WEIGHT / 8.0))
    assert pacer.depth() == math.ceil(pacer.pace() * dp.PACE_MARGIN * 2.0) < math.ceil(8.0 * dp.PACE_MARGIN * 2.0)


def test_words_that_get_ready_faster_never_take_the_pace_above_its_ceiling():
    hosts = [f"h{i}" for i in range(50)]
    pacer = dp.DrainPacer(hosts, 2.0, dp.ReachRate(), 8.0, ceiling=8.0)
    pacer.sent(hosts[:20], 0.0)
    for i in range(20):  # 20 words ready in a second: 20 hosts/s measured
        pacer.reached(hosts[i], (i + 1) / 20)
    assert pacer.rate.per_second() == pytest.approx(20.0)
    assert pacer.pace() == 8.0 and pacer.depth() == math.ceil(8.0 * dp.PACE_MARGIN * 2.0)
    slower = dp.DrainPacer(hosts, 2.0, dp.ReachRate(), 8.0, ceiling=8.0)
    slower.sent(hosts[:20], 0.0)
    for i in range(20):  # 20 words in 10 s: the pace goes below the ceiling
        slower.reached(hosts[i], (i + 1) / 2)
    assert slower.pace() < 8.0


# ------------------------------------------------------------------------------------------------ the engine


@pytest.fixture
def store(tmp_path):
    return open_store("sqlite", {"path": str(tmp_path / "records.sqlite3")})


class TimedLB(FakeLB):
    """FakeLB whose drain takes ``drain`` seconds; it notes when each target was deregistered and drained, and may
    fail the deregistration of a chosen call. Its calls come from several threads, as the real adapters' do."""

    def __init__(self, store, drain: float, fail_block_call: int = 0):
        super().__init__(store, [ELBv2Membership(TG, h["instance_id"], 80) for h in HOSTS6])
        self.drain = drain
        self.fail_block_call = fail_block_call
        self.left: dict = {}
        self.drained_at: dict = {}
        self.lock = threading.Lock()

    def block(self, memberships):
        with self.lock:
            if self.fail_block_call and len([c for c in self.calls if c[0] == "block"]) + 1 == self.fail_block_call:
                raise RuntimeError("DeregisterTargets: throttled")
            super().block(memberships)
            for m in memberships:
                self.left[m.target_id] = time.monotonic()

    def allow(self, memberships):
        with self.lock:
            super().allow(memberships)

    def wait_drained(self, memberships, timeout=None, progress=None):
        time.sleep(self.drain)
        for m in memberships:
            self.drained_at[m.target_id] = time.monotonic()
        return super().wait_drained(memberships, timeout, progress)


def _paced_batch(store, monkeypatch, drain=0.4, fail_block_call=0, main_fails=None):
    """Six hosts in one batch (AllAtOnce), leaving at 5 hosts/s (a start pace of 6.25 with the margin): two out
    without their word at a time, for a drain of 0.4 s."""
    monkeypatch.setattr(engine, "IDS", IDS)  # the hosts FakeLB finds in the record
    lb = TimedLB(store, drain, fail_block_call)
    run, state = start(store, lb, config="CodeDeployDefault.AllAtOnce", hosts=HOSTS6)
    state = run.plan(state, {})
    assert sorted(state["active"]) == sorted(IDS)
    state = run.begin_block(state, {h: ok(state["host_calls"]["pre_block"]) for h in state["active"]})
    calls = state["host_calls"]
    started: dict = {}
    ready: dict = {}

    def run_main(batch, on_results, hold):
        """As HostCaller.call with a hold: each host's call in a thread of its own, set up (0.05 s), held until it
        may go, then sent (or not: nothing reaches a host its hold refuses)."""
        out = {}

        def one(host):
            time.sleep(0.05)
            ready[host] = time.monotonic()
            if not hold(host):
                out[host] = {"failed": True, "msg": f"{host} was not called"}
                return
            started[host] = time.monotonic()
            time.sleep(0.05)
            out[host] = failing(calls["main"], main_fails[host]) if host in (main_fails or {}) else ok(calls["main"])
            on_results({host: out[host]})

        threads = [threading.Thread(target=one, args=(host,)) for host in batch]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return out

    pacer = dp.DrainPacer(list(state["active"]), drain, dp.ReachRate(), 6.25)
    return lb, run, state, pacer, run_main, started, ready


def test_a_paced_batch_drains_each_group_before_its_word_and_puts_each_host_back_as_it_passes(store, monkeypatch):
    lb, run, state, pacer, run_main, started, ready = _paced_batch(store, monkeypatch, main_fails={"h5": "ApplicationStart"})
    results = run.paced_main(state, pacer, run_main, drain_timeout=None)
    blocks = [targets for kind, targets in lb.calls if kind == "block"]
    assert len(blocks) >= 2 and all(len(b) < 6 for b in blocks), lb.calls  # a few at a time, not the batch at once
    assert sorted(t for b in blocks for t in b) == sorted(IDS[f"h{i}"] for i in range(1, 7))
    for host, at in started.items():  # no host was told to go on before its own drain ended
        assert lb.drained_at[IDS[host]] <= at, host
        # its word was set up while it drained, and went as soon as the drain was known
        assert lb.left[IDS[host]] < ready[host] < lb.drained_at[IDS[host]], host
        assert at - lb.drained_at[IDS[host]] < 0.3, host
    assert len({round(lb.left[IDS[h]], 2) for h in started}) >= 2
    assert sorted(results) == [f"h{i}" for i in range(1, 7)]
    put_back = sorted(t for kind, targets in lb.calls if kind == "allow" for t in targets)
    assert put_back == sorted(IDS[f"h{i}"] for i in (1, 2, 3, 4, 6))  # the failed host stays out
    state = run.allow(state, results, healthy_timeout=None)
    assert sorted(state["active"]) == ["h1", "h2", "h3", "h4", "h6"] and "leaving" not in state
    record = {h.name: h for h in store.get(state["deployment_id"]).hosts}
    for name, host in record.items():
        events = {e.name: e for e in host.events}
        assert events["BlockTraffic"].status == "Succeeded" and events["BlockTraffic"].end_time, name
        assert host.lb_restored is (name != "h5")
    assert record["h5"].status == "Failed"


def test_an_error_stops_further_hosts_leaving_and_the_hosts_already_going_finish_first(store, monkeypatch):
    lb, run, state, pacer, run_main, started, ready = _paced_batch(store, monkeypatch, fail_block_call=2)
    with pytest.raises(RuntimeError, match="throttled"):
        run.paced_main(state, pacer, run_main, drain_timeout=None)
    (first,) = [targets for kind, targets in lb.calls if kind == "block"]
    assert first == [IDS["h1"], IDS["h2"]]
    # the hosts that had left ran their main group and went back; the others never left and were never told
    assert sorted(IDS[h] for h in started) == first
    assert sorted(t for kind, targets in lb.calls if kind == "allow" for t in targets) == first
    record = {h.name: h for h in store.get(state["deployment_id"]).hosts}
    # recorded before each deregistration: the two that left, and the next ones, whose deregistration failed
    # (recovery registers them again, which changes nothing); the hosts after them were never touched
    recorded = [n for n in sorted(record) if record[n].lb_membership]
    assert 2 < len(recorded) < 6 and recorded == sorted(record)[:len(recorded)], recorded
    assert all(record[n].lb_restored is False for n in recorded)
    assert {IDS[n] for n in sorted(record)[2:]} <= {m.target_id for m in lb.registered}


def test_a_host_still_draining_fails_and_is_never_told_to_go_on(store, monkeypatch):
    lb, run, state, pacer, run_main, started, ready = _paced_batch(store, monkeypatch)
    lb.draining[IDS["h2"]] = "draining (2 connections)"
    results = run.paced_main(state, pacer, run_main, drain_timeout=None)
    assert "h2" not in started and "h2" not in results and "h2" not in state["active"]
    assert sorted(started) == ["h1", "h3", "h4", "h5", "h6"]
    record = {h.name: h for h in store.get(state["deployment_id"]).hosts}
    events = {e.name: e for e in record["h2"].events}
    assert events["BlockTraffic"].status == "Failed" and "2 connections" in events["BlockTraffic"].message
