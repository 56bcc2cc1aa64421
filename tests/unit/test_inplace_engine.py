# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The in-place engine's controller steps (start/plan/block/allow/finish), rollback planning, alarms,
recovery and the lease keeper, against a real SQLite record store.

AWS is replaced by two small in-memory test doubles: ``FakeLB`` (a load balancer with the
snapshot/block/wait_drained/allow/wait_healthy/health interface) and ``FakeCloudWatch``
(describe_alarms). Everything of ours runs for real.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Optional

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import alarms as al
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import inplace as ip
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery as rc
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.base import (
    ELBv2Membership,
    HAProxyMembership,
    Outcome,
    WaitResult,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef"
TG2 = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/api/fedcba9876543210"
HOSTS = [{"name": f"h{i}", "instance_id": f"i-{i:017d}"} for i in range(1, 5)]
IDS = {h["name"]: h["instance_id"] for h in HOSTS}
REV1 = {"source": "local", "path": "/cache/v1.zip", "local_path": "/src/v1.zip", "sha256": "1" * 64, "bundle_type": "zip"}
REV2 = {"source": "local", "path": "/cache/v2.zip", "local_path": "/src/v2.zip", "sha256": "2" * 64, "bundle_type": "zip"}


class FakeLB:
    """An in-memory load balancer. ``block`` checks that the record already holds the membership it removes."""

    def __init__(self, store: Any, registered: list[ELBv2Membership]):
        self.store = store
        self.registered = list(registered)
        self.deployment_id: Optional[str] = None
        self.calls: list[tuple[str, list[str]]] = []
        self.unhealthy: set[str] = set()
        self.draining: dict[str, str] = {}  # target id -> why it is still draining at the timeout
        self.preflighted: list[str] = []
        self.learnt: dict = {}  # what lasting_cache() hands to the group's next deployment
        self.imported: list = []

    def preflight(self, ids: list[str]) -> None:
        self.preflighted = list(ids)

    def lasting_cache(self) -> dict:
        return dict(self.learnt)

    def import_cache(self, cache) -> None:
        self.imported.append(cache)

    def snapshot(self, ids: list[str]) -> dict[str, list[ELBv2Membership]]:
        return {i: [m for m in self.registered if m.target_id == i] for i in ids}

    def block(self, memberships: list[ELBv2Membership]) -> None:
        if self.deployment_id:
            record = self.store.get(self.deployment_id)
            for m in memberships:
                host = next(h for h in record.hosts if IDS[h.name] == m.target_id)
                assert m.to_dict() in host.lb_membership and host.lb_restored is False, \
                    f"{m.label()} deregistered before it was recorded"
        self.calls.append(("block", sorted(m.target_id for m in memberships)))
        self.registered = [m for m in self.registered if m not in memberships]

    def wait_drained(self, memberships, timeout=None, progress=None) -> WaitResult:
        return WaitResult("drained", {m.target_id: Outcome("timeout", "draining", self.draining[m.target_id])
                                      if m.target_id in self.draining else Outcome("drained", "unused")
                                      for m in memberships})

    def allow(self, memberships: list[ELBv2Membership]) -> None:
        self.calls.append(("allow", sorted(m.target_id for m in memberships)))
        for m in memberships:
            if m not in self.registered:
                self.registered.append(m)

    def wait_healthy(self, memberships, timeout=None, progress=None) -> WaitResult:
        out = {}
        for m in memberships:
            out[m.target_id] = Outcome("timeout", "unhealthy") if m.target_id in self.unhealthy else Outcome("healthy", "healthy")
        return WaitResult("healthy", out)

    def health(self, ids: list[str]) -> dict[str, str]:
        return {i: "healthy" if any(m.target_id == i for m in self.registered) else "unused" for i in ids}

    def groups_of(self, instance_id: str) -> list[str]:
        return sorted(m.target_group_arn for m in self.registered if m.target_id == instance_id)


class FakeCloudWatch:
    """describe_alarms over a dict name -> state; counts calls; can fail."""

    def __init__(self, states: dict[str, str]):
        self.states = dict(states)
        self.calls = 0
        self.fail = False

    def describe_alarms(self, AlarmNames, **_kwargs):  # noqa: N803  (boto3's argument name)
        self.calls += 1
        if self.fail:
            raise RuntimeError("throttled")
        return {"MetricAlarms": [{"AlarmName": n, "StateValue": self.states[n], "StateReason": f"{n} breached",
                                  "StateUpdatedTimestamp": dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.timezone.utc)}
                                 for n in AlarmNames if n in self.states], "CompositeAlarms": []}


@pytest.fixture
def store(tmp_path):
    return open_store("sqlite", {"path": str(tmp_path / "records.sqlite3")})


def all_registered(groups=(TG,)) -> list[ELBv2Membership]:
    return [ELBv2Membership(tg, h["instance_id"], 80) for h in HOSTS for tg in groups]


def ok(events: list[str]) -> dict:
    return {"changed": True, "events": [{"name": e, "status": "Succeeded", "start": "2026-11-26T10:00:00Z",
                                         "end": "2026-11-26T10:00:01Z", "scripts": [{"location": "s.sh", "exit_code": 0}]}
                                        for e in events]}


def failing(events: list[str], at: str) -> dict:
    out = []
    for e in events:
        if e == at:
            out.append({"name": e, "status": "Failed", "start": "2026-11-26T10:00:00Z", "end": "2026-11-26T10:00:01Z",
                        "scripts": [{"location": "v.sh", "exit_code": 3, "output_tail": "boom"}], "message": "exit 3"})
            break
        out.append({"name": e, "status": "Succeeded", "scripts": []})
    return {"failed": True, "msg": f"{at} failed", "events": out}


def start(store, lb, *, revision=None, config="CodeDeployDefault.OneAtATime", alarms=None, rollback=None,
          hosts=HOSTS, groups=(TG,), **kwargs) -> tuple[ip.InPlaceRun, dict]:
    run = ip.InPlaceRun(store, lb, alarms=alarms)
    state = run.start(application="web", deployment_group="prod", hosts=list(hosts),
                      host_states={h["name"]: {"last_successful": None} for h in hosts},
                      revision=REV1 if revision is None else revision, appspec={},
                      config=config, load_balancer={"target_group_arns": list(groups)}, options={},
                      auto_rollback=rollback, **kwargs)
    lb.deployment_id = state["deployment_id"]
    return run, state


def drive(run: ip.InPlaceRun, state: dict, fail: Optional[dict] = None, stop_after_batches: Optional[int] = None,
          on_batch=None) -> dict:
    """Run the batches as the role does; ``fail`` maps host -> event that fails."""
    fail = fail or {}
    post: dict = {}
    while True:
        state = run.plan(state, post)
        if state["done"]:
            return state
        if on_batch:
            on_batch(state)
        calls = state["host_calls"]
        state = run.block(state, {h: ok(calls["pre_block"]) for h in state["active"]}, drain_timeout=None)
        if state["done"]:
            return state
        main = {h: failing(calls["main"], fail[h]) if fail.get(h) else ok(calls["main"]) for h in state["active"]}
        state = run.allow(state, main, healthy_timeout=None)
        if state["done"]:
            return state
        post = {h: ok(calls["post_allow"]) for h in state["active"]}
        if stop_after_batches and state["batch_number"] >= stop_after_batches:
            return state


# ------------------------------------------------------------------------------------------------ the record


def test_successful_deployment_records_every_event_membership_and_releases_the_lock(store):
    lb = FakeLB(store, all_registered((TG, TG2)))
    run, state = start(store, lb)
    assert store.get_lock("web", "prod").deployment_id == state["deployment_id"]
    carried = []  # which hosts' memberships the state carries after each block: the running batch's only
    real_block = run.block

    def block(*args, **kwargs):
        after = real_block(*args, **kwargs)
        carried.append(sorted(after["memberships"]))
        return after

    run.block = block
    state = drive(run, state)
    assert carried == [["h1"], ["h2"], ["h3"], ["h4"]]
    assert state["status"] == "Succeeded" and state["rollback_due"] is False
    record = store.get(state["deployment_id"])
    assert record.status == "Succeeded" and store.get_lock("web", "prod") is None
    expected = state["host_calls"]["pre_block"] + ["BlockTraffic"] + state["host_calls"]["main"] + ["AllowTraffic"] \
        + state["host_calls"]["post_allow"]
    for host in record.hosts:
        assert host.status == "Succeeded"
        assert [e.name for e in host.events] == expected
        # No previous revision: BeforeBlockTraffic is recorded without a host call, as the host engine does.
        assert all((e.status == ("Skipped" if e.name == "BeforeBlockTraffic" else "Succeeded")) and e.start_time
                   and e.end_time for e in host.events)
        assert {m["target_group_arn"] for m in host.lb_membership} == {TG, TG2} and host.lb_restored
    # OneAtATime: four batches, one deregistration each, and every host back in both groups
    assert [c for c in lb.calls if c[0] == "block"] == [("block", [IDS[h]] * 2) for h in ("h1", "h2", "h3", "h4")]
    assert all(lb.groups_of(i) == sorted([TG, TG2]) for i in IDS.values())


def _first_of_two_batches_out(store):
    """Half at a time: the first batch's two hosts out of their load balancer, their main group running."""
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb, config="CodeDeployDefault.HalfAtATime")
    state = run.plan(state, {})
    state = run.block(state, {h: ok(state["host_calls"]["pre_block"]) for h in state["active"]}, drain_timeout=None)
    lb.calls.clear()
    return lb, run, state


def test_hosts_go_back_into_their_load_balancer_as_their_own_main_group_passes(store):
    """put_back: within a batch, a host whose lifecycle events passed is registered again at once, before a slower
    host of the batch is done; allow() then registers only what is left, records every host's events (AllowTraffic
    from the time its host went back) and waits for the batch's health in one wait. A failed host stays out."""
    lb, run, state = _first_of_two_batches_out(store)
    first, second = state["active"]
    calls = state["host_calls"]
    assert run.put_back(state, {first: ok(calls["main"])}) == [first]
    assert lb.calls == [("allow", [IDS[first]])] and lb.groups_of(IDS[first]) == [TG] and not lb.groups_of(IDS[second])
    assert run.put_back(state, {first: ok(calls["main"])}) == []  # once only
    time.sleep(1.1)  # the slower host still validates
    waited = []
    real_wait = lb.wait_healthy
    lb.wait_healthy = lambda ms, **kw: waited.append(sorted(m.target_id for m in ms)) or real_wait(ms, **kw)
    state = run.allow(state, {first: ok(calls["main"]), second: failing(calls["main"], "ValidateService")},
                      healthy_timeout=None)
    assert lb.calls == [("allow", [IDS[first]])]  # the failed host was never registered again
    assert waited == [[IDS[first]]] and state["active"] == [first] and "allowed" not in state
    record = {h.name: h for h in store.get(state["deployment_id"]).hosts}
    assert record[second].status == "Failed" and record[second].lb_restored is False
    assert {e.name: e.status for e in record[second].events}["ValidateService"] == "Failed"
    events = {e.name: e for e in record[first].events}
    assert events["ValidateService"].status == "Succeeded" and events["AllowTraffic"].status == "Succeeded"
    registered = dt.datetime.fromisoformat(events["AllowTraffic"].start_time.replace("Z", "+00:00"))
    judged = dt.datetime.fromisoformat(events["AllowTraffic"].end_time.replace("Z", "+00:00"))
    assert (judged - registered).total_seconds() >= 1  # its start is when the host went back, not the batch's end
    assert record[first].lb_restored


def test_a_host_that_fails_its_main_group_early_is_never_put_back(store):
    lb, run, state = _first_of_two_batches_out(store)
    first, second = state["active"]
    calls = state["host_calls"]
    assert run.put_back(state, {first: failing(calls["main"], "ApplicationStart")}) == []
    assert not lb.calls
    state = run.allow(state, {first: failing(calls["main"], "ApplicationStart"), second: ok(calls["main"])},
                      healthy_timeout=None)
    assert lb.calls == [("allow", [IDS[second]])] and state["active"] == [second]
    assert next(h for h in store.get(state["deployment_id"]).hosts if h.name == first).status == "Failed"


def test_what_the_waits_learnt_goes_to_the_groups_next_deployment_only_from_a_success(store):
    lb = FakeLB(store, all_registered())
    lb.learnt = {"elbv2": {"registration": {TG: {"registering_until": 1.9, "healthy_by": 2.1}}}}
    run, state = start(store, lb)
    assert lb.imported == []  # the group's first deployment: nothing learnt before
    state = drive(run, state)
    assert store.get(state["deployment_id"]).extra["inplace"][ip.LB_LEARNT] == lb.learnt
    failing_lb = FakeLB(store, all_registered())
    failing_lb.learnt = {"elbv2": {"registration": {TG: {"registering_until": 9.0, "healthy_by": 9.5}}}}
    run, state = start(store, failing_lb)
    assert failing_lb.imported == [lb.learnt]  # read back from the last success
    state = drive(run, state, fail={"h1": "ValidateService"})
    assert state["status"] == "Failed" and ip.LB_LEARNT not in store.get(state["deployment_id"]).extra["inplace"]
    third = FakeLB(store, all_registered())
    start(store, third)
    assert third.imported == [lb.learnt]  # still the last success's, not the failed run's


def test_start_runs_the_load_balancer_preflight_for_every_host_before_the_record(store):
    """Issue 18: the preflight (attributes read, register permission proven) comes before anything is
    written; when it fails, no record, no lock, no host touched."""
    lb = FakeLB(store, all_registered())
    start(store, lb)
    assert lb.preflighted == list(IDS.values())

    class Refusing(FakeLB):
        def preflight(self, ids):
            raise RuntimeError("not authorized to perform: elasticloadbalancing:RegisterTargets")

    refusing = Refusing(store, all_registered())
    with pytest.raises(RuntimeError, match="RegisterTargets"):
        ip.InPlaceRun(store, refusing).start(
            application="web", deployment_group="other", hosts=list(HOSTS), host_states={h["name"]: {} for h in HOSTS},
            revision=REV1, appspec={}, config="CodeDeployDefault.OneAtATime", load_balancer={"target_group_arns": [TG]},
            options={})
    assert store.get_lock("web", "other") is None and not store.list("web", "other") and refusing.calls == []


def test_failed_host_stays_out_its_event_and_log_tail_are_recorded_and_rollback_is_due(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb, rollback={"on_failure": True})
    state = drive(run, state, fail={"h2": "ValidateService"})
    assert state["status"] == "Failed" and state["rollback_due"] is True and state["stop_cause"] == "failure"
    record = store.get(state["deployment_id"])
    h2 = record.host("h2")
    assert h2.status == "Failed" and h2.event("ValidateService").status == "Failed"
    assert h2.event("ValidateService").scripts[0]["output_tail"] == "boom"
    assert h2.lb_membership and h2.lb_restored is False and lb.groups_of(IDS["h2"]) == []
    assert [h.status for h in record.hosts] == ["Succeeded", "Failed", "Skipped", "Skipped"]


def test_draining_timeout_names_what_is_still_open_in_the_record_and_the_summary(store):
    lb = FakeLB(store, all_registered())
    lb.draining[IDS["h1"]] = "app/h1 on lb1: 3 session(s), DRAIN"
    run, state = start(store, lb)
    state = drive(run, state)
    assert state["status"] == "Failed"
    wanted = f"{IDS['h1']} still draining after the timeout (draining (app/h1 on lb1: 3 session(s), DRAIN))"
    event = store.get(state["deployment_id"]).host("h1").event("BlockTraffic")
    assert event.status == "Failed" and event.message == wanted
    h1 = next(h for h in state["summary"]["hosts"] if h["name"] == "h1")
    assert h1["failed_event"] == "BlockTraffic" and h1["message"] == wanted
    assert "3 session(s)" in state["summary_text"] and state["failures"]["h1"] == f"BlockTraffic: {wanted}"


def test_failure_without_auto_rollback_is_not_rolled_back(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb, rollback={"on_failure": False, "on_alarm": True})
    state = drive(run, state, fail={"h1": "Install"})
    assert state["status"] == "Failed" and state["rollback_due"] is False


# ------------------------------------------------------------------------------------------------ the lock


def test_second_deployment_of_a_locked_group_fails_at_once_naming_the_holder(store):
    lb = FakeLB(store, all_registered())
    _run, state = start(store, lb)
    with pytest.raises(ip.InPlaceError) as err:
        start(store, FakeLB(store, all_registered()))
    text = str(err.value)
    assert state["deployment_id"] in text and "started by" in text and " at 20" in text
    other = store.list("web", "prod", limit=1)[0]
    assert other.status == "Failed" and other.deployment_id != state["deployment_id"]


def test_lock_message_points_at_recovery_when_the_holder_is_already_stopped(store):
    lb = FakeLB(store, all_registered())
    _run, state = start(store, lb)
    store.update_status(state["deployment_id"], "Stopped", error="controller died")  # what the lease keeper does
    with pytest.raises(ip.InPlaceError, match="rollwright.deploy.recover"):
        start(store, FakeLB(store, all_registered()))


def test_two_groups_lock_independently(store):
    lb = FakeLB(store, all_registered())
    _run, a = start(store, lb, hosts=HOSTS[:2])
    run = ip.InPlaceRun(store, lb)
    b = run.start(application="web", deployment_group="canary", hosts=HOSTS[2:], host_states={}, revision=REV1,
                  appspec={}, config="CodeDeployDefault.AllAtOnce", load_balancer={"target_group_arns": [TG]}, options={})
    assert store.get_lock("web", "prod").deployment_id == a["deployment_id"]
    assert store.get_lock("web", "canary").deployment_id == b["deployment_id"]


# ------------------------------------------------------------------------------------------------ alarms


def test_alarm_in_alarm_refuses_to_start_and_changes_nothing(store):
    cw = FakeCloudWatch({"5xx": "ALARM", "latency": "OK"})
    lb = FakeLB(store, all_registered())
    with pytest.raises(ip.InPlaceError, match="5xx in ALARM since 2026-11-26T10:00:00Z.*Nothing was changed"):
        start(store, lb, alarms=al.AlarmWatch(cw, ["5xx", "latency"]))
    assert cw.calls == 1  # one DescribeAlarms for both names
    assert store.list("web", "prod") == [] and store.get_lock("web", "prod") is None and lb.calls == []


def test_alarm_going_off_mid_deployment_stops_it_and_asks_for_rollback(store):
    cw = FakeCloudWatch({"5xx": "OK"})
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb, alarms=al.AlarmWatch(cw, ["5xx"]), rollback={"on_alarm": True})

    def trip(s):
        if s["batch_number"] == 2:
            cw.states["5xx"] = "ALARM"

    state = drive(run, state, on_batch=trip)
    assert state["status"] == "Stopped" and state["stop_cause"] == "alarm" and state["rollback_due"] is True
    record = store.get(state["deployment_id"])
    assert record.status == "Stopped" and "alarm 5xx in ALARM since 2026-11-26T10:00:00Z" in record.error
    # h2 was tripped at its BlockTraffic: it never left its load balancer; h1 finished batch 1
    assert record.host("h1").status == "Succeeded" and record.host("h2").event("BlockTraffic") is None
    assert lb.groups_of(IDS["h2"]) == [TG] and store.get_lock("web", "prod") is None


def test_unreadable_alarms_stop_unless_ignored(store):
    cw = FakeCloudWatch({})  # the alarm does not exist
    with pytest.raises(ip.InPlaceError, match="not found in CloudWatch"):
        start(store, FakeLB(store, all_registered()), alarms=al.AlarmWatch(cw, ["gone"]))
    run, state = start(store, FakeLB(store, all_registered()), alarms=al.AlarmWatch(cw, ["gone"], True))
    cw.fail = True
    state = drive(run, state)
    assert state["status"] == "Succeeded" and cw.calls > 4


def test_parse_auto_rollback_dict_and_survey_scalars():
    parsed = al.parse_auto_rollback({"on_failure": True, "alarms": ["a"]}, on_alarm="true", alarms="b, c",
                                    ignore_poll_alarm_failure="")
    assert parsed.to_dict() == {"on_failure": True, "on_alarm": True, "alarms": ["a", "b", "c"],
                                "ignore_poll_alarm_failure": False}
    assert al.parse_auto_rollback(None, on_failure="no").on_failure is False
    with pytest.raises(al.AlarmConfigError, match="rollwright_auto_rollback_on_alarm: expected true or false"):
        al.parse_auto_rollback({}, on_alarm="maybe")
    with pytest.raises(al.AlarmConfigError, match="at most 10"):
        al.parse_auto_rollback({"alarms": [f"a{i}" for i in range(11)]})
    with pytest.raises(al.AlarmConfigError, match="unknown key"):
        al.parse_auto_rollback({"on_faliure": True})


# ------------------------------------------------------------------------------------------------ rollback


def _deploy_v1_then_fail_v2(store, lb):
    run, state = start(store, lb, revision=REV1)
    v1 = drive(run, state)
    assert v1["status"] == "Succeeded"
    run, state = start(store, lb, revision=REV2, rollback={"on_failure": True})
    v2 = drive(run, state, fail={"h2": "ValidateService"})
    assert v2["status"] == "Failed" and v2["rollback_due"]
    return v1, v2


def test_rollback_is_a_linked_new_deployment_of_the_last_good_revision_that_restores_membership(store):
    lb = FakeLB(store, all_registered())
    v1, v2 = _deploy_v1_then_fail_v2(store, lb)
    plan = ip.plan_rollback(store, "web", "prod", rollback_of=v2["deployment_id"])
    assert plan.target_deployment_id == v1["deployment_id"] and plan.revision["sha256"] == REV1["sha256"]
    assert plan.hosts == ["h1", "h2"]  # the hosts v2 reached
    assert list(plan.original_memberships) == ["h2"]  # left out by v2
    run, state = start(store, lb, revision=plan.revision, rollback_of=plan.rollback_of, creator="rollback",
                       hosts=[h for h in HOSTS if h["name"] in plan.hosts],
                       original_memberships=plan.original_memberships)
    assert dict(state["planner"]["hosts"][1]) == {"name": "h2", "healthy": False, "revision": "unknown",
                                                  "last_install_succeeded": False}
    state = drive(run, state)
    assert state["status"] == "Succeeded" and state["rollback_due"] is False
    rollback = store.get(state["deployment_id"])
    original = store.get(v2["deployment_id"])
    assert rollback.creator == "rollback" and rollback.rollback_of == original.deployment_id
    assert original.rolled_back_by == rollback.deployment_id
    # h2 (out since v2) went first, and both are back in their group
    assert [c for c in lb.calls if c[0] == "allow"][-2:] == [("allow", [IDS["h2"]]), ("allow", [IDS["h1"]])]
    assert all(lb.groups_of(i) == [TG] for i in IDS.values())
    assert original.host("h2").lb_restored is True  # recovery has nothing left to do for v2
    assert rc.needs_recovery(original) is False


def test_merge_original_keeps_the_original_haproxy_state_instead_of_adding_both():
    """A rollback's snapshot sees the server the failed deployment left in maint; the failed deployment's
    record says it was ready (weight 7). One membership per server line, the original one."""
    snap = {"web1": [HAProxyMembership("lb1", "app", "web1", "maint", 1), HAProxyMembership("lb2", "app", "web1", "maint", 1)],
            "web2": [HAProxyMembership("lb1", "app", "web2", "ready", 1)]}
    original = {"web1": [HAProxyMembership("lb1", "app", "web1", "ready", 7).to_dict(),
                         HAProxyMembership("lb2", "app", "web1", "ready", 1).to_dict(),
                         HAProxyMembership("lb1", "app_tls", "web1", "ready", 1).to_dict()]}
    merged = ip.merge_original(snap, {"web1": "web1", "web2": "web2"}, original)
    assert merged["web1"] == [HAProxyMembership("lb1", "app", "web1", "ready", 7), HAProxyMembership("lb2", "app", "web1", "ready", 1),
                              HAProxyMembership("lb1", "app_tls", "web1", "ready", 1)]
    assert merged["web2"] == snap["web2"]
    assert snap["web1"][0].state == "maint"  # the caller's snapshot is not changed
    # ELB registrations stay a union (a target group the failed deployment recorded is added, none twice)
    elb = ip.merge_original({"i-1": [ELBv2Membership(TG, "i-1", 80)]}, {"h1": "i-1"},
                            {"h1": [ELBv2Membership(TG, "i-1", 80).to_dict(), ELBv2Membership(TG2, "i-1", 80).to_dict()]})
    assert elb["i-1"] == [ELBv2Membership(TG, "i-1", 80), ELBv2Membership(TG2, "i-1", 80)]


def test_haproxy_servers_are_named_by_inventory_hostname_and_keyed_by_lb_id():
    hosts = [{"name": "web1", "instance_id": "i-0000000000000001"}, {"name": "web2", "instance_id": "i-0000000000000002"},
             {"name": "web3", "instance_id": None}, {"name": "web4", "instance_id": "i-0000000000000004"}]
    config = {"target_group_arns": [TG],
              "haproxy": {"instances": ["/run/lb1.sock"], "backend": "app",
                          "servers": {"web1": "shop-web1", "web3": "shop-web3", "i-0000000000000004": "shop-web4",
                                      "gone": "shop-gone"}}}
    mapped = ip.haproxy_servers_by_lb_id(config, hosts)
    # ELB keys untouched; servers: inventory name -> server (default: the inventory name), keyed by lb id
    assert mapped["target_group_arns"] == [TG] and mapped["haproxy"]["backend"] == "app"
    assert mapped["haproxy"]["servers"] == {"i-0000000000000001": "shop-web1", "i-0000000000000002": "web2",
                                            "web3": "shop-web3", "i-0000000000000004": "shop-web4"}
    assert config["haproxy"]["servers"]["web1"] == "shop-web1" and "i-0000000000000001" not in config["haproxy"]["servers"]
    # mapping again (a stored configuration) gives the same
    assert ip.haproxy_servers_by_lb_id(mapped, hosts) == mapped
    # the adapter built from it addresses the right servers
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.haproxy import parse_haproxy_config

    parsed = parse_haproxy_config(mapped["haproxy"])
    assert parsed.server_for("i-0000000000000002") == "web2" and parsed.host_for("shop-web1") == "i-0000000000000001"
    assert ip.haproxy_servers_by_lb_id({"target_group_arns": [TG]}, hosts) == {"target_group_arns": [TG]}
    assert ip.haproxy_servers_by_lb_id(None, hosts) is None


def test_rollback_without_a_successful_deployment_reports_hosts_and_guesses_nothing(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb, revision=REV2)
    failed = drive(run, state, fail={"h1": "AfterInstall"})
    with pytest.raises(ip.InPlaceError) as err:
        ip.plan_rollback(store, "web", "prod", rollback_of=failed["deployment_id"])
    assert "no successful deployment" in str(err.value)
    assert "h1 Failed at AfterInstall (out of its load balancer)" in str(err.value)


def test_rollback_to_a_chosen_deployment_and_manual_default(store):
    lb = FakeLB(store, all_registered())
    v1, v2 = _deploy_v1_then_fail_v2(store, lb)
    chosen = ip.plan_rollback(store, "web", "prod", rollback_to=v1["deployment_id"], hosts=["h1", "h2", "h3", "h4"])
    assert chosen.rollback_of == v2["deployment_id"] and chosen.hosts == ["h1", "h2", "h3", "h4"]
    manual = ip.plan_rollback(store, "web", "prod", hosts=["h1"])
    assert manual.target_deployment_id == v1["deployment_id"]
    with pytest.raises(ip.InPlaceError, match="belongs to web/prod, not web/other"):
        ip.plan_rollback(store, "web", "other", rollback_of=v2["deployment_id"])


def test_revision_source_for_s3_and_local(tmp_path):
    s3 = {"source": "s3", "bucket": "b", "key": "k.zip", "version": "v1", "etag": "e", "bundle_type": "zip", "sha256": "x"}
    assert ip.revision_source(s3) == {"s3": {"bucket": "b", "key": "k.zip", "version": "v1", "etag": "e"},
                                      "bundle_type": "zip"}
    cached = tmp_path / "cached.zip"
    cached.write_bytes(b"x")
    assert ip.revision_source({"source": "local", "path": str(cached), "local_path": "/gone"})["path"] == str(cached)
    original = tmp_path / "orig.zip"
    original.write_bytes(b"x")
    assert ip.revision_source({"source": "local", "path": "/gone", "local_path": str(original)})["path"] == str(original)
    with pytest.raises(ip.InPlaceError, match="bundle is gone"):
        ip.revision_source({"source": "local", "path": "/gone", "local_path": "/gone/too"})


# ------------------------------------------------------------------------------------------------ recovery


def _interrupted(store, lb, fail=None, groups=(TG,)):
    """A deployment whose controller 'died' after BlockTraffic of batch 2 (HalfAtATime: h3, h4 out, or only
    h3 when a host of batch 1 failed)."""
    run, state = start(store, lb, config="CodeDeployDefault.HalfAtATime", groups=groups)
    state = run.plan(state, {})
    calls = state["host_calls"]
    state = run.block(state, {h: ok(calls["pre_block"]) for h in state["active"]}, None)
    main = {h: failing(calls["main"], fail[h]) if (fail or {}).get(h) else ok(calls["main"]) for h in state["active"]}
    state = run.allow(state, main, None)
    state = run.plan(state, {h: ok(calls["post_allow"]) for h in state["active"]})
    state = run.block(state, {h: ok(calls["pre_block"]) for h in state["active"]}, None)
    return state


def test_recovery_restores_exactly_the_recorded_membership_and_is_idempotent(store):
    lb = FakeLB(store, all_registered((TG, TG2)))
    state = _interrupted(store, lb, fail={"h1": "ValidateService"}, groups=(TG, TG2))
    deployment_id = state["deployment_id"]
    # h1 failed in batch 1; with one host down, batch 2 is h3 alone (the minimum of 2 holds)
    assert lb.groups_of(IDS["h1"]) == [] and lb.groups_of(IDS["h3"]) == [] and lb.groups_of(IDS["h4"]) == sorted([TG, TG2])
    record = rc.select_deployment(store, "web", "prod")
    assert record.deployment_id == deployment_id
    live = rc.plan_recovery(record, store.get_lock("web", "prod"))
    assert live.refused and "looks alive" in live.refused  # lock fresh, record InProgress
    store.update_status(deployment_id, "Stopped", error="controller died")  # the lease keeper's mark
    plan = rc.plan_recovery(store.get(deployment_id), store.get_lock("web", "prod"))
    assert plan.refused is None and sorted(plan.restore) == ["h3"] and list(plan.left_out) == ["h1"]
    assert plan.restore["h3"] == [ELBv2Membership(tg, IDS["h3"], 80).to_dict() for tg in (TG, TG2)]
    report = rc.recover(store, lb, store.get(deployment_id), plan)
    assert report["restored"] == ["h3"] and report["lock_released"] and report["status"] == "Stopped"
    assert lb.groups_of(IDS["h3"]) == sorted([TG, TG2]) and lb.groups_of(IDS["h4"]) == sorted([TG, TG2])
    assert lb.groups_of(IDS["h1"]) == []  # its install failed: it stays out
    assert store.get_lock("web", "prod") is None
    after = store.get(deployment_id)
    assert all(e.status != "InProgress" for h in after.hosts for e in h.events)
    # a second run changes nothing
    again = rc.plan_recovery(store.get(deployment_id), store.get_lock("web", "prod"))
    assert not again.needs_action
    assert rc.select_deployment(store, "web", "prod") is None
    calls = len(lb.calls)
    assert rc.recover(store, lb, store.get(deployment_id), again)["changed"] is False and len(lb.calls) == calls


def test_recovery_of_an_inprogress_record_with_a_stale_lock_marks_it_stopped(store, monkeypatch):
    from ansible_collections.rollwright.deploy.plugins.module_utils.records import sqlite as sqlite_store

    lb = FakeLB(store, all_registered())
    state = _interrupted(store, lb)
    later = sqlite_store.utc_now() + dt.timedelta(seconds=ip.DEFAULT_LOCK_TTL + 1)
    monkeypatch.setattr(sqlite_store, "utc_now", lambda: later)  # the store judges staleness by its clock
    lock = store.get_lock("web", "prod")
    assert lock.stale
    plan = rc.plan_recovery(store.get(state["deployment_id"]), lock)
    assert plan.refused is None and plan.mark_stopped
    rc.recover(store, lb, store.get(state["deployment_id"]), plan)
    assert store.get(state["deployment_id"]).status == "Stopped"
    assert all(lb.groups_of(i) == [TG] for i in IDS.values())


def test_recovery_uses_the_load_balancer_configuration_recorded_at_start(store):
    lb = FakeLB(store, all_registered())
    state = _interrupted(store, lb)
    record = store.get(state["deployment_id"])
    assert record.extra["inplace"]["load_balancer"] == {"target_group_arns": [TG]}
    assert rc.load_balancer_config(record) == {"target_group_arns": [TG]}
    # rollwright_load_balancer overrides it; its HAProxy servers (by inventory hostname) are keyed by lb id
    override = {"haproxy": {"instances": ["/run/lb1.sock"], "backend": "app", "servers": {"h1": "web-1"}}}
    chosen = rc.load_balancer_config(record, override)
    assert chosen["haproxy"]["servers"] == {IDS["h1"]: "web-1", IDS["h2"]: "h2", IDS["h3"]: "h3", IDS["h4"]: "h4"}
    # the options given to start() are what is recorded (the state carries the same configuration)
    run = ip.InPlaceRun(store, FakeLB(store, all_registered()))
    mapped = {"haproxy": {"instances": ["/run/lb1.sock"], "backend": "app", "servers": {"i-1": "web-1"}}}
    other = run.start(application="web", deployment_group="other", hosts=HOSTS[:1],
                      host_states={"h1": {"last_successful": None}}, revision=REV1, appspec={},
                      config="CodeDeployDefault.AllAtOnce", load_balancer={"haproxy": {}},
                      options={"load_balancer": mapped})
    assert store.get(other["deployment_id"]).extra["inplace"]["load_balancer"] == mapped == other["options"]["load_balancer"]


def _other_type(store, kind: str, status: str, *, extra: Optional[dict] = None, revision: Optional[dict] = None,
                group: str = "prod", lock_ttl: Optional[float] = None):
    from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import DeploymentRecord

    record = store.create(DeploymentRecord(application="web", deployment_group=group, deployment_type=kind,
                                           revision=revision or {}, status="Created"))
    for key, value in (extra or {}).items():
        store.set_extra(record.deployment_id, key, value)
    if lock_ttl is not None:
        store.acquire_lock("web", group, record.deployment_id, owner="ci", ttl=lock_ttl)
    store.update_status(record.deployment_id, status)
    return store.get(record.deployment_id)


def test_recover_picks_any_deployment_type_and_plans_blue_green_from_its_phase(store):
    rerouting = _other_type(store, "blue_green_ec2", "InProgress", extra={"bluegreen": {"phase": "rerouting"}}, lock_ttl=7200)
    # the lock holder is chosen whatever its type; a fresh blue/green lock is refused without force
    assert rc.select_deployment(store, "web", "prod").deployment_id == rerouting.deployment_id
    lock = store.get_lock("web", "prod")
    plan = rc.bluegreen_plan(rerouting, lock)
    assert plan["action"] == "rolled_back" and plan["refused"] and "rollwright_force_recover=true" in plan["refused"]
    assert rc.bluegreen_plan(rerouting, lock, force=True)["refused"] is None
    # by id, application and group may be left out; a wrong group is named
    assert rc.select_deployment(store, None, None, rerouting.deployment_id).deployment_id == rerouting.deployment_id
    with pytest.raises(rc.RecoveryError, match="belongs to web/prod, not to web/other"):
        rc.select_deployment(store, "web", "other", rerouting.deployment_id)
    # phases: retiring -> the retirement is finished; finished and ended -> nothing (a held lock is still released)
    retiring = _other_type(store, "blue_green_ec2", "InProgress", extra={"bluegreen": {"phase": "retiring"}}, group="g2")
    assert rc.bluegreen_plan(retiring, None)["action"] == "retired"
    ready = _other_type(store, "blue_green_ec2", "Ready", extra={"bluegreen": {"phase": "ready"}}, group="g3")
    assert rc.needs_recovery(ready) and rc.select_deployment(store, "web", "g3").deployment_id == ready.deployment_id
    done = _other_type(store, "blue_green_ec2", "Succeeded", extra={"bluegreen": {"phase": "finished"}}, group="g4",
                       lock_ttl=0.001)
    time.sleep(0.01)
    stale = store.get_lock("web", "g4")
    assert stale.stale
    plan = rc.bluegreen_plan(done, stale)
    assert plan["action"] == "none" and plan["needs_action"] and plan["refused"] is None
    report = rc.recover_bluegreen(store, None, done, plan)
    assert report["action"] == "none" and report["lock_released"] and report["changed"]
    assert store.get_lock("web", "g4") is None and store.get(done.deployment_id).status == "Succeeded"
    assert rc.select_deployment(store, "web", "g4") is None
    # another deployment's lock: refused unless forced
    other = rc.bluegreen_plan(retiring, lock)
    assert other["refused"] and f"locked by another deployment, {rerouting.deployment_id}" in other["refused"]


def test_recover_of_a_lambda_deployment_names_the_lambda_command(store):
    stuck = _other_type(store, "lambda", "InProgress", group="orders-api:live", lock_ttl=3600,
                        revision={"function": "orders-api", "alias": "live", "current_version": "3", "target_version": "4"})
    refusal = rc.lambda_refusal(stuck, store.get_lock("web", "orders-api:live"),
                                {"backend": "dynamodb", "dynamodb_table": "deployments", "sqlite_path": None},
                                {"region": "eu-west-1"})
    assert refusal and "holding the group lock" in refusal
    assert ("ansible-playbook rollwright.deploy.lambda -e rollwright_lambda_function_name=orders-api "
            "-e rollwright_lambda_alias=live -e rollwright_application=web -e rollwright_deployment_group=orders-api:live "
            "-e rollwright_lambda_recover=true -e rollwright_force_lock=true -e rollwright_record_backend=dynamodb "
            "-e rollwright_record_dynamodb_table=deployments -e rollwright_aws_region=eu-west-1") in refusal
    assert "rollwright_record_backend" not in rc.lambda_recovery_command(stuck, {"backend": "sqlite"})
    spaced = rc.lambda_recovery_command(stuck, {"sqlite_path": "/srv/my records/d.sqlite3"})
    assert "-e 'rollwright_record_sqlite_path=/srv/my records/d.sqlite3'" in spaced
    ended = _other_type(store, "lambda", "Succeeded", group="orders-api:beta", revision={"function": "orders-api"})
    assert rc.lambda_refusal(ended, None) is None


# ------------------------------------------------------------------------------------------------ lease keeper


def test_lease_keeper_heartbeats_while_the_controller_lives_and_marks_stopped_when_it_dies(store):
    lb = FakeLB(store, all_registered())
    _run, state = start(store, lb)
    ticks = iter(range(1000))
    alive = {"n": 5}

    def fake_alive(pid, start):
        alive["n"] -= 1
        return alive["n"] > 0

    before = store.get_lock("web", "prod").heartbeat_at
    keeper = lease.LeaseKeeper(store, state["lock"], 4242, "1", interval=1, poll=0, sleep=lambda s: None,
                               clock=lambda: float(next(ticks)), alive=fake_alive)
    outcome = keeper.run()
    assert "marked Stopped" in outcome
    record = store.get(state["deployment_id"])
    assert record.status == "Stopped" and "pid 4242" in record.error and "rollwright.deploy.recover" in record.error
    lock = store.get_lock("web", "prod")
    assert lock is not None and lock.heartbeat_at > before  # it beat, and it left the lock for recovery


def test_lease_keeper_exits_when_the_deployment_ends(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb)
    drive(run, state)
    keeper = lease.LeaseKeeper(store, state["lock"], 4242, None, interval=0, poll=0, sleep=lambda s: None,
                               alive=lambda pid, start: True)
    assert "released" in keeper.run(max_seconds=5)


def test_process_identity_helpers():
    import os

    me = os.getpid()
    start_time = lease.process_start(me)
    assert start_time and lease.process_alive(me, start_time) and not lease.process_alive(me, str(int(start_time) + 1))
    assert not lease.process_alive(0, None)
    assert lease.find_controller(me)[0] > 0


# ------------------------------------------------------------------------------------------------ host calls


def test_before_block_traffic_call_only_where_the_previous_revision_has_scripts():
    calls = ip.host_calls(True)
    states = {
        "first": {"last_successful": None},
        "scripts": {"last_successful": {"deployment_id": "d-1", "hook_events": ["ApplicationStop", "BeforeBlockTraffic"]}},
        "none": {"last_successful": {"deployment_id": "d-1", "hook_events": ["ApplicationStop"]}},
        "gone": {"last_successful": {"deployment_id": "d-0", "hook_events": None}},
        "unreadable": None,
        "odd": {"last_successful": {"deployment_id": "d-1", "hook_events": 5}},  # a host's word, not an engine's
        "odder": {"last_successful": {"deployment_id": "d-1", "hook_events": [{"x": 1}]}},
    }
    needed, previous = ip.calls_needed(calls, states)
    assert needed == {"pre_block": ["scripts", "gone", "unreadable", "odd", "odder"]}
    assert previous == {"first": False, "scripts": True, "none": True, "gone": True, "unreadable": False, "odd": True,
                        "odder": True}
    assert ip.calls_needed(ip.host_calls(False), states) == ({}, {})
    state = {"active": ["first", "none", "scripts"], "host_calls": calls, "calls_needed": needed, "previous_revision": previous}
    merged = ip.InPlaceRun.with_uncalled(state, "pre_block", {"scripts": {"events": ["ran"]}})
    assert merged["scripts"] == {"events": ["ran"]}
    assert merged["first"]["events"] == [{"name": "BeforeBlockTraffic", "status": "Skipped",
                                          "message": "first deployment on this host: no previous revision to run scripts of"}]
    assert merged["none"]["events"] == [{"name": "BeforeBlockTraffic", "status": "Succeeded",
                                         "message": "no scripts for this event"}]


def test_plan_within_picks_the_batch_among_the_play_batch_hosts(store):
    lb = FakeLB(store, all_registered((TG,)))
    run, state = start(store, lb, config="CodeDeployDefault.HalfAtATime")
    assert state["plan_preview"] == [["h1", "h2"], ["h3", "h4"]]
    state = run.plan(state, {}, within=["h3", "h4"])  # a serial play's batch: its own hosts only
    assert state["batch"] == ["h3", "h4"] and state["waiting"] == ["h1", "h2"] and not state["done"]
    calls = state["host_calls"]
    state = run.block(state, {}, drain_timeout=None)
    state = run.allow(state, {h: ok(calls["main"]) for h in state["active"]}, healthy_timeout=None)
    post = {h: ok(calls["post_allow"]) for h in state["active"]}
    # No host of `within` may go: the previous batch is judged, nothing is picked, the deployment goes on.
    state = run.plan(state, post, within=[])
    assert state["batch"] == [] and not state["done"] and state["waiting"] == ["h1", "h2"]
    state = run.plan(state, {}, within=None)
    assert state["batch"] == ["h1", "h2"]
    state = run.block(state, {}, drain_timeout=None)
    state = run.allow(state, {h: ok(calls["main"]) for h in state["active"]}, healthy_timeout=None)
    state = run.plan(state, {h: ok(calls["post_allow"]) for h in state["active"]}, within=[])
    assert state["done"] and state["status"] == "Succeeded" and sorted(state["outcome"]["succeeded"]) == ["h1", "h2", "h3", "h4"]


def test_a_batch_closed_in_its_own_step_is_judged_once_and_the_next_plan_picks_on(store):
    """The batch step judges its batch itself (close_batch): the next plan judges nothing again."""
    lb = FakeLB(store, all_registered((TG,)))
    run, state = start(store, lb, config="CodeDeployDefault.HalfAtATime")
    calls = state["host_calls"]
    for number, expected in enumerate((["h1", "h2"], ["h3", "h4"]), start=1):
        state = run.plan(state, {})
        assert state["batch"] == expected
        state = run.block(state, {}, drain_timeout=None)
        state = run.allow(state, {h: ok(calls["main"]) for h in state["active"]}, healthy_timeout=None)
        failing_host = {"h3": failing(calls["post_allow"], "AfterAllowTraffic")} if "h3" in expected else {}
        state = run.close_batch(state, {**{h: ok(calls["post_allow"]) for h in state["active"]}, **failing_host})
        assert state["batch"] == [] and state["active"] == [] and not state["done"]
        assert len(state["batch_times"]) == number
    state = run.close_batch(state, {})  # nothing open: a no-op
    state = run.plan(state, {}, within=[])
    # one host of four failed: HalfAtATime's minimum of two healthy hosts still holds
    assert state["done"] and state["status"] == "Succeeded" and state["outcome"]["failed"] == ["h3"]
    assert sorted(state["outcome"]["succeeded"]) == ["h1", "h2", "h4"]
    assert {h.name: h.status for h in store.get(state["deployment_id"]).hosts} == {
        "h1": "Succeeded", "h2": "Succeeded", "h3": "Failed", "h4": "Succeeded"}


# ------------------------------------------------------------------------------------------------ staging


def test_staging_failure_fails_before_any_host_leaves_naming_each_host_and_no_rollback(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb, rollback={"on_failure": True})
    assert state["stage_hosts"] == ["h1", "h2", "h3", "h4"] and state["staged"] == []
    results = {h: ok(["DownloadBundle"]) for h in state["stage_hosts"]}
    results["h3"] = {"failed": True, "msg": "host state: refusing /var/lib/rollwright/web: is a symlink", "events": []}
    results["h4"] = {"unreachable": True, "msg": "ssh timeout"}
    state = run.staged(state, results)
    assert state["done"] and state["status"] == "Failed" and state["rollback_due"] is False
    assert "staging failed on 2 of 4 host(s) before any host left its load balancer" in state["error"]
    assert "h3: host state: refusing /var/lib/rollwright/web: is a symlink" in state["error"] and "h4: host unreachable" in state["error"]
    assert state["staged"] == ["h1", "h2"] and state["outcome"]["failed"] == ["h3", "h4"]
    assert [c for c in lb.calls if c[0] == "block"] == []  # nobody left the load balancer
    record = store.get(state["deployment_id"])
    assert [h.status for h in record.hosts] == ["Skipped", "Skipped", "Failed", "Failed"]
    assert record.host("h3").event("DownloadBundle").status == "Failed" and store.get_lock("web", "prod") is None


def test_staged_hosts_are_listed_and_the_deployment_goes_on(store):
    lb = FakeLB(store, all_registered())
    run, state = start(store, lb)
    state = run.staged(state, {h: ok(["DownloadBundle"]) for h in state["stage_hosts"]})
    assert not state["done"] and state["staged"] == ["h1", "h2", "h3", "h4"]
    assert drive(run, state)["status"] == "Succeeded"


def test_hosts_read_by_the_staging_calls_plan_again_before_any_host_leaves(store):
    """read_hosts=staging: start plans from the load balancer alone; the staging calls' states then order the hosts
    (unreadable, unknown revision, old), skip the one already on the revision (its staged copy is not needed) and
    decide the BeforeBlockTraffic calls, before any host left its load balancer."""
    lb = FakeLB(store, all_registered())
    run = ip.InPlaceRun(store, lb)
    state = run.start(application="web", deployment_group="prod", hosts=list(HOSTS), host_states=None, revision=REV1,
                      appspec={}, config="CodeDeployDefault.OneAtATime", load_balancer={"target_group_arns": [TG]},
                      options={})
    lb.deployment_id = state["deployment_id"]
    assert state["hosts_read"] is False and state["stage_hosts"] == ["h1", "h2", "h3", "h4"]
    assert state["plan_preview"] == [["h1"], ["h2"], ["h3"], ["h4"]]  # nothing known yet: inventory order
    assert state["calls_needed"] == {}  # not known: a session started now runs BeforeBlockTraffic where it may be due
    state = run.staged(state, {h: ok(["DownloadBundle"]) for h in state["stage_hosts"]})
    old = {"deployment_id": "d-OLD", "revision": {"sha256": REV2["sha256"]}, "hook_events": ["BeforeBlockTraffic"]}
    state = run.read_hosts(state, {
        "h1": {"last_successful": {"deployment_id": "d-CUR", "revision": {"sha256": REV1["sha256"]}, "hook_events": []}},
        "h2": {"last_successful": old},
        "h3": {"last_successful": None},
        "h4": None,  # said nothing that is a state: counts as unhealthy, and is called for BeforeBlockTraffic
    })
    assert state["hosts_read"] is True
    assert state["plan_preview"] == [["h4"], ["h3"], ["h2"]]
    assert state["unstage"] == ["h1"] and state["staged"] == ["h2", "h3", "h4"] and state["stage_hosts"] == ["h2", "h3", "h4"]
    assert state["calls_needed"] == {"pre_block": ["h2", "h4"]}
    recorded = store.get(state["deployment_id"]).extra["inplace"]
    assert recorded["plan_preview"] == [["h4"], ["h3"], ["h2"]]
    assert recorded["load_balancer"] == {"target_group_arns": [TG]} and recorded["minimum"] == 3  # kept for recovery
    assert [c for c in lb.calls if c[0] == "block"] == []  # nobody left the load balancer
    state = drive(run, state)
    assert state["status"] == "Succeeded" and state["outcome"]["skipped"] == ["h1"]
    assert dc_batches(state) == [["h4"], ["h3"], ["h2"]]


def dc_batches(state: dict) -> list:
    """The batches the deployment ran, in order (the planner's own list)."""
    return state["planner"]["batches"]


def test_start_without_host_states_is_for_a_deployment_not_a_rollback(store):
    run = ip.InPlaceRun(store, FakeLB(store, all_registered()))
    with pytest.raises(ip.InPlaceError, match="a rollback reads its hosts before it starts"):
        run.start(application="web", deployment_group="prod", hosts=list(HOSTS), host_states=None, revision=REV1,
                  appspec={}, config=None, load_balancer={"target_group_arns": [TG]}, options={}, rollback_of="d-X")
    assert store.get_lock("web", "prod") is None


# ------------------------------------------------------------------------------------------------ control requests


def test_stop_request_finishes_the_batch_then_stops_and_with_rollback_asks_for_it(store):
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests as cr

    for rollback in (False, True):
        lb = FakeLB(store, all_registered())
        run, state = start(store, lb)

        def request(s, rollback=rollback):
            if s["batch_number"] == 2:  # sent while batch 2 runs: seen before batch 3 (written as submit would)
                store.add_request(s["deployment_id"], cr.ControlRequest(action="stop", options={"rollback": rollback}))

        state = drive(run, state, on_batch=request)
        assert state["status"] == "Stopped" and state["stop_cause"] == "request" and state["rollback_due"] is rollback
        record = store.get(state["deployment_id"])
        assert [h.status for h in record.hosts] == ["Succeeded", "Succeeded", "Skipped", "Skipped"]
        assert all(lb.groups_of(i) == [TG] for i in IDS.values()) and store.get_lock("web", "prod") is None
        assert "stopped on request" in record.error
        (done,) = store.list_requests(state["deployment_id"])
        assert done.state == "Done" and done.message.endswith("a rollback deployment follows") is rollback


def test_pause_that_is_never_resumed_stops_at_its_maximum(store):
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests as cr

    lb = FakeLB(store, all_registered())
    run, state = start(store, lb)
    pause = {}

    def request(s):
        if s["batch_number"] == 1 and not pause:
            pause["r"] = cr.submit(store, s["deployment_id"], "pause", max_pause=1)

    state = drive(run, state, on_batch=request)
    assert state["status"] == "Stopped" and state["rollback_due"] is False
    assert "maximum pause of 1 s reached" in store.get(state["deployment_id"]).error
    assert [h.status for h in store.get(state["deployment_id"]).hosts] == ["Succeeded", "Skipped", "Skipped", "Skipped"]
    (closed,) = store.list_requests(state["deployment_id"])
    assert closed.state == "Done" and "maximum pause" in closed.message
