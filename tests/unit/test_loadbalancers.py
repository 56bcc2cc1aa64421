# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the load-balancer adapters: backoff, grouping, config validation, waiting.

The AWS API is replaced by a small in-memory fake *client* (not our code) driven by a fake clock,
so the waits run in no real time.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.aws import client as aws_session
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers import (
    Backoff,
    ClassicELBMembership,
    ConfigError,
    ELBv2Membership,
    HAProxyMembership,
    LoadBalancerError,
    Membership,
    NotFoundError,
    WaitResult,
    WaitTimeoutError,
    adapters_from_config,
    group_memberships,
    load_balancer_from_config,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import Outcome, worst_health
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.classic_elb import classic_state
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.elbv2 import CLOSE_POLL

ARN_A = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg-a/0123456789abcdef"
ARN_B = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg-b/fedcba9876543210"


# ---------------------------------------------------------------------------------------------
# Backoff


@pytest.mark.parametrize("seed", range(20))
def test_backoff_schedule_never_passes_deadline_and_ends_on_it(seed):
    b = Backoff(initial=0.5, cap=10.0, jitter=0.3, rng=random.Random(seed))
    start, deadline = 100.0, 137.3
    times = list(b.schedule(start, deadline))
    assert times, "at least one poll"
    assert all(start < t <= deadline for t in times)
    assert times == sorted(times)
    assert times[-1] == deadline  # the last poll is exactly at the deadline, not past it
    gaps = [b - a for a, b in zip([start] + times, times)]
    assert max(gaps) <= 10.0 + 1e-9


def test_backoff_base_delays_grow_to_the_cap():
    b = Backoff(initial=0.5, cap=12.0, factor=2.0, jitter=0.0)
    it = b.base_delays()
    first = [next(it) for _i in range(8)]
    assert first == [0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 12.0, 12.0]


@pytest.mark.parametrize("seed", range(10))
def test_backoff_jittered_delays_stay_in_band_and_grow_until_cap(seed):
    b = Backoff(initial=0.75, cap=12.0, factor=2.0, jitter=0.25, rng=random.Random(seed))
    delays = b.delays()
    bases = b.base_delays()
    got = [(next(delays), next(bases)) for _i in range(10)]
    for d, base in got:
        assert base * 0.75 - 1e-9 <= d <= base + 1e-9
    # below the cap, each delay is at least the previous one (factor 2, jitter <= 0.5)
    below = [d for d, base in got if base < 12.0]
    assert below == sorted(below)


def test_backoff_zero_timeout_means_no_sleep():
    assert list(Backoff().schedule(5.0, 5.0)) == []


# ---------------------------------------------------------------------------------------------
# Membership JSON and grouping


def test_membership_roundtrip_every_kind():
    items = [
        {"kind": "elbv2", "target_group_arn": ARN_A, "target_id": "i-1", "port": 80, "availability_zone": None},
        {"kind": "classic_elb", "load_balancer_name": "web", "instance_id": "i-1"},
        {"kind": "haproxy", "instance": "lb1", "backend": "be", "server": "s1", "state": "ready", "weight": 100},
    ]
    for item in items:
        m = Membership.from_dict(item)
        assert m.to_dict() == item
        assert Membership.from_dict(m.to_dict()) == m
    assert isinstance(Membership.from_dict(items[2]), HAProxyMembership)


def test_membership_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"memberships\[3\]\.kind: expected one of"):
        Membership.from_dict({"kind": "nlb"}, "memberships[3]")
    with pytest.raises(ConfigError, match=r"m\.port: expected an integer, got 'eighty'"):
        Membership.from_dict({"kind": "elbv2", "target_group_arn": ARN_A, "target_id": "i-1", "port": "eighty"}, "m")
    with pytest.raises(ConfigError, match=r"m\.instance_id: expected a non-empty string"):
        Membership.from_dict({"kind": "classic_elb", "load_balancer_name": "x"}, "m")


def test_grouping_one_bucket_per_target_group_without_duplicates():
    ms = [
        ELBv2Membership(ARN_A, "i-1", 80),
        ELBv2Membership(ARN_B, "i-1", 8080),
        ELBv2Membership(ARN_A, "i-2", 80),
        ELBv2Membership(ARN_A, "i-1", 81),  # same host, second port: its own membership
        ELBv2Membership(ARN_A, "i-2", 80),  # duplicate
        ClassicELBMembership("web", "i-2"),
    ]
    groups = group_memberships(ms)
    assert list(groups) == [ARN_A, ARN_B, "web"]
    assert [m.target() for m in groups[ARN_A]] == [
        {"Id": "i-1", "Port": 80},
        {"Id": "i-2", "Port": 80},
        {"Id": "i-1", "Port": 81},
    ]


# ---------------------------------------------------------------------------------------------
# A fake ELBv2 client with draining / initial timing on a fake clock


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self):
        return self.t

    def sleep(self, seconds):
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += seconds


class FakeClientError(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.response = {"Error": {"Code": code, "Message": "One or more target groups not found"}}


class FakeELBv2:
    """Targets per group: {(id, port): (state, since)}; draining lasts `delay`, initial `warmup`."""

    def __init__(self, clock, groups, delay=4, warmup=3, port=80, sick=(), drain_for=None):
        self.clock = clock
        self.drain_for = drain_for  # how long draining really lasts (default: the reported delay)
        self.groups = {arn: {} for arn in groups}
        self.delay, self.warmup, self.port, self.sick = delay, warmup, port, set(sick)
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, dict]] = []
        self.asked: list = []  # each DescribeTargetHealth's Targets (None: the whole group)
        self.gone: set[str] = set()  # instance ids AWS no longer knows (DescribeTargetHealth refuses them by name)

    def _tg(self, arn):
        if arn not in self.groups:
            raise FakeClientError("TargetGroupNotFound")
        return self.groups[arn]

    def describe_target_groups(self, TargetGroupArns=(), Names=()):
        self.calls["describe_target_groups"] += 1
        for arn in TargetGroupArns:
            self._tg(arn)
        return {
            "TargetGroups": [
                {"TargetGroupArn": a, "TargetGroupName": a.split("/")[1], "Port": self.port, "TargetType": "instance",
                 "HealthCheckIntervalSeconds": 1, "HealthyThresholdCount": 2}
                for a in TargetGroupArns
            ]
        }

    def describe_target_group_attributes(self, TargetGroupArn):
        self.calls["describe_target_group_attributes"] += 1
        return {"Attributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": str(self.delay)}]}

    def register_targets(self, TargetGroupArn, Targets):
        self.calls["register_targets"] += 1
        self.log.append(("register", {"arn": TargetGroupArn, "targets": Targets}))
        for t in Targets:
            self._tg(TargetGroupArn)[(t["Id"], t.get("Port", self.port))] = ("initial", self.clock.t)

    def deregister_targets(self, TargetGroupArn, Targets):
        self.calls["deregister_targets"] += 1
        self.log.append(("deregister", {"arn": TargetGroupArn, "targets": Targets}))
        for t in Targets:
            key = (t["Id"], t.get("Port", self.port))
            if key in self._tg(TargetGroupArn):
                self._tg(TargetGroupArn)[key] = ("draining", self.clock.t)

    def describe_target_health(self, TargetGroupArn, Targets=None):
        """As AWS: every registered or draining target, or only ``Targets`` (one not there is ``unused``; an id in
        ``gone`` is refused with InvalidTarget, as a terminated instance is)."""
        self.calls["describe_target_health"] += 1
        self.asked.append(Targets)
        if Targets and any(t["Id"] in self.gone for t in Targets):
            raise FakeClientError("InvalidTarget")
        out = []
        for (tid, port), (state, since) in list(self._tg(TargetGroupArn).items()):
            age = self.clock.t - since
            if state == "draining" and age >= (self.delay if self.drain_for is None else self.drain_for):
                del self.groups[TargetGroupArn][(tid, port)]
                continue
            if state == "initial" and age >= self.warmup:
                state = "unhealthy" if tid in self.sick else "healthy"
            out.append({"Target": {"Id": tid, "Port": port}, "TargetHealth": {"State": state}})
        if Targets:
            known = {(d["Target"]["Id"], d["Target"]["Port"]): d for d in out}
            out = [known.get((t["Id"], t.get("Port", self.port))) or {
                "Target": {"Id": t["Id"], "Port": t.get("Port", self.port)},
                "TargetHealth": {"State": "unused", "Reason": "Target.NotRegistered"}} for t in Targets]
        return {"TargetHealthDescriptions": out}


class Factory:
    def __init__(self, **clients):
        self.clients = clients

    def client(self, name):
        return self.clients[name]


def _registered(fake, arn, ids, port=80):
    for i in ids:
        fake.groups[arn][(i, port)] = ("healthy", -100.0)


def test_block_is_one_call_per_target_group_and_wait_drained_honours_the_delay():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A, ARN_B], delay=4)
    _registered(fake, ARN_A, ["i-1", "i-2", "i-3"])
    _registered(fake, ARN_B, ["i-1"], port=80)
    [lb] = adapters_from_config({"target_group_arns": [ARN_A, ARN_B]}, Factory(elbv2=fake), clock=clock)
    snap = lb.snapshot(["i-1", "i-2"])
    assert {h: len(ms) for h, ms in snap.items()} == {"i-1": 2, "i-2": 1}
    batch = [m for ms in snap.values() for m in ms]
    lb.block(batch)
    assert fake.calls["deregister_targets"] == 2  # one per target group, not per host
    assert sorted(t["Id"] for op, c in fake.log if c["arn"] == ARN_A for t in c["targets"]) == ["i-1", "i-2"]

    messages = []
    polls_before = fake.calls["describe_target_health"]
    result = lb.wait_drained(batch, timeout=None, progress=messages.append)
    assert result.ok, result.message()
    assert 4.0 <= clock.t <= 4.0 + 10.0  # waited the delay, not much longer
    assert fake.calls["describe_target_group_attributes"] == 2  # once per group
    # each poll is one DescribeTargetHealth per group
    assert (fake.calls["describe_target_health"] - polls_before) == 2 * result.polls
    assert messages and "drain" in messages[0]
    assert set(result.outcomes) == {"i-1", "i-2"}
    assert lb.api_calls["DeregisterTargets"] == 2


def test_a_wait_asks_only_about_the_targets_it_waits_for():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], delay=2, warmup=2)
    _registered(fake, ARN_A, [f"i-{n}" for n in range(50)])
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    batch = [m for ms in lb.snapshot(["i-7"]).values() for m in ms]
    lb.block(batch)
    fake.asked.clear()
    assert lb.wait_drained(batch, timeout=30).ok
    lb.allow(batch)
    assert lb.wait_healthy(batch, timeout=30).ok
    asked = fake.asked
    assert len(asked) >= 2  # both waits polled, each naming the batch's one target, never the group's fifty
    assert all(targets == [{"Id": "i-7", "Port": 80}] for targets in asked), asked


def test_a_wait_on_a_target_aws_no_longer_knows_falls_back_to_the_whole_group():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], delay=2)
    _registered(fake, ARN_A, ["i-1", "i-2"])
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    batch = [m for ms in lb.snapshot(["i-1"]).values() for m in ms]
    lb.block(batch)
    fake.gone.add("i-1")  # terminated while it drained: named, it is refused with InvalidTarget
    result = lb.wait_drained(batch, timeout=30)
    assert result.ok and result.outcomes["i-1"].status == "drained"  # gone from the group's answer: drained
    assert [{"Id": "i-1", "Port": 80}] in fake.asked and None in fake.asked


def test_wait_drained_times_out_naming_the_targets_still_draining():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], delay=60)
    _registered(fake, ARN_A, ["i-1", "i-2"])
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    batch = [m for ms in lb.snapshot(["i-1"]).values() for m in ms]
    lb.block(batch)
    result = lb.wait_drained(batch, timeout=5)
    assert not result.ok
    assert clock.t == pytest.approx(5.0)  # never sleeps past the deadline
    assert result.outcomes["i-1"].status == "timeout"
    assert result.outcomes["i-1"].state == "draining"
    with pytest.raises(WaitTimeoutError, match=r"i-1: timeout, last state draining"):
        result.raise_for_failure()


def test_default_drain_timeout_is_delay_plus_margin():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], delay=100, drain_for=10_000)  # drains far longer than it says
    _registered(fake, ARN_A, ["i-1"])
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    batch = lb.snapshot(["i-1"])["i-1"]
    lb.block(batch)
    result = lb.wait_drained(batch)
    assert not result.ok
    assert clock.t == pytest.approx(115.0)


def test_allow_registers_exact_ports_and_reregisters_draining_targets():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], delay=300, warmup=3)
    fake.groups[ARN_A][("i-1", 8081)] = ("healthy", -100.0)
    fake.groups[ARN_A][("i-1", 8082)] = ("healthy", -100.0)
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    snap = lb.snapshot(["i-1"])["i-1"]
    assert sorted(m.port for m in snap) == [8081, 8082]
    lb.block(snap)
    clock.t += 1  # still draining (delay 300)
    assert {pair[0] for pair in lb.states(snap).values()} == {"draining"}
    lb.allow(snap)
    assert fake.calls["register_targets"] == 1
    assert fake.log[-1][1]["targets"] == [{"Id": "i-1", "Port": 8081}, {"Id": "i-1", "Port": 8082}]
    result = lb.wait_healthy(snap, timeout=30)
    assert result.ok and result.outcomes["i-1"].status == "healthy"
    assert clock.t >= 4.0  # waited through `initial`


def test_wait_healthy_reports_unhealthy_and_timeout_per_instance():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], warmup=2, sick={"i-2"})
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    ms = lb.desired(["i-1", "i-2"])
    lb.allow(ms)
    result = lb.wait_healthy(ms, timeout=10)
    assert not result.ok
    assert result.outcomes["i-1"].status == "healthy"
    assert result.outcomes["i-2"].status == "unhealthy"
    assert result.outcomes["i-2"].memberships[0]["target_id"] == "i-2"
    assert result.pending == ["i-2"] and result.states["i-2"] == "unhealthy"
    assert clock.t == pytest.approx(10.0)

    fake2 = FakeELBv2(FakeClock(), [ARN_A], warmup=1000)
    [lb2] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake2), clock=fake2.clock)
    ms2 = lb2.desired(["i-9"])
    lb2.allow(ms2)
    r2 = lb2.wait_healthy(ms2, timeout=3)
    assert r2.outcomes["i-9"].status == "timeout" and r2.outcomes["i-9"].state == "initial"


def _registration_wait(lb, fake, clock, host):
    """Register ``host`` and wait for it; (seconds waited, DescribeTargetHealth calls made)."""
    ms = lb.desired([host])
    lb.allow(ms)
    start, calls = clock.t, fake.calls["describe_target_health"]
    result = lb.wait_healthy(ms, timeout=30)
    assert result.ok, result.message()
    return clock.t - start, fake.calls["describe_target_health"] - calls


def test_wait_healthy_learns_the_registration_time_and_later_waits_end_right_after_it():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], warmup=2.0)
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    lb.backoff = Backoff(jitter=0.0)
    first, calls = _registration_wait(lb, fake, clock, "i-1")
    # nothing learnt: polls at 0, 0.25, 0.575, 0.9975, 1.547, 2.261 (closer than the usual 0, 0.5, 1.25, 2.375)
    assert (first, calls) == (pytest.approx(2.260775), 6)
    waits = [_registration_wait(lb, fake, clock, f"i-{n}") for n in range(2, 6)]
    # the second wait sleeps until the last poll that still saw `initial` (1.25 s), then polls closely
    for waited, calls in waits[1:]:
        assert 2.0 <= waited <= 2.0 + 2 * CLOSE_POLL
        assert calls <= 4
    assert waits[-1][1] <= 2  # settled: one call just before the registration ends, one just after
    # and the learning travels to a later step in another process, through the cache
    fresh = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)[0]
    fresh.backoff = Backoff(jitter=0.0)
    fresh.import_cache(json.loads(json.dumps(lb.export_cache())))
    waited, calls = _registration_wait(fresh, fake, clock, "i-9")
    assert 2.0 <= waited <= 2.0 + 2 * CLOSE_POLL and calls <= 2


def _registered_after_learning():
    """An adapter that learnt the registration time (healthy about 2 s after it), and host i-7 registered just now:
    (clock, fake ELBv2, adapter, i-7's memberships, the clock's time of the registration)."""
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], warmup=2.0)
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    lb.backoff = Backoff(jitter=0.0)
    for n in range(1, 4):
        _registration_wait(lb, fake, clock, f"i-{n}")
    ms = lb.desired(["i-7"])
    registered = clock.t
    lb.allow(ms)
    return clock, fake, lb, ms, registered


def test_a_wait_begun_after_the_registration_counts_the_learnt_time_from_the_registration():
    """A batch's hosts go back one by one while the slower ones still run their hooks; the wait for their health
    comes later. What it learnt, and its quiet time, count from the last RegisterTargets, not from the wait."""
    clock, fake, lb, ms, registered = _registered_after_learning()
    clock.sleep(1.5)  # other hosts of the batch still in their hooks
    calls = fake.calls["describe_target_health"]
    assert lb.wait_healthy(ms, timeout=30).ok
    assert 2.0 <= clock.t - registered <= 2.0 + 2 * CLOSE_POLL  # not 1.5 s + 2 s
    assert fake.calls["describe_target_health"] - calls <= 2
    # and a host registered long before the wait is found healthy by its first look
    ms = lb.desired(["i-8"])
    lb.allow(ms)
    clock.sleep(5.0)
    before, calls = clock.t, fake.calls["describe_target_health"]
    said: list[str] = []
    assert lb.wait_healthy(ms, timeout=30, progress=said.append).ok
    assert clock.t == before and fake.calls["describe_target_health"] - calls == 1
    # and says that it used what it learnt, due already (a batch handed over to a later step: no quiet time left)
    assert said == ["elbv2: waiting for 1 target(s) to become healthy (registration as long as before): due already, "
                    "looking now; 30s left"], said


def test_a_wait_in_a_later_step_counts_from_the_registration_an_earlier_step_made():
    """A batch handed over: one step registers its hosts again, the next batch's step (another process) waits for
    their health. The registration's time travels in the step's cache, so the wait looks first when it is due, not
    the learnt time after the later step began; a reading that is not a finite number is ignored."""
    clock, fake, lb, ms, registered = _registered_after_learning()
    cache = json.loads(json.dumps(lb.export_cache()))
    clock.sleep(0.6)  # the step ends, Ansible starts the next task
    later = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)[0]
    later.backoff = Backoff(jitter=0.0)
    later.import_cache(cache)
    calls = fake.calls["describe_target_health"]
    assert later.wait_healthy(ms, timeout=30).ok
    assert 2.0 <= clock.t - registered <= 2.0 + 2 * CLOSE_POLL  # not 0.6 s + 2 s
    assert fake.calls["describe_target_health"] - calls <= 2
    for bad in ("soon", float("nan"), float("inf"), True, None, [1.0]):
        fresh = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)[0]
        fresh.import_cache(dict(cache, registered_at={ARN_A: bad}))
        assert fresh.export_cache()["registered_at"] == {}, bad
    fresh.import_cache(dict(cache, registered_at="nonsense"))
    assert fresh.export_cache()["registered_at"] == {}


def test_a_group_s_next_deployment_starts_with_what_the_last_one_learnt_checked_as_it_is_read():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], warmup=2.0)
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    lb.backoff = Backoff(jitter=0.0)
    assert lb.lasting_cache() == {}
    for n in range(1, 6):
        _registration_wait(lb, fake, clock, f"i-{n}")  # settled, as in the test above
    lasting = json.loads(json.dumps(lb.lasting_cache()))
    assert set(lasting) == {"registration"} and set(lasting["registration"]) == {ARN_A}
    # the next deployment: a new adapter, its groups described as usual, its first wait learnt already
    nxt = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)[0]
    nxt.backoff = Backoff(jitter=0.0)
    nxt.import_cache(lasting)
    described = fake.calls["describe_target_groups"]
    waited, calls = _registration_wait(nxt, fake, clock, "i-9")
    assert fake.calls["describe_target_groups"] == described + 1  # validated as a new deployment does
    assert 2.0 <= waited <= 2.0 + 2 * CLOSE_POLL and calls <= 2
    # a record that says something unusable teaches nothing
    for bad in ({"registering_until": float("inf"), "healthy_by": 2.0}, {"registering_until": -1, "healthy_by": 2.0},
                {"registering_until": "soon", "healthy_by": 2.0}, {"healthy_by": 2.0}, "nonsense"):
        fresh = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)[0]
        fresh.backoff = Backoff(jitter=0.0)
        fresh.import_cache({"registration": {ARN_A: bad}})
        assert fresh.lasting_cache() == {}, bad
        assert _registration_wait(fresh, fake, clock, "i-5") == (pytest.approx(2.260775), 6)
    composite = load_balancer_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    for bad in ("x", ["elbv2"], {"elbv2": "x"}, {"elbv2": {"registration": ["x"]}}):
        composite.import_cache(bad)
        assert composite.lasting_cache() == {}, bad


def test_a_learnt_registration_time_never_makes_a_faster_registration_wait_past_it():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A], warmup=5.0)
    [lb] = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    lb.backoff = Backoff(jitter=0.0)
    _registration_wait(lb, fake, clock, "i-1")
    _registration_wait(lb, fake, clock, "i-2")
    fake.warmup = 1.0  # the load balancer got faster: the wait is longer than needed, but never stuck
    waited, _calls = _registration_wait(lb, fake, clock, "i-3")
    assert waited <= 5.0
    fake.warmup = 8.0  # or slower: the wait goes on polling until it is healthy
    waited, _calls = _registration_wait(lb, fake, clock, "i-4")
    assert 8.0 <= waited <= 12.0
    # a cache that says nothing usable is ignored: the wait polls from the start, as a first one does
    fresh = adapters_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)[0]
    fresh.backoff = Backoff(jitter=0.0)
    fresh.import_cache({"registration": {ARN_A: {"registering_until": "soon", "healthy_by": 1}}})
    fake.warmup = 2.0
    assert _registration_wait(fresh, fake, clock, "i-5") == (pytest.approx(2.260775), 6)


def test_missing_target_group_fails_before_any_change_and_is_named():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A])
    _registered(fake, ARN_A, ["i-1"])
    lb = load_balancer_from_config({"target_group_arns": [ARN_A, ARN_B]}, Factory(elbv2=fake), clock=clock)
    with pytest.raises(NotFoundError, match="tg-b") as err:
        lb.snapshot(["i-1"])
    assert err.value.missing == [ARN_B]
    # a recorded membership in a vanished group: block refuses before deregistering anything
    lb2 = load_balancer_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake), clock=clock)
    with pytest.raises(NotFoundError, match="tg-b"):
        lb2.block([ELBv2Membership(ARN_A, "i-1", 80), ELBv2Membership(ARN_B, "i-1", 80)])
    assert fake.calls["deregister_targets"] == 0


def test_health_is_worst_state_across_groups():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A, ARN_B], warmup=1000)
    _registered(fake, ARN_A, ["i-1", "i-2"])
    fake.groups[ARN_B][("i-1", 80)] = ("initial", 0.0)
    [lb] = adapters_from_config({"target_group_arns": [ARN_A, ARN_B]}, Factory(elbv2=fake), clock=clock)
    assert lb.health(["i-1", "i-2", "i-3"]) == {"i-1": "initial", "i-2": "healthy", "i-3": "unused"}
    assert worst_health(["healthy", "unhealthy", "draining"]) == "unhealthy"


# ---------------------------------------------------------------------------------------------
# Config validation


@pytest.mark.parametrize(
    "config, message",
    [
        ({"target_group_arns": ["x"]}, r"load_balancer\.target_group_arns\[0\]: expected an ELBv2 target group ARN, got 'x'"),
        ({"target_group_arns": [ARN_A, "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/x/1"]},
         r"load_balancer\.target_group_arns\[1\]: expected an ELBv2 target group ARN"),
        ({"target_group_arns": ARN_A}, r"load_balancer\.target_group_arns: expected a list of strings"),
        ({"target_group_names": ["-bad"]}, r"load_balancer\.target_group_names\[0\]: expected a target group name"),
        ({"classic_elb_names": ["ok", 3]}, r"load_balancer\.classic_elb_names\[1\]: expected a classic ELB name"),
        ({"target_groups": [ARN_A]}, r"load_balancer\.target_groups: unknown key"),
        ("tg-a", r"load_balancer: expected a dictionary"),
    ],
)
def test_config_validation_errors_name_the_field(config, message):
    with pytest.raises(ConfigError, match=message):
        adapters_from_config(config, Factory())


def test_config_builds_one_adapter_per_kind_without_api_calls():
    fake = FakeELBv2(FakeClock(), [ARN_A])
    adapters = adapters_from_config({"target_group_arns": [ARN_A], "classic_elb_names": ["web"]}, Factory(elbv2=fake, elb=object()))
    assert [a.kind for a in adapters] == ["elbv2", "classic_elb"]
    assert sum(fake.calls.values()) == 0
    assert adapters_from_config({}, Factory()) == []


def test_composite_routes_by_kind_and_rejects_unconfigured_kinds():
    fake = FakeELBv2(FakeClock(), [ARN_A])
    lb = load_balancer_from_config({"target_group_arns": [ARN_A]}, Factory(elbv2=fake))
    with pytest.raises(LoadBalancerError, match="no load-balancer adapter of kind 'haproxy'"):
        lb.block([HAProxyMembership("lb1", "be", "s1")])
    # a recorded ELBv2 membership is restored even with no load_balancer configuration
    lb2 = load_balancer_from_config(None, Factory(elbv2=fake))
    lb2.allow([ELBv2Membership(ARN_A, "i-7", 9000)])
    assert ("i-7", 9000) in fake.groups[ARN_A]
    assert lb2.api_calls["RegisterTargets"] == 1


def test_wait_result_merge_keeps_worst_outcome():
    a = WaitResult("healthy", {"i-1": Outcome("healthy", "healthy")}, elapsed=3)
    classic = {"kind": "classic_elb", "load_balancer_name": "web", "instance_id": "i-1"}
    b = WaitResult("healthy", {"i-1": Outcome("timeout", "initial", None, [classic])}, elapsed=5)
    m = a.merge(b)
    assert not m.ok and m.outcomes["i-1"].status == "timeout" and m.elapsed == 5
    assert "classic ELB web" in m.message()


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"State": "InService", "Description": "N/A"}, "healthy"),
        ({"State": "InService", "Description": "Instance deregistration currently in progress."}, "draining"),
        ({"State": "OutOfService", "Description": "Instance registration is still in progress."}, "initial"),
        ({"State": "OutOfService", "Description": "Instance has failed at least the UnhealthyThreshold number of health checks consecutively."}, "unhealthy"),
        ({"State": "OutOfService", "Description": "Instance is not currently registered with the LoadBalancer."}, "unused"),
        ({"State": "Unknown", "Description": "A transient error occurred."}, "unknown"),
    ],
)
def test_classic_states_map_onto_common_vocabulary(entry, expected):
    assert classic_state(entry)[0] == expected


# ---------------------------------------------------------------------------------------------
# aws_session option resolution (no AWS call)


def test_aws_options_follow_amazon_aws_fallbacks():
    env = {"AWS_ACCESS_KEY": "AKIAFALLBACK000", "AWS_SECRET_KEY": "secretfallback000", "AWS_DEFAULT_REGION": "eu-west-3",
           "AWS_URL": "http://127.0.0.1:5000"}
    kw = aws_session.connection_kwargs({}, env)
    assert kw["session"] == {"aws_access_key_id": "AKIAFALLBACK000", "aws_secret_access_key": "secretfallback000",
                             "aws_session_token": None, "region_name": "eu-west-3"}
    assert kw["client"] == {"endpoint_url": "http://127.0.0.1:5000", "verify": True}
    # options beat the environment; aliases count; '' means unset (and blocks the fallback)
    kw = aws_session.connection_kwargs({"aws_access_key_id": "AKIAOPTION0000", "secret_key": "s3cr3toption", "aws_region": "us-west-2",
                                        "aws_endpoint_url": "http://127.0.0.1:6000", "session_token": ""}, dict(env, AWS_SESSION_TOKEN="tok"))
    assert kw["session"]["aws_access_key_id"] == "AKIAOPTION0000"
    assert kw["session"]["aws_session_token"] is None
    assert kw["session"]["region_name"] == "us-west-2"
    assert kw["client"]["endpoint_url"] == "http://127.0.0.1:6000"


def test_aws_options_profile_with_keys_is_an_error_and_ca_bundle_verifies():
    with pytest.raises(aws_session.AWSSessionError, match="both a profile and access tokens"):
        aws_session.connection_kwargs({"profile": "dev", "access_key": "AKIA0000000000"}, {})
    kw = aws_session.connection_kwargs({"profile": "dev", "aws_ca_bundle": "/etc/ca.pem"}, {})
    assert kw["session"] == {"profile_name": "dev"}
    assert kw["client"]["verify"] == "/etc/ca.pem"
    assert aws_session.connection_kwargs({"validate_certs": False, "aws_ca_bundle": "/etc/ca.pem"}, {})["client"]["verify"] is False
    with pytest.raises(aws_session.AWSSessionError, match="nonsense: not an AWS connection option"):
        aws_session.connection_kwargs({"nonsense": 1}, {})


def test_aws_option_spec_and_split():
    expected = {"access_key", "secret_key", "session_token", "profile", "region", "endpoint_url", "validate_certs",
                "aws_ca_bundle", "aws_config"}
    assert set(aws_session.AWS_OPTION_SPEC) >= expected
    assert aws_session.AWS_OPTION_SPEC["secret_key"]["no_log"] is True
    aws, rest = aws_session.split_aws_options({"region": "x", "aws_endpoint_url": "y", "instance_ids": []})
    assert aws == {"region": "x", "aws_endpoint_url": "y"} and rest == {"instance_ids": []}


def test_client_factory_caches_and_sets_retries_and_user_agent(monkeypatch):
    factory = aws_session.aws_client_factory({"region": "us-east-1", "access_key": "AKIATEST00000000",
                                              "secret_key": "testsecret000000", "endpoint_url": "http://127.0.0.1:1"}, {})
    c = factory.client("elbv2")
    assert factory.client("elbv2") is c
    assert c.meta.config.retries["mode"] == "standard"
    assert c.meta.config.retries["total_max_attempts"] == 8
    assert "rollwright.deploy/0.1.0" in c.meta.config.user_agent_extra
    assert c.meta.endpoint_url == "http://127.0.0.1:1"
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    with pytest.raises(aws_session.AWSSessionError, match="region"):
        aws_session.aws_client_factory({"access_key": "AKIATEST00000000", "secret_key": "x" * 12}).client("elb")


class _CountingELBv2:
    """A boto3-shaped ELBv2 client that answers from fixed data and counts calls."""

    def __init__(self):
        self.calls = []

    def describe_target_groups(self, **kwargs):
        self.calls.append("DescribeTargetGroups")
        return {"TargetGroups": [{"TargetGroupArn": kwargs["TargetGroupArns"][0], "TargetGroupName": "web", "Port": 80,
                                  "TargetType": "instance", "HealthCheckIntervalSeconds": 5, "HealthyThresholdCount": 2}]}

    def describe_target_group_attributes(self, **kwargs):
        self.calls.append("DescribeTargetGroupAttributes")
        return {"Attributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "7"}]}


def test_a_later_step_reuses_what_an_earlier_step_learnt_about_its_target_groups():
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.elbv2 import ELBv2Adapter

    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef"
    first_client = _CountingELBv2()
    first = ELBv2Adapter(first_client, [arn])
    assert first.deregistration_delay(arn) == 7
    cache = first.export_cache()
    assert sorted(first_client.calls) == ["DescribeTargetGroupAttributes", "DescribeTargetGroups"]

    later_client = _CountingELBv2()
    later = ELBv2Adapter(later_client, [arn])
    later.import_cache(json.loads(json.dumps(cache)))  # it travels between steps as JSON
    assert later.target_group_arns == [arn]
    assert later.deregistration_delay(arn) == 7
    assert later_client.calls == []

    # A cache that does not cover every configured group is not trusted.
    other = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/api/fedcba9876543210"
    partial_client = _CountingELBv2()
    partial = ELBv2Adapter(partial_client, [arn, other])
    partial.import_cache(cache)
    partial.validate()
    assert partial_client.calls == ["DescribeTargetGroups"]


# ---------------------------------------------------------------------------------------------
# Issue 18: a missing permission fails before harm (preflight), a block refused halfway is undone


class Denied(Exception):
    """What botocore raises for a call the policy does not allow (code and message as AWS words them)."""

    def __init__(self, method):
        action = "elasticloadbalancing:" + "".join(part.title() for part in method.split("_"))
        message = f"User: arn:aws:iam::123456789012:user/d is not authorized to perform: {action} on resource: x"
        super().__init__(message)
        self.response = {"Error": {"Code": "AccessDenied", "Message": message}}


class FakeClassicELB:
    """Classic ELBs: name -> set of registered instances; connection draining on or off; denials by method."""

    def __init__(self, balancers, draining=0, deny=()):
        self.balancers = {n: set(ids) for n, ids in balancers.items()}
        self.draining, self.deny = draining, set(deny)
        self.log: list[tuple[str, str, list[str]]] = []
        self.calls: Counter[str] = Counter()

    def _count(self, method):
        self.calls[method] += 1
        if method in self.deny:
            raise Denied(method)

    def describe_load_balancers(self, LoadBalancerNames):
        self._count("describe_load_balancers")
        return {"LoadBalancerDescriptions": [{"LoadBalancerName": n, "Instances": [{"InstanceId": i} for i in self.balancers[n]]}
                                             for n in LoadBalancerNames]}

    def describe_load_balancer_attributes(self, LoadBalancerName):
        self._count("describe_load_balancer_attributes")
        return {"LoadBalancerAttributes": {"ConnectionDraining": {"Enabled": bool(self.draining), "Timeout": self.draining}}}

    def describe_instance_health(self, LoadBalancerName, Instances=()):
        self._count("describe_instance_health")
        return {"InstanceStates": [{"InstanceId": i, "State": "InService", "Description": "N/A"}
                                   for i in sorted(self.balancers[LoadBalancerName])]}

    def register_instances_with_load_balancer(self, LoadBalancerName, Instances):
        self._count("register_instances_with_load_balancer")
        self.log.append(("register", LoadBalancerName, [i["InstanceId"] for i in Instances]))
        self.balancers[LoadBalancerName].update(i["InstanceId"] for i in Instances)

    def deregister_instances_from_load_balancer(self, LoadBalancerName, Instances):
        self._count("deregister_instances_from_load_balancer")
        self.log.append(("deregister", LoadBalancerName, [i["InstanceId"] for i in Instances]))
        self.balancers[LoadBalancerName].difference_update(i["InstanceId"] for i in Instances)


class DenyingELBv2(FakeELBv2):
    """FakeELBv2 whose methods named in ``deny`` are refused (for target groups in ``only``, when given)."""

    def __init__(self, clock, groups, deny=(), only=(), **kwargs):
        super().__init__(clock, groups, **kwargs)
        self.deny, self.only = set(deny), set(only)

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name in object.__getattribute__(self, "deny") and callable(attr):
            def refused(**kwargs):
                only = object.__getattribute__(self, "only")
                if not only or kwargs.get("TargetGroupArn") in only:
                    raise Denied(name)
                return attr(**kwargs)
            return refused
        return attr


def _composite(elbv2, elb, clock, names=("web",)):
    return load_balancer_from_config({"target_group_arns": [ARN_A, ARN_B], "classic_elb_names": list(names)},
                                     Factory(elbv2=elbv2, elb=elb), clock=clock)


def test_preflight_reads_what_the_waits_need_and_proves_register_on_a_healthy_target_of_each_group():
    clock = FakeClock()
    fake = FakeELBv2(clock, [ARN_A, ARN_B], delay=4)
    _registered(fake, ARN_A, ["i-1", "i-2"])
    fake.groups[ARN_B][("i-2", 80)] = ("draining", 0.0)  # no healthy target of the deployment in ARN_B
    classic = FakeClassicELB({"web": ["i-2"]}, draining=5)
    lb = _composite(fake, classic, clock)
    health = lb.health(["i-1", "i-2"])
    assert health["i-1"] == "healthy"
    lb.preflight(["i-1", "i-2"])
    # one no-op registration per group, of a target already healthy there; none for a group with only a draining one
    assert [c for op, c in fake.log if op == "register"] == [{"arn": ARN_A, "targets": [{"Id": "i-1", "Port": 80}]}]
    assert classic.log == [("register", "web", ["i-2"])]
    assert fake.calls["describe_target_group_attributes"] == 2 and classic.calls["describe_load_balancer_attributes"] == 1
    # health() just read every group: the preflight does not describe them again
    assert fake.calls["describe_target_health"] == 2 and classic.calls["describe_instance_health"] == 1

    # the attributes travel to the later steps with the cache: blocking and draining read them no more
    later = _composite(fake, classic, clock)
    later.import_cache(json.loads(json.dumps(lb.export_cache())))
    batch = [ELBv2Membership(ARN_A, "i-1", 80), ClassicELBMembership("web", "i-2")]
    later.block(batch)
    assert later.wait_drained(batch).ok
    assert fake.calls["describe_target_group_attributes"] == 2 and classic.calls["describe_load_balancer_attributes"] == 1


@pytest.mark.parametrize("denied", ["register_targets", "register_instances_with_load_balancer"])
def test_preflight_without_the_register_permission_fails_before_any_host_leaves(denied):
    clock = FakeClock()
    fake = DenyingELBv2(clock, [ARN_A, ARN_B], deny=[denied])
    _registered(fake, ARN_A, ["i-1"])
    classic = FakeClassicELB({"web": ["i-1"]}, deny=[denied])
    lb = _composite(fake, classic, clock)
    action = "RegisterTargets" if denied == "register_targets" else "RegisterInstancesWithLoadBalancer"
    with pytest.raises(Denied, match=f"elasticloadbalancing:{action}"):
        lb.preflight(["i-1"])
    assert not [op for op, _c in fake.log if op == "deregister"] and not [e for e in classic.log if e[0] == "deregister"]


@pytest.mark.parametrize("denied", ["describe_target_group_attributes", "describe_load_balancer_attributes"])
def test_a_block_reads_the_drain_attributes_before_the_first_host_leaves(denied):
    clock = FakeClock()
    fake = DenyingELBv2(clock, [ARN_A, ARN_B], deny=[denied])
    _registered(fake, ARN_A, ["i-1"])
    classic = FakeClassicELB({"web": ["i-1"]}, deny=[denied])
    lb = _composite(fake, classic, clock)
    action = "DescribeTargetGroupAttributes" if denied.endswith("group_attributes") else "DescribeLoadBalancerAttributes"
    with pytest.raises(Denied, match=f"elasticloadbalancing:{action}"):
        lb.block([ELBv2Membership(ARN_A, "i-1", 80), ClassicELBMembership("web", "i-1")])
    assert fake.groups[ARN_A][("i-1", 80)][0] == "healthy" and classic.balancers["web"] == {"i-1"}


def test_a_block_refused_halfway_puts_back_what_it_took_out_and_names_the_action():
    clock = FakeClock()
    fake = DenyingELBv2(clock, [ARN_A, ARN_B], deny=["deregister_targets"], only=[ARN_B])
    _registered(fake, ARN_A, ["i-1"])
    _registered(fake, ARN_B, ["i-1"])
    classic = FakeClassicELB({"web": ["i-1"]})
    lb = _composite(fake, classic, clock)
    batch = [ELBv2Membership(ARN_A, "i-1", 80), ELBv2Membership(ARN_B, "i-1", 80), ClassicELBMembership("web", "i-1")]
    with pytest.raises(LoadBalancerError, match=r"elasticloadbalancing:DeregisterTargets.*put back .*i-1:80 in target group tg-a"):
        lb.block(batch)
    assert [(op, c["arn"]) for op, c in fake.log] == [("deregister", ARN_A), ("register", ARN_A)]
    assert classic.log == []  # never reached

    # across kinds: the target groups are done when the classic ELB refuses; they are put back
    fake2 = FakeELBv2(clock, [ARN_A, ARN_B])
    _registered(fake2, ARN_A, ["i-1"])
    _registered(fake2, ARN_B, ["i-1"])
    denying = FakeClassicELB({"web": ["i-1"]}, deny=["deregister_instances_from_load_balancer"])
    with pytest.raises(LoadBalancerError, match="DeregisterInstancesFromLoadBalancer.*put back"):
        _composite(fake2, denying, clock).block(batch)
    assert [op for op, _c in fake2.log] == ["deregister", "deregister", "register", "register"]
    assert all(key in fake2.groups[arn] for arn in (ARN_A, ARN_B) for key in [("i-1", 80)])

    # the first call refused: nothing was taken out, the original error as it was
    plain = DenyingELBv2(clock, [ARN_A, ARN_B], deny=["deregister_targets"])
    _registered(plain, ARN_A, ["i-1"])
    with pytest.raises(Denied):
        _composite(plain, FakeClassicELB({"web": ["i-1"]}), clock).block(batch[:1])
