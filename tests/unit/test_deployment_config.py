# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deployment configurations and the in-place batch planner: CodeDeploy's rules, example by example."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.config import (
    BatchPlanner,
    DeploymentConfig,
    DeploymentConfigError,
    HostInfo,
    minimum_healthy_count,
    order_hosts,
    plan_preview,
    resolve_config,
)


def fleet(count: int, prefix: str = "h", **kwargs) -> list[HostInfo]:
    kwargs.setdefault("healthy", True)
    kwargs.setdefault("revision", "old")
    return [HostInfo(f"{prefix}{i:02d}", **kwargs) for i in range(1, count + 1)]


def run(planner: BatchPlanner, failing: set[str] = frozenset(), roundtrip: bool = False) -> list[list[str]]:
    """Deploy batch after batch; hosts in `failing` fail. Returns the batches started."""
    planner.validate()
    batches = []
    while True:
        if roundtrip:
            planner = BatchPlanner.from_dict(json.loads(json.dumps(planner.to_dict())))
        batch = planner.next_batch()
        if not batch:
            break
        batches.append(batch)
        for name in batch:
            planner.record(name, name not in failing)
    run.planner = planner  # the (possibly reloaded) planner, for the caller's assertions
    return batches


# --------------------------------------------------------------------------------------------
# resolve_config


@pytest.mark.parametrize(
    "given_, name, mtype, value, one",
    [
        (None, "CodeDeployDefault.OneAtATime", "MOST_CONCURRENCY", 1, True),
        ("", "CodeDeployDefault.OneAtATime", "MOST_CONCURRENCY", 1, True),
        ("CodeDeployDefault.OneAtATime", "CodeDeployDefault.OneAtATime", "MOST_CONCURRENCY", 1, True),
        ("codedeploydefault.halfatatime", "CodeDeployDefault.HalfAtATime", "FLEET_PERCENT", 50, False),
        ("HalfAtATime", "CodeDeployDefault.HalfAtATime", "FLEET_PERCENT", 50, False),
        (" allatonce ", "CodeDeployDefault.AllAtOnce", "HOST_COUNT", 0, False),
        ("HOST_COUNT:2", "HOST_COUNT:2", "HOST_COUNT", 2, False),
        ("host_count : 7", "HOST_COUNT:7", "HOST_COUNT", 7, False),
        ("FLEET_PERCENT:75", "FLEET_PERCENT:75", "FLEET_PERCENT", 75, False),
        ("75%", "FLEET_PERCENT:75", "FLEET_PERCENT", 75, False),
        ("0%", "FLEET_PERCENT:0", "FLEET_PERCENT", 0, False),
        ({"minimum_healthy_hosts": {"type": "HOST_COUNT", "value": 3}}, "HOST_COUNT:3", "HOST_COUNT", 3, False),
        ({"minimumHealthyHosts": {"type": "fleet_percent", "value": "40"}}, "FLEET_PERCENT:40", "FLEET_PERCENT", 40, False),
        ({"MinimumHealthyHosts": {"Type": "FLEET_PERCENT", "Value": 99}}, "FLEET_PERCENT:99", "FLEET_PERCENT", 99, False),
    ],
)
def test_resolve_config_accepts(given_, name, mtype, value, one):
    cfg = resolve_config(given_)
    assert (cfg.name, cfg.minimum_type, cfg.minimum_value, cfg.one_at_a_time) == (name, mtype, value, one)
    # the canonical name is a scalar that resolves to the same configuration (AWX surveys, records)
    assert resolve_config(cfg.name) == cfg
    assert resolve_config(cfg) is cfg


@pytest.mark.parametrize(
    "given_, message",
    [
        (
            {"minimum_healthy_hosts": {"type": "FLEET_PERCENT", "value": 100}},
            "deployment_config.minimum_healthy_hosts.value: expected an integer from 0 to 99 for FLEET_PERCENT, got 100",
        ),
        (
            {"minimumHealthyHosts": {"type": "HOST_COUNT", "value": -1}},
            "deployment_config.minimumHealthyHosts.value: expected an integer >= 0 for HOST_COUNT, got -1",
        ),
        (
            {"minimum_healthy_hosts": {"type": "HOST_COUNT", "value": 1.5}},
            "deployment_config.minimum_healthy_hosts.value: expected an integer >= 0 for HOST_COUNT, got 1.5",
        ),
        (
            {"minimum_healthy_hosts": {"type": "HOST_COUNT", "value": True}},
            "deployment_config.minimum_healthy_hosts.value: expected an integer >= 0 for HOST_COUNT, got True",
        ),
        (
            {"minimum_healthy_hosts": {"type": "PERCENT", "value": 5}},
            "deployment_config.minimum_healthy_hosts.type: expected HOST_COUNT or FLEET_PERCENT, got 'PERCENT'",
        ),
        ({"minimum_healthy_hosts": {"type": "HOST_COUNT"}}, "deployment_config.minimum_healthy_hosts.value: required"),
        (
            {"minimum_healthy_hosts": {"type": "HOST_COUNT", "value": 1, "extra": 2}},
            "deployment_config.minimum_healthy_hosts: unknown key 'extra'",
        ),
        ({"minimum_healthy_hosts": 5}, "deployment_config.minimum_healthy_hosts: expected a mapping"),
        ({"minimum": 5}, "deployment_config: unknown key 'minimum'"),
        ({}, "deployment_config: expected exactly one of minimum_healthy_hosts / minimumHealthyHosts, got 0"),
        (
            {"minimum_healthy_hosts": {"type": "HOST_COUNT", "value": 1}, "minimumHealthyHosts": {"type": "HOST_COUNT", "value": 1}},
            "got 2 (minimum_healthy_hosts, minimumHealthyHosts)",
        ),
        (
            {"minimum_healthy_hosts": {"type": "MOST_CONCURRENCY", "value": 1}},
            "MOST_CONCURRENCY is what CodeDeploy reports for CodeDeployDefault.OneAtATime and cannot be set",
        ),
        ("FLEET_PERCENT:100", "deployment_config (value after ':'): expected an integer from 0 to 99 for FLEET_PERCENT, got '100'"),
        ("HOST_COUNT:two", "deployment_config (value after ':'): expected an integer >= 0 for HOST_COUNT, got 'two'"),
        ("HOSTS:2", "deployment_config (type before ':'): expected HOST_COUNT or FLEET_PERCENT, got 'HOSTS'"),
        ("150%", "deployment_config (percentage): expected an integer from 0 to 99 for FLEET_PERCENT, got '150'"),
        ("CodeDeployDefault.ThirdAtATime", "deployment_config: expected a predefined configuration name"),
        ("CodeDeployDefault.LambdaCanary10Percent5Minutes", "is a Lambda configuration"),
        ("CodeDeployDefault.ECSAllAtOnce", "is a ECS configuration"),
        (3, "deployment_config: expected a predefined configuration name"),
    ],
)
def test_resolve_config_errors_name_the_field(given_, message):
    with pytest.raises(DeploymentConfigError) as info:
        resolve_config(given_)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_resolve_config_uses_the_given_field_name():
    with pytest.raises(DeploymentConfigError, match=r"^inplace_deployment_config\.minimum_healthy_hosts\.value: "):
        resolve_config({"minimum_healthy_hosts": {"type": "FLEET_PERCENT", "value": "x"}}, field="inplace_deployment_config")


def test_config_to_dict_is_codedeploy_shaped():
    assert resolve_config("HalfAtATime").to_dict() == {
        "name": "CodeDeployDefault.HalfAtATime",
        "minimum_healthy_hosts": {"type": "FLEET_PERCENT", "value": 50},
    }


# --------------------------------------------------------------------------------------------
# minimum healthy count


@pytest.mark.parametrize(
    "config, hosts, minimum",
    [
        ("FLEET_PERCENT:95", 10, 10),  # 9.5 rounded up
        ("HalfAtATime", 9, 5),  # 4.5 rounded up
        ("HalfAtATime", 10, 5),
        ("HalfAtATime", 1, 1),
        ("FLEET_PERCENT:40", 9, 4),  # 3.6 rounded up (the API reference's example)
        ("FLEET_PERCENT:1", 1, 1),
        ("FLEET_PERCENT:0", 7, 0),
        ("FLEET_PERCENT:99", 100, 99),
        ("FLEET_PERCENT:99", 101, 100),
        ("HOST_COUNT:6", 9, 6),
        ("AllAtOnce", 10, 0),
        ("OneAtATime", 10, 9),
        ("OneAtATime", 1, 0),
        ("OneAtATime", 0, 0),
    ],
)
def test_minimum_healthy_count(config, hosts, minimum):
    assert minimum_healthy_count(resolve_config(config), hosts) == minimum


# --------------------------------------------------------------------------------------------
# the reference's examples (10 hosts: 95% -> fails at once; 9 -> one at a time; 8 -> two; 0 -> all)


def test_ten_hosts_at_95_percent_fail_before_touching_anything():
    planner = BatchPlanner("FLEET_PERCENT:95", fleet(10))
    assert planner.minimum == 10
    with pytest.raises(DeploymentConfigError, match="minimum 10 healthy of 10 hosts .*leaves no host to take out of service"):
        planner.validate()
    with pytest.raises(DeploymentConfigError):
        planner.next_batch()
    with pytest.raises(DeploymentConfigError):
        plan_preview("FLEET_PERCENT:95", fleet(10))
    assert planner.batches == []
    outcome = planner.outcome()
    assert outcome.status == "Failed" and "nothing was touched" in outcome.reason
    assert planner.should_stop() == outcome.reason


@pytest.mark.parametrize("config", ["HOST_COUNT:10", "HOST_COUNT:11", "FLEET_PERCENT:91"])
def test_any_minimum_that_leaves_no_room_fails_validation(config):
    with pytest.raises(DeploymentConfigError, match="leaves no host"):
        BatchPlanner(config, fleet(10)).validate()


def test_no_hosts_is_an_error():
    with pytest.raises(DeploymentConfigError, match="no hosts to deploy to"):
        BatchPlanner(None, []).validate()


@pytest.mark.parametrize(
    "config, sizes",
    [
        ("HOST_COUNT:9", [1] * 10),
        ("OneAtATime", [1] * 10),
        ("HOST_COUNT:8", [2] * 5),
        ("HOST_COUNT:7", [3, 3, 3, 1]),
        ("HOST_COUNT:0", [10]),
        ("AllAtOnce", [10]),
        ("HalfAtATime", [5, 5]),
        ("FLEET_PERCENT:91", None),
        ("FLEET_PERCENT:90", [1] * 10),
    ],
)
def test_ten_hosts_batch_sizes(config, sizes):
    hosts = fleet(10)
    if sizes is None:
        with pytest.raises(DeploymentConfigError):
            plan_preview(config, hosts)
        return
    batches = plan_preview(config, hosts)
    assert [len(b) for b in batches] == sizes
    assert [name for b in batches for name in b] == [h.name for h in hosts]


def test_nine_hosts_half_at_a_time_four_at_a_time_five_must_succeed():
    hosts = fleet(9)
    assert [len(b) for b in plan_preview("CodeDeployDefault.HalfAtATime", hosts)] == [4, 4, 1]

    # 4 failures in the first batch: 5 healthy left = the minimum, nothing more may go down -> stops, fails
    planner = BatchPlanner("HalfAtATime", hosts)
    assert planner.minimum == 5
    batches = run(planner, failing={"h01", "h02", "h03", "h04"})
    assert batches == [["h01", "h02", "h03", "h04"]]
    outcome = planner.outcome()
    assert outcome.status == "Failed"
    assert outcome.pending == ["h05", "h06", "h07", "h08", "h09"]
    assert "minimum of 5 healthy hosts can no longer be kept" in outcome.reason

    # 3 failures in the first batch: next batches shrink to healthy_now - minimum = 6 - 5 = 1
    planner = BatchPlanner("HalfAtATime", hosts)
    batches = run(planner, failing={"h01", "h02", "h03"})
    assert batches == [["h01", "h02", "h03", "h04"], ["h05"], ["h06"], ["h07"], ["h08"], ["h09"]]
    outcome = planner.outcome()
    assert outcome.status == "Succeeded", outcome.reason
    assert outcome.succeeded == ["h04", "h05", "h06", "h07", "h08", "h09"]
    assert outcome.failed == ["h01", "h02", "h03"]

    # exactly 5 successes is enough; 4 is not
    planner = BatchPlanner("HalfAtATime", hosts)
    run(planner, failing={"h01", "h02", "h03", "h09"})
    assert planner.outcome().status == "Succeeded"
    assert len(planner.outcome().succeeded) == 5
    planner = BatchPlanner("HalfAtATime", hosts)
    run(planner, failing={"h01", "h02", "h03", "h08", "h09"})
    assert planner.outcome().status == "Failed"


def test_host_count_six_of_nine_and_fleet_percent_forty_of_nine():
    # the API reference's examples: HOST_COUNT 6 -> 3 at a time; FLEET_PERCENT 40 -> 5 at a time, 4 must succeed
    assert [len(b) for b in plan_preview("HOST_COUNT:6", fleet(9))] == [3, 3, 3]
    assert [len(b) for b in plan_preview("FLEET_PERCENT:40", fleet(9))] == [5, 4]
    # 4 failures in the first batch: 5 healthy, one at a time from then on, 5 on the new revision
    planner = BatchPlanner("FLEET_PERCENT:40", fleet(9))
    batches = run(planner, failing={"h01", "h02", "h03", "h04"})
    assert [len(b) for b in batches] == [5, 1, 1, 1, 1]
    assert planner.outcome().status == "Succeeded"
    # the whole first batch fails: 4 healthy = the minimum, so nothing else may go down
    planner = BatchPlanner("FLEET_PERCENT:40", fleet(9))
    assert run(planner, failing={"h01", "h02", "h03", "h04", "h05"}) == [["h01", "h02", "h03", "h04", "h05"]]
    assert planner.outcome().status == "Failed"
    # one more failure later brings the healthy count to the minimum: stop
    planner = BatchPlanner("FLEET_PERCENT:40", fleet(9))
    assert run(planner, failing={"h01", "h02", "h03", "h04", "h06"})[-1] == ["h06"]
    assert planner.outcome().status == "Failed"
    assert planner.outcome().pending == ["h07", "h08", "h09"]


def test_all_at_once_needs_one_success():
    planner = BatchPlanner("AllAtOnce", fleet(5))
    batches = run(planner, failing={"h01", "h02", "h03", "h04"})
    assert batches == [["h01", "h02", "h03", "h04", "h05"]]
    assert planner.outcome().status == "Succeeded"
    planner = BatchPlanner("AllAtOnce", fleet(5))
    run(planner, failing={h.name for h in fleet(5)})
    outcome = planner.outcome()
    assert outcome.status == "Failed" and "at least one host must succeed" in outcome.reason


def test_one_host_one_at_a_time_must_succeed():
    planner = BatchPlanner("OneAtATime", fleet(1))
    assert planner.minimum == 0
    assert run(planner, failing={"h01"}) == [["h01"]]
    assert planner.outcome().status == "Failed"
    planner = BatchPlanner("OneAtATime", fleet(1))
    run(planner)
    assert planner.outcome().status == "Succeeded"


def test_one_host_half_at_a_time_cannot_start():
    # 50% of 1 rounded up is 1: CodeDeploy rejects the deployment too
    with pytest.raises(DeploymentConfigError, match="minimum 1 healthy of 1 host "):
        BatchPlanner("HalfAtATime", fleet(1)).validate()


def test_one_at_a_time_last_host_exception():
    hosts = fleet(10)
    planner = BatchPlanner("OneAtATime", hosts)
    batches = run(planner, failing={"h10"})
    assert len(batches) == 10
    outcome = planner.outcome()
    assert outcome.status == "Succeeded", outcome.reason
    assert outcome.failed == ["h10"] and len(outcome.succeeded) == 9


@pytest.mark.parametrize("bad", ["h01", "h05", "h09"])
def test_one_at_a_time_any_other_failure_stops_at_once(bad):
    planner = BatchPlanner("OneAtATime", fleet(10))
    batches = run(planner, failing={bad})
    assert batches[-1] == [bad]  # nothing started after the failure
    outcome = planner.outcome()
    assert outcome.status == "Failed"
    assert outcome.failed == [bad]
    index = int(bad[1:])
    assert outcome.pending == [f"h{i:02d}" for i in range(index + 1, 11)]


def test_one_at_a_time_last_deployed_host_counts_when_others_are_skipped():
    hosts = fleet(7) + [HostInfo(f"c{i}", healthy=True, revision="current", last_install_succeeded=True) for i in range(3)]
    planner = BatchPlanner("OneAtATime", hosts)
    run(planner, failing={"h07"})
    outcome = planner.outcome()
    assert outcome.status == "Succeeded"
    assert outcome.skipped == ["c0", "c1", "c2"]


# --------------------------------------------------------------------------------------------
# host order and skipping


def test_order_unhealthy_unknown_old_current_stable():
    hosts = [
        HostInfo("cur1", healthy=True, revision="current"),
        HostInfo("old1", healthy=None, revision="old"),
        HostInfo("unk1", healthy=True, revision="unknown"),
        HostInfo("bad1", healthy=False, revision="old"),
        HostInfo("old2", healthy=True, revision="old"),
        HostInfo("bad2", healthy=False, revision="current", last_install_succeeded=True),
        HostInfo("unk2", healthy=None, revision="unknown"),
        HostInfo("cur2", healthy=None, revision="current"),
    ]
    assert [h.name for h in order_hosts(hosts)] == ["bad1", "bad2", "unk1", "unk2", "old1", "old2", "cur1", "cur2"]


def test_hosts_already_on_the_revision_are_skipped_and_count_as_healthy():
    hosts = [
        HostInfo("done1", healthy=True, revision="current", last_install_succeeded=True),
        HostInfo("retry", healthy=True, revision="current", last_install_succeeded=False),
        HostInfo("old1", healthy=True, revision="old"),
        HostInfo("done2", healthy=None, revision="current", last_install_succeeded=True),
        HostInfo("sick", healthy=False, revision="current", last_install_succeeded=True),
    ]
    planner = BatchPlanner("HOST_COUNT:3", hosts)
    assert planner.skipped == ["done1", "done2"]
    # sick (unhealthy, even on the revision) first, then old, then the failed install of this revision
    batches = run(planner)
    assert batches == [["sick", "old1"], ["retry"]]
    outcome = planner.outcome()
    assert outcome.status == "Succeeded"
    assert outcome.skipped == ["done1", "done2"]
    assert sorted(outcome.succeeded) == ["old1", "retry", "sick"]


def test_everything_already_deployed_succeeds_without_batches():
    hosts = [HostInfo(f"c{i}", healthy=True, revision="current", last_install_succeeded=True) for i in range(4)]
    planner = BatchPlanner("HalfAtATime", hosts)
    assert run(planner) == []
    assert planner.outcome().status == "Succeeded"
    assert planner.outcome().skipped == [h.name for h in hosts]


# --------------------------------------------------------------------------------------------
# unhealthy hosts at the start


def test_unhealthy_hosts_go_first_and_do_not_reduce_the_healthy_count():
    # 10 hosts, 2 unhealthy, minimum 8 (two at a time): the unhealthy pair goes first although only 8 are
    # healthy; once they are back, two healthy hosts at a time
    hosts = fleet(8) + fleet(2, prefix="sick", healthy=False)
    planner = BatchPlanner("HOST_COUNT:8", hosts)
    assert planner.healthy_now() == 8
    batches = run(planner)
    assert batches[0] == ["sick01", "sick02"]
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2]


def test_unhealthy_hosts_that_fail_leave_no_room_for_healthy_ones():
    hosts = fleet(8) + fleet(2, prefix="sick", healthy=False)
    planner = BatchPlanner("HOST_COUNT:8", hosts)
    batches = run(planner, failing={"sick01"})
    # 9 hosts can be healthy at most: one healthy host at a time, never two
    assert batches[0] == ["sick01", "sick02"]
    assert all(len(b) == 1 for b in batches[1:])
    assert planner.outcome().status == "Succeeded"
    # both unhealthy hosts fail: at most 8 healthy = the minimum, no healthy host may go down
    planner = BatchPlanner("HOST_COUNT:8", hosts)
    batches = run(planner, failing={"sick01", "sick02"})
    assert batches == [["sick01", "sick02"]]
    outcome = planner.outcome()
    assert outcome.status == "Failed" and len(outcome.pending) == 8


def test_one_at_a_time_with_unhealthy_hosts_still_one_at_a_time():
    hosts = fleet(3, prefix="sick", healthy=False) + fleet(7)
    batches = plan_preview("OneAtATime", hosts)
    assert all(len(b) == 1 for b in batches)
    assert [b[0] for b in batches[:3]] == ["sick01", "sick02", "sick03"]


def test_never_starts_a_batch_that_would_break_the_minimum():
    # 6 hosts, minimum 4: batch of 2; one failure -> 5 healthy -> batches of 1
    planner = BatchPlanner("HOST_COUNT:4", fleet(6))
    assert planner.next_batch() == ["h01", "h02"]
    planner.record("h01", False)
    planner.record("h02", True)
    assert planner.healthy_now() == 5
    assert planner.next_batch() == ["h03"]
    planner.record("h03", False)
    # 4 healthy = minimum: stop rather than take h04 down
    assert planner.should_stop() is not None
    assert planner.next_batch() == []
    assert planner.outcome().status == "Failed"
    assert planner.outcome().pending == ["h04", "h05", "h06"]
    # once stopped, stays stopped
    assert planner.next_batch() == []


def test_outcome_reports_the_stop_even_if_next_batch_was_not_asked():
    # the orchestration may ask should_stop() and finish without calling next_batch()
    planner = BatchPlanner("OneAtATime", fleet(4))
    planner.next_batch()
    planner.record("h01", False)
    reason = planner.should_stop()
    assert reason and "h01" in reason
    restored = BatchPlanner.from_dict(planner.to_dict())
    assert restored.outcome().status == "Failed"
    assert restored.outcome().reason == reason
    assert restored.outcome().pending == ["h02", "h03", "h04"]


# --------------------------------------------------------------------------------------------
# the planner's protocol and persistence


def test_record_rejects_hosts_outside_the_batch():
    planner = BatchPlanner("HOST_COUNT:8", fleet(10))
    batch = planner.next_batch()
    assert batch == ["h01", "h02"]
    with pytest.raises(ValueError, match="not in the current batch"):
        planner.record("h03", True)
    with pytest.raises(ValueError, match="not a host of this deployment"):
        planner.record("nope", True)
    planner.record("h01", True)
    with pytest.raises(ValueError, match="already recorded"):
        planner.record("h01", True)
    # an unfinished batch is handed out again (a resumed orchestration redeploys it)
    assert planner.next_batch() == ["h02"]
    assert planner.outcome().status == "InProgress"
    assert planner.outcome().in_progress == ["h02"]


def test_duplicate_host_names_are_rejected():
    with pytest.raises(ValueError, match="listed twice"):
        BatchPlanner(None, [HostInfo("a"), HostInfo("a")])


def test_host_info_validation():
    with pytest.raises(ValueError, match="revision: expected one of unknown, old, current"):
        HostInfo("a", revision="new")
    with pytest.raises(ValueError, match="healthy"):
        HostInfo("a", healthy="yes")


def test_state_round_trips_through_json_mid_deployment():
    hosts = fleet(6) + [HostInfo("sick", healthy=False, revision="unknown")]
    planner = BatchPlanner("HalfAtATime", hosts)
    first = planner.next_batch()
    planner.record(first[0], False)
    state = json.loads(json.dumps(planner.to_dict()))
    restored = BatchPlanner.from_dict(state)
    assert restored.to_dict() == planner.to_dict()
    assert restored.config == planner.config and restored.minimum == planner.minimum
    assert restored.next_batch() == first[1:]
    assert restored.outcome().failed == [first[0]]


def test_whole_run_with_state_reloaded_before_every_batch_matches_plain_run():
    hosts = fleet(12)
    failing = {"h02", "h07"}
    plain = BatchPlanner("FLEET_PERCENT:60", hosts)
    plain_batches = run(plain, failing)
    reloaded_batches = run(BatchPlanner("FLEET_PERCENT:60", hosts), failing, roundtrip=True)
    assert reloaded_batches == plain_batches
    assert run.planner.outcome() == plain.outcome()


def test_from_dict_rejects_bad_state():
    state = BatchPlanner("HalfAtATime", fleet(4)).to_dict()
    with pytest.raises(ValueError, match="version"):
        BatchPlanner.from_dict({**state, "version": 99})
    with pytest.raises(ValueError, match="unknown host 'zz'"):
        BatchPlanner.from_dict({**state, "failed": ["zz"]})
    with pytest.raises(ValueError, match="minimum 3 does not match"):
        BatchPlanner.from_dict({**state, "minimum": 3})


def test_plan_preview_lists_batches_in_order_without_skipped_hosts():
    hosts = [
        HostInfo("c1", healthy=True, revision="current", last_install_succeeded=True),
        HostInfo("o1", healthy=True, revision="old"),
        HostInfo("u1", healthy=None, revision="unknown"),
        HostInfo("o2", healthy=True, revision="old"),
        HostInfo("x1", healthy=False, revision="old"),
    ]
    assert plan_preview("HOST_COUNT:3", hosts) == [["x1", "u1"], ["o1", "o2"]]


# --------------------------------------------------------------------------------------------
# properties: random fleets, configurations and failures


configs = st.one_of(
    st.sampled_from(["CodeDeployDefault.OneAtATime", "CodeDeployDefault.HalfAtATime", "CodeDeployDefault.AllAtOnce"]),
    st.integers(0, 70).map(lambda n: f"HOST_COUNT:{n}"),
    st.integers(0, 99).map(lambda n: f"FLEET_PERCENT:{n}"),
)


@st.composite
def scenarios(draw):
    count = draw(st.integers(1, 60))
    hosts = [
        HostInfo(
            f"host{i}",
            healthy=draw(st.sampled_from([True, True, True, None, False])),
            revision=draw(st.sampled_from(["unknown", "old", "old", "current"])),
            last_install_succeeded=draw(st.booleans()),
        )
        for i in range(count)
    ]
    failing = {h.name for h in hosts if draw(st.floats(0, 1)) < draw(st.sampled_from([0.0, 0.05, 0.3, 0.8]))}
    return draw(configs), hosts, failing, draw(st.booleans())


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_schedules_respect_the_minimum_and_outcome_rules(scenario):
    config, hosts, failing, roundtrip = scenario
    total = len(hosts)
    cfg = resolve_config(config)
    if cfg.one_at_a_time:
        minimum = total - 1
    elif cfg.minimum_type == "FLEET_PERCENT":
        minimum = -(-total * cfg.minimum_value // 100)
    else:
        minimum = cfg.minimum_value
    planner = BatchPlanner(config, hosts)
    assert planner.minimum == minimum

    if minimum >= total:
        with pytest.raises(DeploymentConfigError):
            planner.validate()
        with pytest.raises(DeploymentConfigError):
            planner.next_batch()
        assert planner.outcome().status == "Failed"
        return

    by_name = {h.name: h for h in hosts}
    skipped = {h.name for h in hosts if h.revision == "current" and h.last_install_succeeded and h.healthy is not False}
    deployable = [h.name for h in order_hosts(hosts) if h.name not in skipped]
    succeeded: list[str] = []
    failed: list[str] = []
    deployed: list[str] = []
    while True:
        if roundtrip:
            planner = BatchPlanner.from_dict(json.loads(json.dumps(planner.to_dict())))
        batch = planner.next_batch()
        if not batch:
            break
        # healthy now, computed independently: untouched hosts not known unhealthy, plus hosts on the new revision
        untouched = set(deployable) - set(deployed)
        healthy_now = sum(1 for n in untouched if by_name[n].healthy is not False) + len(succeeded) + len(skipped)
        healthy_in_batch = sum(1 for n in batch if by_name[n].healthy is not False)
        # no schedule takes more hosts down than allowed (broken hosts count as down)
        if healthy_in_batch:
            assert healthy_now - healthy_in_batch >= minimum, (batch, healthy_now, minimum)
        assert len(batch) <= total - minimum
        # every host at most once, never a skipped host, always in deployment order
        assert not set(batch) & set(deployed)
        assert not set(batch) & skipped
        deployed.extend(batch)
        assert deployed == deployable[: len(deployed)]
        for name in batch:
            ok = name not in failing
            (succeeded if ok else failed).append(name)
            planner.record(name, ok)

    outcome = planner.outcome()
    on_new = len(succeeded) + len(skipped)
    required = max(minimum, 1)
    assert outcome.status in ("Succeeded", "Failed")
    assert sorted(outcome.succeeded) == sorted(succeeded)
    assert sorted(outcome.failed) == sorted(failed)
    assert sorted(outcome.skipped) == sorted(skipped)
    assert outcome.pending == deployable[len(deployed):]
    if outcome.status == "Succeeded":
        assert on_new >= required
        assert outcome.pending == []  # every host was deployed or skipped
    else:
        assert outcome.reason
        if not outcome.pending:
            assert on_new < required
        else:
            # it stopped only because the minimum could not be kept or success was out of reach
            capacity = total - len(failed)
            assert capacity <= minimum or on_new + len(outcome.pending) < required, outcome.reason
    # the first batch of an all-healthy fleet is as large as the configuration allows
    if all(h.healthy is not False for h in hosts) and deployable:
        assert len(planner.batches[0]) == min(total - minimum, len(deployable))


@settings(max_examples=150, deadline=None, database=None)
@given(st.integers(2, 60), st.data())
def test_property_one_at_a_time_succeeds_iff_only_the_last_host_may_fail(count, data):
    hosts = fleet(count)
    failing = set(data.draw(st.lists(st.sampled_from([h.name for h in hosts]), max_size=3)))
    planner = BatchPlanner("OneAtATime", hosts)
    batches = run(planner, failing)
    last = hosts[-1].name
    expected = "Succeeded" if failing <= {last} else "Failed"
    assert planner.outcome().status == expected
    assert all(len(b) == 1 for b in batches)
    if failing - {last}:
        first_failure = min(failing - {last})
        assert batches[-1] == [first_failure]


@settings(max_examples=100, deadline=None, database=None)
@given(st.integers(1, 60), st.integers(0, 99))
def test_property_percentage_rounds_up(count, percent):
    minimum = minimum_healthy_count(DeploymentConfig(f"FLEET_PERCENT:{percent}", "FLEET_PERCENT", percent), count)
    assert minimum * 100 >= count * percent
    assert (minimum - 1) * 100 < count * percent
