# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 4: in-place rolling deployments end to end, through ``ansible-playbook rollwright.deploy.inplace``.

One 6-host world (SSH hosts in namespaces + the session's AWS emulator) serves the module. Every test
resets the hosts (sample app stopped, deployment state removed), makes its own target groups / classic
ELBs (draining 1 s, `initial` 1 s) and its own application, and records to its own SQLite file
(XDG_STATE_HOME). A monitor thread samples the load balancer's healthy count every 100 ms while a
deployment runs; hosts are checked over HTTP from the root namespace (what the app serves) and through
nsenter (what is installed), never through rollwright code.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import format_time, parse_time
from tests.bundles import build_bundle
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

PLAYBOOK = "rollwright.deploy.inplace"
BATCH_PLAY = "In-place rolling deployment - batches"
SKIP_TASK = "Skip the remaining batches once the deployment is done"
BATCH_TASK = "rollwright.deploy.inplace : Deploy the next batch (BlockTraffic, lifecycle events, AllowTraffic)"
N_HOSTS = 6


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 6-host world on the session's emulator, shared by this module."""
    with H.fleet_world(aws, tmp_path_factory, N_HOSTS, "inplace-world") as made:
        yield made


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("inplace-bundles")
    return {v: build_bundle(v, out) for v in ("v1", "v2")}


class Deployer:
    """Runs the playbook for one test: its own application, deployment group and record store."""

    def __init__(self, world: Any, ansible_run: Any, state_dir: Path, app: str) -> None:
        self.world, self.ansible_run, self.state_dir, self.app = world, ansible_run, state_dir, app

    def names(self, n: int) -> list[str]:
        return [h.name for h in self.world.hosts[:n]]

    def host(self, name: str) -> Any:
        return next(h for h in self.world.hosts if h.name == name)

    def run(self, hosts: list[str], bundle: Path, config: str = "CodeDeployDefault.OneAtATime", tgs: tuple = (),
            clbs: tuple = (), timeout: float = 240, **extra: Any) -> Any:
        extra_vars = {
            "rollwright_hosts": ":".join(hosts),
            "rollwright_application": self.app,
            "rollwright_deployment_group": "g",
            "rollwright_revision": str(bundle),
            "rollwright_deployment_config": config,
            "rollwright_target_group_arns": ",".join(tgs),
            "rollwright_classic_elb_names": ",".join(clbs),
            "rollwright_file_exists_behavior": "OVERWRITE",
            "rollwright_healthy_timeout": 30,
            **extra,
        }
        return self.ansible_run(PLAYBOOK, self.world.inventory, extra_vars=extra_vars, timeout=timeout,
                                env={"XDG_STATE_HOME": str(self.state_dir)})

    def record(self, deployment_id: str) -> dict[str, Any]:
        store = open_store("sqlite", {"path": str(self.state_dir / "rollwright" / "deployments.sqlite3")})
        return store.get(deployment_id).to_dict()

    def versions(self, hosts: list[str]) -> dict[str, tuple]:
        """host -> (what the app serves, what is installed)."""
        return {n: (H.served(self.host(n).address), H.installed(self.world, n)) for n in hosts}


@pytest.fixture
def deployer(world: Any, ansible_run: Any, tmp_path: Path, request: Any) -> Deployer:
    for h in world.hosts:  # a previous test may have stopped one
        if not world.fleet.sshd_pids(h.name):
            world.fleet.start_sshd(h.name)
    H.reset_hosts(world)
    app = "ip-" + request.node.name.split("[")[0].replace("test_", "")[:20].replace("_", "-")
    return Deployer(world, ansible_run, tmp_path, app)


def _ids(d: Deployer, hosts: list[str]) -> list[str]:
    return [d.host(n).instance_id for n in hosts]


def _at(stamp: str) -> float:
    return parse_time(stamp).timestamp()


def _assert_all_new(d: Deployer, hosts: list[str], version: str) -> None:
    expected = f"sample-app {version}"
    assert d.versions(hosts) == {n: (expected, expected) for n in hosts}


# ----------------------------------------------------------------------------------------------
# configurations: minimum healthy respected at the load balancer, every host ends new and healthy
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config,n_hosts,batches,low", [
    ("CodeDeployDefault.OneAtATime", 4, 4, 3),
    ("CodeDeployDefault.HalfAtATime", 4, 2, 2),
    ("CodeDeployDefault.AllAtOnce", 4, 1, 0),
    ("HOST_COUNT:2", 5, 2, 2),
])
def test_alb_configurations(deployer: Deployer, bundles: dict, config: str, n_hosts: int, batches: int, low: int) -> None:
    d = deployer
    hosts = d.names(n_hosts)
    arn = H.create_target_group(d.world, _ids(d, hosts))
    with H.HealthMonitor(d.world, target_group_arn=arn) as mon:
        result = d.run(hosts, bundles["v2"], config=config, tgs=(arn,))
    assert result.rc == 0, result
    assert not mon.errors, mon.errors
    assert len(mon.samples) > 20
    # Never below the configuration's minimum, and it did drop: exactly by the largest batch.
    assert mon.minimum == low, mon.samples
    assert mon.counts[0] == n_hosts and mon.counts[-1] == n_hosts, mon.samples

    fact = H.deployment_fact(result)
    assert fact["status"] == "Succeeded" and fact["error"] is None
    assert fact["config"] == config
    assert fact["batches"] == batches and len(fact["batch_times"]) == batches
    assert {h["name"]: h["status"] for h in fact["hosts"]} == {n: "Succeeded" for n in hosts}
    for h in fact["hosts"]:
        assert {"BlockTraffic", "ValidateService", "AllowTraffic", "AfterAllowTraffic"} <= set(h["event_durations"])

    _assert_all_new(d, hosts, "v2")
    states = H.tg_states(d.world, arn)
    assert states == {(i, H.APP_PORT): "healthy" for i in _ids(d, hosts)}

    record = d.record(fact["deployment_id"])
    assert record["status"] == "Succeeded"
    for host in record["hosts"]:
        assert host["lb_membership"] == [{"kind": "elbv2", "target_group_arn": arn, "target_id": host["instance_id"],
                                          "port": H.APP_PORT, "availability_zone": None}]
        assert host["lb_restored"] is True
        # No previous revision (hosts reset): BeforeBlockTraffic recorded without a call to the host.
        assert next(e for e in host["events"] if e["name"] == "BeforeBlockTraffic")["status"] == "Skipped"

    # A batch costs what it contains: each batch of the serial play is one task, run once, whatever the
    # fleet; it called its own hosts (and no other) itself. Each batch but the last hands its hosts, registered
    # again, over to the next batch's task: that task waits until they are healthy and runs their AfterAllowTraffic
    # before its own hosts leave.
    batch_plays = [p for p in result.plays if p["play"]["name"] == BATCH_PLAY]
    assert len(batch_plays) == batches
    sizes, called, after_allow = [], [], []
    previous = None
    for number, play in enumerate(batch_plays, start=1):
        assert [t["task"]["name"] for t in play["tasks"]] == [SKIP_TASK, BATCH_TASK], play["tasks"]
        (batch_result,) = play["tasks"][-1]["hosts"].values()
        calls = batch_result["host_results"]
        # Two host round trips per batch host: BeforeBlockTraffic has no script to run on a first deployment.
        assert sorted(calls) == (["main"] if batches > 1 and number == 1 else ["main", "post_allow"]), calls
        own, took = sorted(calls["main"]), sorted(calls.get("post_allow", {}))
        assert took == sorted((previous or []) + (own if number == batches else [])), (number, calls)
        handed, taken = batch_result.get("handed_over"), batch_result.get("took_over")
        assert handed == (None if number == batches else {"batch_number": number, "hosts": ANY, "time": ANY}), handed
        assert taken == (None if number == 1 else {"batch_number": number - 1, "hosts": ANY}), taken
        if handed:
            assert sorted(handed["hosts"]) == own
        if taken:
            assert sorted(taken["hosts"]) == previous
        previous = own
        sizes.append(len(own))
        called.extend(own)
        after_allow.extend(took)
    assert sum(sizes) == n_hosts and max(sizes) == n_hosts - low, sizes
    assert sorted(called) == sorted(after_allow) == sorted(hosts), (called, after_allow)
    # The minimum-healthy rule across the hand-over: a batch's hosts start leaving only once the batch before has
    # run its AfterAllowTraffic.
    events = {h["name"]: {e["name"]: e for e in h["events"]} for h in record["hosts"]}
    order = [sorted(next(iter(p["tasks"][-1]["hosts"].values()))["host_results"]["main"]) for p in batch_plays]
    for earlier, later in zip(order, order[1:]):
        done = max(events[h]["AfterAllowTraffic"]["end_time"] for h in earlier)
        assert all(events[h]["BlockTraffic"]["start_time"] > done for h in later), (earlier, later)


def _lifecycle_calls(result: Any, call: str) -> Counter:
    """Hosts the batch tasks called for `call` (pre_block, main, post_allow: a round trip each), with how often."""
    return Counter(h for t in result.tasks() if t["name"] == BATCH_TASK for r in t["hosts"].values()
                   for h in (r.get("host_results") or {}).get(call, {}))


def test_host_round_trips_follow_the_appspecs(deployer: Deployer, bundles: dict, tmp_path: Path) -> None:
    """The BeforeBlockTraffic call is made only where the host's last successful revision has scripts for it."""
    d = deployer
    hosts = d.names(2)
    arn = H.create_target_group(d.world, _ids(d, hosts))
    without = build_bundle("nobbt", tmp_path, edit_appspec=lambda text: text.replace(
        "  BeforeBlockTraffic:\n    - location: scripts/record_event.sh\n", ""))
    pre_block, main, post_allow = "pre_block", "main", "post_allow"
    runs = {}
    for version, bundle in (("nobbt", without), ("v2", bundles["v2"]), ("v1", bundles["v1"])):
        result = d.run(hosts, bundle, config="CodeDeployDefault.AllAtOnce", tgs=(arn,))
        assert result.rc == 0, result
        runs[version] = result
        assert _lifecycle_calls(result, main) == _lifecycle_calls(result, post_allow) == {h: 1 for h in hosts}
        _assert_all_new(d, hosts, version)
    # First deployment and over a revision without BeforeBlockTraffic scripts: two round trips per host.
    assert not _lifecycle_calls(runs["nobbt"], pre_block) and not _lifecycle_calls(runs["v2"], pre_block)
    # Over v2, whose appspec has BeforeBlockTraffic scripts: the host runs them (three round trips).
    assert _lifecycle_calls(runs["v1"], pre_block) == {h: 1 for h in hosts}
    for version, status, message in (("v2", "Succeeded", "no scripts for this event"), ("v1", "Succeeded", None)):
        record = d.record(H.deployment_fact(runs[version])["deployment_id"])
        for host in record["hosts"]:
            event = next(e for e in host["events"] if e["name"] == "BeforeBlockTraffic")
            assert event["status"] == status, event
            if message:
                assert event["message"] == message and not event["scripts"], event
            else:
                assert [s["location"] for s in event["scripts"]] == ["scripts/record_event.sh"], event


def _events_log(d: Deployer, host: str, deployment_id: str) -> list[str]:
    """The hook scripts that ran on the host for the deployment, in order: 'event revision' (the sample app's log)."""
    proc = d.world.fleet.exec(host, ["cat", "/var/log/rollwright/events.log"], check=False)
    return [" ".join(line.split()[0:3:2]) for line in proc.stdout.splitlines() if f" {deployment_id} " in line]


def _session_dirs(d: Deployer, host: str, deployment_id: str) -> list[str]:
    """The host session directories the deployment left on the host, each with what it holds."""
    root = f"/var/lib/rollwright/{d.app}/g/deployments/{deployment_id}/sessions"
    proc = d.world.fleet.exec(host, ["sh", "-c", f"cd {root} 2>/dev/null && for s in *; do "
                                     f"[ -d \"$s\" ] && echo \"$s $(stat -c %a \"$s\") $(ls \"$s\" | tr '\\n' ' ')\"; done"],
                              check=False)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def _mtime(d: Deployer, host: str, path: str) -> str:
    """A file's modification time on the host, in the record's time format (UTC, microseconds, Z)."""
    seconds = d.world.fleet.exec(host, ["python3", "-c", f"import os; print(os.stat({path!r}).st_mtime)"]).stdout
    return format_time(datetime.datetime.fromtimestamp(float(seconds), datetime.timezone.utc))


def test_host_sessions_run_what_separate_calls_run_once_per_host_and_batch(deployer: Deployer, bundles: dict) -> None:
    """A host session per host and batch (the default) runs the same scripts, in the same order, with the same
    record, as a module call per group (rollwright_host_sessions: false); each session ends done, sealed."""
    d = deployer
    hosts = d.names(2)
    arn = H.create_target_group(d.world, _ids(d, hosts))
    runs, outputs, batch_results = {}, {}, {}
    for label, bundle, extra in (("first", bundles["v1"], {}), ("sessions", bundles["v2"], {}),
                                 ("calls", bundles["v1"], {"rollwright_host_sessions": False})):
        result = d.run(hosts, bundle, tgs=(arn,), **extra)
        assert result.rc == 0, result
        runs[label] = H.deployment_fact(result)
        outputs[label] = result.stdout
        batch_results[label] = [r for t in result.tasks() if t["name"] == BATCH_TASK for r in t["hosts"].values()]
    with_sessions, without = runs["sessions"]["deployment_id"], runs["calls"]["deployment_id"]
    for host in hosts:
        # v2 over v1 and v1 over v2: the previous revision's stop scripts, then the new one's, all of them.
        expected = ["BeforeBlockTraffic {old}", "AfterBlockTraffic {old}", "ApplicationStop {old}", "BeforeInstall {new}",
                    "AfterInstall {new}", "ApplicationStart {new}", "ValidateService {new}", "BeforeAllowTraffic {new}",
                    "AfterAllowTraffic {new}"]
        assert _events_log(d, host, with_sessions) == [e.format(old="v1", new="v2") for e in expected]
        assert _events_log(d, host, without) == [e.format(old="v2", new="v1") for e in expected]
        sessions = _session_dirs(d, host, with_sessions)
        assert len(sessions) == 1 and sessions[0].split()[1] == "700", sessions  # one batch: one session, sealed
        held = [name for name in sessions[0].split()[2:] if name != "alive"]  # alive: only after a 20 s wait
        # a gate before each group, each group's result, the detached engine's own result, and the two wake-up pipes
        assert held == ["done", "final.json", "go-0", "go-1", "go-2", "pid", "ready", "result-0.json", "result-1.json",
                        "result-2.json", "wake"], sessions
        assert _session_dirs(d, host, without) == []
    # Every batch took over sessions started ahead: batch 1's by the staging call of its host (one engine run for
    # both), batch 2's by batch 1.
    for batch in (1, 2):
        assert f"rollwright: batch {batch}: host sessions started ahead on 1 of 1 host(s)" in outputs["sessions"]
    assert "started ahead" not in outputs["calls"]
    # One at a time: batch 1 started the second host's session while its own host became healthy again (the
    # controller's time, between the record's AllowTraffic start and end; the engine itself may take longer to come
    # up on a loaded machine); that session waited at gate 0 and ran nothing (BeforeBlockTraffic included) until
    # batch 1 was over.
    first, second = hosts
    assert [s.split()[0][:3] for s in _session_dirs(d, first, with_sessions)] == ["b1-"]
    (ahead,) = _session_dirs(d, second, with_sessions)
    assert ahead.startswith("b2-"), ahead
    assert [r.get("started_ahead") for r in batch_results["sessions"]] == [
        [{"batch_number": 2, "hosts": [second], "time": ANY}], None], batch_results["sessions"]
    started = batch_results["sessions"][0]["started_ahead"][0]["time"]
    record = {h["name"]: {e["name"]: e for e in h["events"]} for h in d.record(with_sessions)["hosts"]}
    assert record[first]["AllowTraffic"]["start_time"] <= started < record[first]["AllowTraffic"]["end_time"], started
    engine_up = _mtime(d, second, f"/var/lib/rollwright/{d.app}/g/deployments/{with_sessions}/sessions/"
                                  f"{ahead.split()[0]}/pid")
    assert started < engine_up < record[second]["BeforeBlockTraffic"]["start_time"]
    assert record[second]["BeforeBlockTraffic"]["start_time"] > record[first]["AfterAllowTraffic"]["end_time"]
    assert not any(r.get("started_ahead") for r in batch_results["calls"]), batch_results["calls"]
    shapes = {}
    for label in ("sessions", "calls"):
        record = d.record(runs[label]["deployment_id"])
        shapes[label] = {h["name"]: (h["status"], [(e["name"], e["status"], [s["location"] for s in e.get("scripts") or []])
                                                   for e in h["events"]]) for h in record["hosts"]}
    assert shapes["sessions"] == shapes["calls"]
    assert {status for status, _events in shapes["sessions"].values()} == {"Succeeded"}
    _assert_all_new(d, hosts, "v1")
    assert H.tg_states(d.world, arn) == {(i, H.APP_PORT): "healthy" for i in _ids(d, hosts)}


@pytest.mark.parametrize("sessions", [True, False], ids=["host-sessions", "a-call-per-group"])
def test_each_host_goes_back_as_its_own_validate_service_passes(
        deployer: Deployer, tmp_path: Path, sessions: bool) -> None:
    """Half at a time, one host of a batch slow in ValidateService: the other host of its batch is registered again
    and healthy while the slow one still validates (CodeDeploy's per-instance AllowTraffic), so it is out of service
    for its own hooks, not its batch's slowest; the slow one follows, and the minimum healthy holds throughout."""
    d = deployer
    hosts = d.names(4)
    slow_hook = "#!/bin/sh\n[ -f /srv/slow-validate ] && sleep 5\nexit 0\n"
    slow_step = "  ValidateService:\n    - location: scripts/slow_validate.sh\n      timeout: 30\n"
    bundle = build_bundle("v2", tmp_path, extra_files={"scripts/slow_validate.sh": slow_hook},
                          edit_appspec=lambda text: text.replace("  ValidateService:\n", slow_step))
    ids = dict(zip(hosts, _ids(d, hosts)))
    arn = H.create_target_group(d.world, list(ids.values()))
    slow = hosts[1]
    d.world.fleet.exec(slow, ["sh", "-c", "mkdir -p /srv && touch /srv/slow-validate"])
    samples: list = []  # (seconds, {host: state}) every 0.1 s
    stop = threading.Event()

    def sample() -> None:
        client, began = d.world.client("elbv2"), time.monotonic()
        while not stop.is_set():
            states = {tid: state for (tid, _port), state in H.tg_states(d.world, arn, client).items()}
            samples.append((time.monotonic() - began, {n: states.get(i, "unused") for n, i in ids.items()}))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        sampler.start()
        result = d.run(hosts, bundle, config="CodeDeployDefault.HalfAtATime", tgs=(arn,),
                       rollwright_host_sessions=sessions)
    finally:
        stop.set()
        sampler.join(10)
        d.world.fleet.exec(slow, ["rm", "-f", "/srv/slow-validate"])
    assert result.rc == 0, result
    fact = H.deployment_fact(result)
    events = {h["name"]: {e["name"]: e for e in h["events"]} for h in d.record(fact["deployment_id"])["hosts"]}
    # the slow host's batch: the hosts that left the load balancer with it
    (fast,) = [h for h in hosts if h != slow and
               events[h]["BlockTraffic"]["start_time"] == events[slow]["BlockTraffic"]["start_time"]]
    # the fast host was put back seconds before the slow one's ValidateService ended
    went_back = _at(events[fast]["AllowTraffic"]["start_time"])
    assert went_back < _at(events[slow]["ValidateService"]["end_time"]) - 3, (events[fast], events[slow])
    assert went_back >= _at(events[fast]["ValidateService"]["end_time"])
    # and the load balancer had it healthy while the slow one was still out
    assert any(s[fast] == "healthy" and s[slow] != "healthy" and sum(v == "healthy" for v in s.values()) == 3
               for _t, s in samples), samples
    assert min(sum(v == "healthy" for v in s.values()) for _t, s in samples) >= 2, samples
    assert {h["status"] for h in fact["hosts"]} == {"Succeeded"}
    assert H.tg_states(d.world, arn) == {(i, H.APP_PORT): "healthy" for i in ids.values()}


def test_the_groups_next_deployment_starts_with_the_registration_time_learnt_before(
        deployer: Deployer, bundles: dict) -> None:
    """A successful deployment keeps in its record how long its hosts took to become healthy after registration;
    the group's next deployment starts with it, so its first batch's wait is as close as its later ones."""
    d = deployer
    hosts = d.names(2)
    # A registration longer than Ansible's move from one batch task to the next, even on a loaded machine: the first
    # batch's wait runs in the second batch's task (handed over), and learns only if it still sees a target initial.
    arn = H.create_target_group(d.world, _ids(d, hosts), registration_seconds=5)
    learnt_wait = "to become healthy (registration as long as before)"
    first = d.run(hosts, bundles["v2"], tgs=(arn,))
    assert first.rc == 0, first
    fact = H.deployment_fact(first)
    timing = d.record(fact["deployment_id"])["extra"]["inplace"]["load_balancer_learnt"]["elbv2"]["registration"][arn]
    assert 0 < timing["registering_until"] <= timing["healthy_by"] < 30, timing
    # only the second batch's wait knew the time; the first had nothing learnt
    assert first.stdout.count(learnt_wait) == 1, first.stdout
    second = d.run(hosts, bundles["v1"], tgs=(arn,))
    assert second.rc == 0, second
    # both batches, the first one too (its wait may find the time due already: the first batch hands its wait over
    # to the second batch's task, and on a loaded machine the move can outlast the learnt quiet time)
    assert second.stdout.count(learnt_wait) == 2, second.stdout
    assert H.tg_states(d.world, arn) == {(i, H.APP_PORT): "healthy" for i in _ids(d, hosts)}


def test_batches_in_one_task_deploy_as_the_serial_play_does(deployer: Deployer, bundles: dict) -> None:
    """rollwright_batches_in_one_task: the same four one-at-a-time batches, minimum healthy held at the load balancer,
    each next batch's session started ahead, in one task of the batches play instead of one per batch."""
    d = deployer
    hosts = d.names(4)
    arn = H.create_target_group(d.world, _ids(d, hosts))
    with H.HealthMonitor(d.world, target_group_arn=arn) as mon:
        result = d.run(hosts, bundles["v2"], tgs=(arn,), rollwright_batches_in_one_task=True)
    assert result.rc == 0, result
    assert not mon.errors, mon.errors
    assert mon.minimum == 3 and mon.counts[0] == mon.counts[-1] == 4, mon.samples
    fact = H.deployment_fact(result)
    assert fact["status"] == "Succeeded" and fact["batches"] == 4 and len(fact["batch_times"]) == 4, H.dumps(fact)
    (play,) = [p for p in result.plays if p["play"]["name"] == BATCH_PLAY]  # one play batch, one task
    assert [t["task"]["name"] for t in play["tasks"]] == [SKIP_TASK, BATCH_TASK], play["tasks"]
    (batch_result,) = play["tasks"][-1]["hosts"].values()
    assert len(batch_result["batch_seconds"]) == 4, batch_result["batch_seconds"]
    for phase in ("block", "main", "allow"):
        spent = [b[phase] for b in batch_result["batch_seconds"]]
        assert min(spent) > 0 and abs(batch_result["seconds"][phase] - sum(spent)) < 0.01, (phase, batch_result)
    assert sorted(batch_result["host_results"]["main"]) == sorted(hosts), batch_result["host_results"]
    assert [a["batch_number"] for a in batch_result["started_ahead"]] == [2, 3, 4], batch_result["started_ahead"]
    for batch in range(1, 5):
        assert f"rollwright: batch {batch}: host sessions started ahead on 1 of 1 host(s)" in result.stdout
    # one host at a time, in the planned order: each host left its load balancer after the one before was back
    # and had run AfterAllowTraffic
    record = d.record(fact["deployment_id"])
    events = {h["name"]: {e["name"]: e for e in h["events"]} for h in record["hosts"]}
    order = [h for batch in fact["plan_preview"] for h in batch] if fact.get("plan_preview") else hosts
    for before, after in zip(order, order[1:]):
        assert events[after]["BlockTraffic"]["start_time"] > events[before]["AfterAllowTraffic"]["end_time"], (before, after)
    assert {h["status"] for h in record["hosts"]} == {"Succeeded"}
    _assert_all_new(d, hosts, "v2")
    assert H.tg_states(d.world, arn) == {(i, H.APP_PORT): "healthy" for i in _ids(d, hosts)}


def test_batches_in_one_task_from_a_users_playbook_stop_at_the_failed_batch(deployer: Deployer, bundles: dict) -> None:
    """The role included in a user's own play, all batches in one task: ValidateService fails on the second host,
    the deployment fails there (host kept out, recorded), and the hosts after it are never touched."""
    d = deployer
    hosts = d.names(4)
    assert d.run(hosts, bundles["v1"], config="CodeDeployDefault.AllAtOnce").rc == 0  # the old version, no LB
    arn = H.create_target_group(d.world, _ids(d, hosts))
    H.fail_validate(d.world, hosts[1])
    play = [{"name": "A user's play", "hosts": ":".join(hosts), "gather_facts": False,
             "tasks": [{"name": "Deploy", "ansible.builtin.include_role": {"name": "rollwright.deploy.inplace"}}]}]
    extra_vars = {"rollwright_hosts": ":".join(hosts), "rollwright_application": d.app, "rollwright_deployment_group": "g",
                  "rollwright_revision": str(bundles["v2"]), "rollwright_target_group_arns": arn,
                  "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30,
                  "rollwright_batches_in_one_task": True}
    with H.HealthMonitor(d.world, target_group_arn=arn) as mon:
        result = d.ansible_run(play, d.world.inventory, extra_vars=extra_vars, timeout=240,
                               env={"XDG_STATE_HOME": str(d.state_dir)})
    assert result.rc != 0, result
    assert mon.minimum == 3, mon.samples
    batch_tasks = [t for t in result.tasks() if t["name"] == BATCH_TASK and any(
        not r.get("skipped") for r in t["hosts"].values())]
    assert len(batch_tasks) == 1, [t["name"] for t in result.tasks()]  # every batch in that one task
    fact = H.deployment_fact(result)
    assert fact["status"] == "Failed" and fact["batches"] == 2, H.dumps(fact)
    by_name = {h["name"]: h for h in fact["hosts"]}
    assert [by_name[n]["status"] for n in hosts] == ["Succeeded", "Failed", "Skipped", "Skipped"]
    assert by_name[hosts[1]]["failed_event"] == "ValidateService"
    assert all(by_name[n]["event_durations"] == {} for n in hosts[2:])
    ids = dict(zip(hosts, _ids(d, hosts)))
    assert H.tg_states(d.world, arn) == {(ids[n], H.APP_PORT): "healthy" for n in (hosts[0], hosts[2], hosts[3])}
    v = d.versions(hosts)
    assert v[hosts[0]] == ("sample-app v2", "sample-app v2")
    assert v[hosts[2]] == v[hosts[3]] == ("sample-app v1", "sample-app v1")
    host2 = next(h for h in d.record(fact["deployment_id"])["hosts"] if h["name"] == hosts[1])
    assert host2["lb_membership"] and host2["lb_restored"] is False


def test_classic_elb_one_at_a_time(deployer: Deployer, bundles: dict) -> None:
    d = deployer
    hosts = d.names(N_HOSTS)[-2:]
    name = H.create_classic_elb(d.world, _ids(d, hosts))
    with H.HealthMonitor(d.world, classic_elb=name) as mon:
        result = d.run(hosts, bundles["v2"], clbs=(name,))
    assert result.rc == 0, result
    assert not mon.errors, mon.errors
    assert mon.minimum == 1 and mon.counts[-1] == 2, mon.samples
    fact = H.deployment_fact(result)
    assert fact["status"] == "Succeeded" and fact["batches"] == 2
    _assert_all_new(d, hosts, "v2")
    assert H.clb_members(d.world, name) == set(_ids(d, hosts))
    assert H.clb_states(d.world, name) == {i: "InService" for i in _ids(d, hosts)}


def test_two_target_groups_different_ports(deployer: Deployer, bundles: dict) -> None:
    """host1 is in tg-a on 8080 and in tg-b on 9000; host2 in tg-a on 8080 and tg-b on 9001: restored exactly.

    (The emulator keys a group's targets by instance id, so one instance on two ports of the same group
    cannot be modelled; different ports in different groups can.)
    """
    d = deployer
    hosts = d.names(2)
    i1, i2 = _ids(d, hosts)
    tg_a = H.create_target_group(d.world, [i1, i2], port=8080)
    tg_b = H.create_target_group(d.world, [], port=9000, wait=False)
    d.world.client("elbv2").register_targets(TargetGroupArn=tg_b, Targets=[{"Id": i1, "Port": 9000}, {"Id": i2, "Port": 9001}])
    H.wait_until(lambda: set(H.tg_states(d.world, tg_b).values()) == {"healthy"}, 10, what="tg-b healthy")
    before = {tg_a: H.tg_states(d.world, tg_a), tg_b: H.tg_states(d.world, tg_b)}
    assert set(before[tg_b]) == {(i1, 9000), (i2, 9001)}

    with H.HealthMonitor(d.world, target_group_arn=tg_b) as mon:
        result = d.run(hosts, bundles["v2"], config="CodeDeployDefault.AllAtOnce", tgs=(tg_a, tg_b))
    assert result.rc == 0, result
    assert mon.minimum == 0  # both were taken out of tg-b as well
    after = {tg_a: H.tg_states(d.world, tg_a), tg_b: H.tg_states(d.world, tg_b)}
    assert after == before
    fact = H.deployment_fact(result)
    record = d.record(fact["deployment_id"])
    memberships = {h["name"]: sorted((m["target_group_arn"], m["port"]) for m in h["lb_membership"]) for h in record["hosts"]}
    assert memberships == {hosts[0]: sorted([(tg_a, 8080), (tg_b, 9000)]), hosts[1]: sorted([(tg_a, 8080), (tg_b, 9001)])}
    _assert_all_new(d, hosts, "v2")


# ----------------------------------------------------------------------------------------------
# failures
# ----------------------------------------------------------------------------------------------

def test_validate_service_failure_stops_and_keeps_host_out(deployer: Deployer, bundles: dict) -> None:
    """OneAtATime on 4 hosts, ValidateService fails on host2: host1 new, host2 out, host3/host4 untouched."""
    d = deployer
    hosts = d.names(4)
    assert d.run(hosts, bundles["v1"], config="CodeDeployDefault.AllAtOnce").rc == 0  # the old version, no LB
    arn = H.create_target_group(d.world, _ids(d, hosts))
    H.fail_validate(d.world, hosts[1])
    with H.HealthMonitor(d.world, target_group_arn=arn) as mon:
        result = d.run(hosts, bundles["v2"], tgs=(arn,))
    assert result.rc != 0, result
    assert mon.minimum == 3, mon.samples

    fact = H.deployment_fact(result)
    assert fact["status"] == "Failed", H.dumps(fact)
    assert fact["batches"] == 2
    by_name = {h["name"]: h for h in fact["hosts"]}
    assert [by_name[n]["status"] for n in hosts] == ["Succeeded", "Failed", "Skipped", "Skipped"]
    failed = by_name[hosts[1]]
    assert failed["failed_event"] == "ValidateService"
    assert "validation failed on purpose" in failed["message"], failed
    text = fact["summary_text"]
    assert "Failed" in text.splitlines()[0] and "ValidateService" in text and "validation failed on purpose" in text
    assert H.summary_lines(result) == text.split("\n")
    # the role's final failure names the host
    fail_msg = H.role_task(result, "Fail when the deployment did not succeed")
    assert any(hosts[1] in str(r.get("msg")) for r in fail_msg.values())

    states = H.tg_states(d.world, arn)
    i = dict(zip(hosts, _ids(d, hosts)))
    assert (i[hosts[1]], H.APP_PORT) not in states
    assert states == {(i[n], H.APP_PORT): "healthy" for n in (hosts[0], hosts[2], hosts[3])}
    v = d.versions(hosts)
    assert v[hosts[0]] == ("sample-app v2", "sample-app v2")
    assert v[hosts[1]][1] == "sample-app v2"  # installed, but it failed validation
    assert v[hosts[2]] == v[hosts[3]] == ("sample-app v1", "sample-app v1")

    record = d.record(fact["deployment_id"])
    assert record["status"] == "Failed"
    host2 = next(h for h in record["hosts"] if h["name"] == hosts[1])
    assert host2["lb_membership"] and host2["lb_restored"] is False


def test_first_batch_failure_stops_before_batch_two(deployer: Deployer, bundles: dict) -> None:
    d = deployer
    hosts = d.names(3)
    assert d.run(hosts, bundles["v1"], config="CodeDeployDefault.AllAtOnce").rc == 0
    arn = H.create_target_group(d.world, _ids(d, hosts))
    H.fail_validate(d.world, hosts[0])
    result = d.run(hosts, bundles["v2"], tgs=(arn,))
    assert result.rc != 0, result
    fact = H.deployment_fact(result)
    assert fact["status"] == "Failed" and fact["batches"] == 1, H.dumps(fact)
    assert [h["status"] for h in fact["hosts"]] == ["Failed", "Skipped", "Skipped"]
    assert fact["hosts"][0]["failed_event"] == "ValidateService", H.dumps(fact)
    record = d.record(fact["deployment_id"])
    assert [len(h["lb_membership"] or []) for h in record["hosts"]] == [1, 0, 0], H.dumps(record["hosts"])
    # the hosts of batch 2 never ran an event
    assert all(h["event_durations"] == {} for h in fact["hosts"][1:])
    states = H.tg_states(d.world, arn)
    ids = _ids(d, hosts)
    assert states == {(i, H.APP_PORT): "healthy" for i in ids[1:]}, (ids, H.dumps(fact), result.stdout[-20000:])
    v = d.versions(hosts)
    assert v[hosts[1]] == v[hosts[2]] == ("sample-app v1", "sample-app v1")


def test_host_unreachable_mid_deployment(deployer: Deployer, bundles: dict) -> None:
    """host2's sshd dies while host1 (batch 1) is out of the target group: the deployment fails cleanly."""
    d = deployer
    hosts = d.names(3)
    ids = _ids(d, hosts)
    arn = H.create_target_group(d.world, ids)
    killed = threading.Event()

    def killer() -> None:
        client = d.world.client("elbv2")
        H.wait_until(lambda: H.tg_states(d.world, arn, client).get((ids[0], H.APP_PORT)) != "healthy", 120,
                     interval=0.05, what="host1 out of service")
        d.world.fleet.kill_sshd(hosts[1])
        killed.set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = d.run(hosts, bundles["v2"], tgs=(arn,), timeout=180)
    thread.join(5)
    assert killed.is_set()
    assert not result.timed_out, result
    assert result.rc != 0, result
    fact = H.deployment_fact(result)
    assert fact["status"] == "Failed", H.dumps(fact)
    by_name = {h["name"]: h for h in fact["hosts"]}
    assert by_name[hosts[0]]["status"] == "Succeeded"
    assert by_name[hosts[1]]["status"] == "Failed"
    assert "unreachable" in by_name[hosts[1]]["message"].lower(), by_name[hosts[1]]
    assert by_name[hosts[2]]["status"] == "Skipped"
    # host2 has no previous revision, so no BeforeBlockTraffic call: it is found unreachable after
    # BlockTraffic, and stays out of its target group as a failed host does (recorded for recover);
    # the others are registered and healthy.
    H.wait_until(lambda: (ids[1], H.APP_PORT) not in H.tg_states(d.world, arn), 30, what="host2 deregistered")
    assert H.tg_states(d.world, arn) == {(i, H.APP_PORT): "healthy" for i in (ids[0], ids[2])}
    record = d.record(fact["deployment_id"])
    assert next(h for h in record["hosts"] if h["name"] == hosts[1])["lb_membership"]
    d.world.fleet.start_sshd(hosts[1])
    assert H.served(d.host(hosts[0]).address) == "sample-app v2"
    assert H.installed(d.world, hosts[2]) is None  # never touched


def test_missing_target_group_is_named_and_nothing_changes(deployer: Deployer, bundles: dict) -> None:
    d = deployer
    hosts = d.names(3)
    ids = _ids(d, hosts)
    arn = H.create_target_group(d.world, ids)
    missing = arn.rsplit("/", 2)[0] + "/rw-does-not-exist/0123456789abcdef"
    result = d.run(hosts, bundles["v2"], tgs=(arn, missing))
    assert result.rc != 0, result
    output = result.stdout + result.stderr
    assert "rw-does-not-exist" in output, result
    assert "Traceback" not in output, result
    assert H.tg_states(d.world, arn) == {(i, H.APP_PORT): "healthy" for i in ids}
    assert all(v == (None, None) for v in d.versions(hosts).values())


# ----------------------------------------------------------------------------------------------
# hostile input through the role (issue 12): secrets printed by a failing hook, an over-limit bundle
# ----------------------------------------------------------------------------------------------

@pytest.mark.hostile
def test_secret_printed_by_failing_hook_never_leaves_the_host(deployer: Deployer, tmp_path: Path) -> None:
    d = deployer
    hosts = d.names(1)
    leak = build_bundle("leak", tmp_path, extra_files={
        "scripts/leak.sh": "#!/bin/sh\necho DB_PASSWORD=hunter2\necho AKIAIOSFODNN7EXAMPLE\nexit 1\n"},
        edit_appspec=lambda t: t.replace("  ValidateService:\n", "  ValidateService:\n    - location: scripts/leak.sh\n", 1))
    result = d.run(hosts, leak, config="CodeDeployDefault.AllAtOnce")
    assert result.rc != 0, result
    fact = H.deployment_fact(result)
    host = fact["hosts"][0]
    assert host["status"] == "Failed" and host["failed_event"] == "ValidateService", host
    assert "DB_PASSWORD=[REDACTED]" in host["message"], host["message"]
    record = d.record(fact["deployment_id"])
    for secret in ("hunter2", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in result.stdout + result.stderr, f"{secret} in the job output"
        assert secret not in json.dumps(record), f"{secret} in the deployment record"


@pytest.mark.hostile
def test_bundle_over_an_unpack_limit_fails_the_host_naming_it(deployer: Deployer, bundles: dict) -> None:
    d = deployer
    hosts = d.names(1)
    result = d.run(hosts, bundles["v1"], config="CodeDeployDefault.AllAtOnce", rollwright_unpack_limits={"members": 3})
    assert result.rc != 0, result
    fact = H.deployment_fact(result)
    host = fact["hosts"][0]
    assert host["status"] == "Failed" and host["failed_event"] == "DownloadBundle", host
    assert "unpack limit unpack_limits.members exceeded" in host["message"], host["message"]
    assert H.installed(d.world, hosts[0]) != "sample-app v1"


HANDED_OVER_THEN_STOPPED = """
- name: Start the deployment (staging included)
  hosts: "{{ rollwright_hosts }}"
  gather_facts: false
  tasks:
    - name: Start
      ansible.builtin.import_role:
        name: rollwright.deploy.inplace
        tasks_from: start

- name: The first planned batch, then a stop instead of the next batch's task
  hosts: "{{ rollwright_hosts }}"
  gather_facts: false
  tasks:
    - name: Deploy the first planned batch
      ansible.builtin.include_role:
        name: rollwright.deploy.inplace
        tasks_from: chunk
        public: true
      vars:
        _inplace_chunk: "{{ _inplace_state.plan_preview[0] }}"

    - name: A separate step refuses the batch handed over
      rollwright.deploy.inplace_step:
        step: plan
        state: "{{ _inplace_state }}"
        record: "{{ _rollwright_record }}"
        aws: "{{ _rollwright_aws }}"
      run_once: true
      delegate_to: localhost
      ignore_errors: true

    - name: Stop with the batch handed over
      rollwright.deploy.inplace_step:
        step: stop
        state: "{{ _inplace_state }}"
        reason: stopped between two batches
        record: "{{ _rollwright_record }}"
        aws: "{{ _rollwright_aws }}"
      run_once: true
      delegate_to: localhost
"""


def test_a_batch_handed_over_but_never_taken_over_is_stopped_with_its_hosts_in_service(
        deployer: Deployer, bundles: dict, tmp_path: Path) -> None:
    """A batch's task hands its hosts, registered again, to the next batch's task. When that task never comes (a
    stop instead, as the role's rescue runs it; or a dead controller): a separate step refuses the state, the stop
    tells the batch's sessions that nothing more runs (AfterAllowTraffic does not), the hosts are in service, and
    the record says their AllowTraffic was never confirmed, so that recovery confirms it."""
    d = deployer
    hosts = d.names(2)
    first, second = hosts
    arn = H.create_target_group(d.world, _ids(d, hosts))
    assert d.run(hosts, bundles["v1"], tgs=(arn,)).rc == 0
    playbook = tmp_path / "handed_over_then_stopped.yml"
    playbook.write_text(HANDED_OVER_THEN_STOPPED)
    result = d.ansible_run(str(playbook), d.world.inventory, timeout=240, env={"XDG_STATE_HOME": str(d.state_dir)},
                           extra_vars={"rollwright_hosts": ":".join(hosts), "rollwright_application": d.app,
                                       "rollwright_deployment_group": "g", "rollwright_revision": str(bundles["v2"]),
                                       "rollwright_deployment_config": "CodeDeployDefault.OneAtATime",
                                       "rollwright_target_group_arns": arn, "rollwright_file_exists_behavior": "OVERWRITE",
                                       "rollwright_healthy_timeout": 30})
    assert result.rc == 0, result
    (batch,) = result.task(BATCH_TASK).values()
    assert batch.get("handed_over") == {"batch_number": 1, "hosts": [first], "time": ANY}, batch.get("msg")
    assert sorted(batch["host_results"]) == ["main", "pre_block"], batch["host_results"]  # no post_allow
    (refused,) = result.task("A separate step refuses the batch handed over").values()
    assert refused["failed"] and "batch 1 was handed over to the next step=batch" in refused["msg"], refused
    assert "step=plan cannot take it over" in refused["msg"], refused
    (stopped,) = result.task("Stop with the batch handed over").values()
    deployment_id = stopped["deployment_id"]
    assert stopped["rollwright_deployment"]["status"] == "Stopped", stopped
    # The first host runs v2 and is in service; its AfterAllowTraffic never ran, its session ended on the stop's
    # word. The second host was never touched.
    assert d.versions(hosts) == {first: ("sample-app v2", "sample-app v2"), second: ("sample-app v1", "sample-app v1")}
    # registered again (the stop may come before the registration is over: still initial then), and healthy after it
    targets = {(i, H.APP_PORT) for i in _ids(d, hosts)}
    states = H.tg_states(d.world, arn)
    assert set(states) == targets and set(states.values()) <= {"initial", "healthy"}, states
    H.wait_until(lambda: H.tg_states(d.world, arn) == dict.fromkeys(targets, "healthy"), 10, what="both hosts healthy")
    assert _events_log(d, first, deployment_id)[-1] == "BeforeAllowTraffic v2", _events_log(d, first, deployment_id)
    assert _events_log(d, second, deployment_id) == []
    (session,) = _session_dirs(d, first, deployment_id)
    assert "done" in session.split() and "result-2.json" not in session.split(), session
    record = d.record(deployment_id)
    assert record["status"] == "Stopped" and record["error"] == "stopped between two batches", record
    host = {h["name"]: h for h in record["hosts"]}[first]
    allow = next(e for e in host["events"] if e["name"] == "AllowTraffic")
    assert allow["status"] == "InProgress" and host["lb_restored"] is False, host
    assert "AfterAllowTraffic" not in [e["name"] for e in host["events"]], host["events"]
    # Recovery confirms what the record left open: the host is back in exactly its recorded membership.
    recovered = d.ansible_run("rollwright.deploy.recover", d.world.inventory, timeout=120,
                              env={"XDG_STATE_HOME": str(d.state_dir)},
                              extra_vars={"rollwright_application": d.app, "rollwright_deployment_group": "g",
                                          "rollwright_deployment_id": deployment_id})
    assert recovered.rc == 0, recovered
    host = {h["name"]: h for h in d.record(deployment_id)["hosts"]}[first]
    assert host["lb_restored"] is True, host
    assert H.tg_states(d.world, arn) == {(i, H.APP_PORT): "healthy" for i in _ids(d, hosts)}


def test_an_after_allow_traffic_failure_handed_over_fails_the_deployment_before_the_next_host_leaves(
        deployer: Deployer, bundles: dict, tmp_path: Path) -> None:
    """The first batch's AfterAllowTraffic runs in the second batch's task (the first handed its host over): when it
    fails there, the second task judges the first batch failed and the second host never leaves its load
    balancer."""
    d = deployer
    hosts = d.names(2)
    first, second = hosts
    arn = H.create_target_group(d.world, _ids(d, hosts))
    assert d.run(hosts, bundles["v1"], tgs=(arn,)).rc == 0
    failing = build_bundle("v3", tmp_path, extra_files={"scripts/fail.sh": "#!/bin/sh\necho refusing >&2\nexit 3\n"},
                           edit_appspec=lambda text: text.replace(
                               "  AfterAllowTraffic:\n    - location: scripts/record_event.sh\n",
                               "  AfterAllowTraffic:\n    - location: scripts/record_event.sh\n"
                               "    - location: scripts/fail.sh\n"))
    with H.HealthMonitor(d.world, target_group_arn=arn) as mon:
        result = d.run(hosts, failing, tgs=(arn,))
    assert result.rc != 0, result
    assert not mon.errors and mon.minimum == 1, mon.samples
    tasks = [r for t in result.tasks() if t["name"] == BATCH_TASK for r in t["hosts"].values()]
    assert tasks[0]["handed_over"]["hosts"] == [first], tasks[0]
    assert tasks[1]["took_over"] == {"batch_number": 1, "hosts": [first]}, tasks[1]
    assert tasks[1]["host_results"]["post_allow"][first]["lifecycle_failed"] is True, tasks[1]["host_results"]
    assert "main" not in tasks[1]["host_results"], tasks[1]["host_results"]  # the second batch never started
    fact = H.deployment_fact(result)
    assert fact["status"] == "Failed", fact
    record = {h["name"]: h for h in d.record(fact["deployment_id"])["hosts"]}
    aat = next(e for e in record[first]["events"] if e["name"] == "AfterAllowTraffic")
    assert aat["status"] == "Failed" and record[first]["status"] == "Failed", record[first]
    assert not any(e["name"] == "BlockTraffic" for e in record[second]["events"]), record[second]
    assert d.versions([second]) == {second: ("sample-app v1", "sample-app v1")}
    assert H.tg_states(d.world, arn) == {(i, H.APP_PORT): "healthy" for i in _ids(d, hosts)}
