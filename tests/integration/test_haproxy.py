# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy in front of a real SSH fleet: drain/ready sequences with a long-lived request, in-place
deployments through the playbook (an HA pair kept in step, a failed host left in maint, a server
in maint before the deployment left in maint), the haproxy_server module run on a fleet host, and
recovery after a killed controller.

HAProxy runs in the root namespace (127.0.0.1 frontends) with ``check inter 200ms`` against the
hosts' addresses; hosts are known by their inventory names (an on-premises inventory, no EC2 ids).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.haproxy import (
    HAProxyAdapter,
    parse_haproxy_config,
)
from benchmarks.loadgen import LoadGenerator
from tests.bundles import build_bundle
from tests.haproxy_world import (
    ROOT,
    backend_servers,
    haproxy_available,
    onprem_inventory,
    playbook_env,
    run_inplace,
    start_haproxy,
    start_slow_server,
    stop_slow_server,
)
from tests.harness.ansible_run import run_playbook


@pytest.fixture(autouse=True)
def _haproxy_installed() -> None:
    # `make setup` installs haproxy: a missing one is a broken set-up, not a reason to skip
    if not haproxy_available():
        pytest.fail("haproxy is not installed; `make setup` installs it (APT_PKGS)")


@pytest.fixture
def hx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hx")


@pytest.fixture
def lbs(hx_dir):
    started = []

    def start(servers: dict[str, str], name: str = "lb1", **kwargs: Any):
        hx = start_haproxy(hx_dir, servers, name=name, **kwargs)
        started.append(hx)
        return hx

    yield start
    for hx in started:
        hx.stop()


def _lb_config(*hxs, **extra: Any) -> dict[str, Any]:
    config = {"instances": [hx.instance_config() for hx in hxs], "backend": "app", "poll_interval": 0.1,
              "healthy_timeout": 30, "drain_timeout": 30}
    config.update(extra)
    return {"haproxy": config}


def _deployed_v1(world, tmp_path: Path) -> tuple[Path, Path]:
    """On-prem inventory and a state dir, with v1 deployed to every host (no load balancer yet)."""
    inv = onprem_inventory(world, tmp_path / "onprem.yml")
    state = tmp_path / "state"
    v1 = build_bundle("v1", tmp_path / "bundles")
    run = run_inplace(world, inv, v1, state, config="CodeDeployDefault.AllAtOnce")
    assert run.rc == 0, run
    return inv, state


def _body(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode().strip()


class StatusMonitor:
    """Samples, every 20 ms, which servers each HAProxy instance does not report UP."""

    def __init__(self, *hxs) -> None:
        self.hxs = hxs
        self.samples: list[dict[str, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append({hx.name: frozenset(s for s, st in hx.statuses().items() if st != "UP")
                                 for hx in self.hxs})
            self._stop.wait(0.02)

    def __enter__(self) -> "StatusMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def max_out(self, hx_name: str) -> int:
        return max(len(s[hx_name]) for s in self.samples)

    def ever_out(self, hx_name: str) -> set[str]:
        return set().union(*(s[hx_name] for s in self.samples))


# ----------------------------------------------------------------------------------------------


def test_drain_waits_for_a_long_request_on_a_fleet_host(fleet, lbs) -> None:
    world = fleet(2)
    for h in world.hosts:
        start_slow_server(world, h.name, 8090)
    try:
        hx = lbs(backend_servers(world, 8090))
        for h in world.hosts:
            hx.wait_status(h.name, "UP")
        adapter = HAProxyAdapter(parse_haproxy_config(_lb_config(hx)["haproxy"]))
        result: dict[str, Any] = {}

        def slow() -> None:
            with urllib.request.urlopen(hx.url + "?sleep=2", timeout=10) as resp:
                result["status"], result["body"] = resp.status, resp.read().decode().strip()
            result["done"] = time.monotonic()

        thread = threading.Thread(target=slow)
        thread.start()
        deadline = time.monotonic() + 5
        busy = None
        while busy is None:
            busy = next((h.name for h in world.hosts if hx.sessions(h.name)), None)
            assert time.monotonic() < deadline, "the slow request never reached a server"
            time.sleep(0.01)
        other = next(h.name for h in world.hosts if h.name != busy)
        [m] = adapter.snapshot([busy])[busy]
        # short requests keep flowing (to the other server) while the busy one drains
        with LoadGenerator(hx.url, total=300, concurrency=3, rate=150) as load:
            adapter.block([m])
            assert hx.status(busy) == "DRAIN"
            waited = adapter.wait_drained([m], timeout=10)
            maint_at = time.monotonic()
            assert hx.status(busy) == "MAINT"
            load.wait(10)
        thread.join(10)
        assert waited.ok, waited.message()
        assert result == {"status": 200, "body": "slow ok", "done": result["done"]}
        assert result["done"] <= maint_at, "the server went to maint before its long request finished"
        assert load.result.failed == 0 and load.result.ok == 300, load.result.to_dict()
        assert hx.sessions(other) == 0 and hx.status(other) == "UP"
        adapter.allow([m])
        assert adapter.wait_healthy([m], timeout=10).ok
        assert hx.status(busy) == "UP"
    finally:
        for h in world.hosts:
            stop_slow_server(world, h.name)


def test_inplace_with_an_ha_pair_in_step(fleet, lbs, tmp_path) -> None:
    world = fleet(3)
    inv, state = _deployed_v1(world, tmp_path)
    servers = backend_servers(world)
    lb1, lb2 = lbs(servers, name="lb1"), lbs(servers, name="lb2", tcp_admin=True)
    names = [h.name for h in world.hosts]
    for hx in (lb1, lb2):
        for n in names:
            hx.wait_status(n, "UP")
    # the third host was taken out by an operator on both instances: it must stay out
    parked = names[2]
    lb1.set_state(parked, "maint")
    lb2.set_state(parked, "maint")
    lb2.admin(f"set weight app/{names[0]} 7")
    lb = {"haproxy": {"instances": [lb1.instance_config(), lb2.instance_config(tcp=True)], "backend": "app",
                      "poll_interval": 0.1}}
    v2 = build_bundle("v2", tmp_path / "bundles")
    with StatusMonitor(lb1, lb2) as mon:
        run = run_inplace(world, inv, v2, state, load_balancer=lb)
    assert run.rc == 0, run
    assert "BlockTraffic" in run.stdout or "batch" in run.stdout
    for hx in (lb1, lb2):
        # OneAtATime: besides the parked host, at most one server out at any time, every host went through
        assert mon.max_out(hx.name) <= 2
        assert mon.ever_out(hx.name) == set(names), (hx.name, mon.ever_out(hx.name))
        assert hx.statuses() == {names[0]: "UP", names[1]: "UP", parked: "MAINT"}
    assert lb2.stat()[names[0]]["weight"] == "7" and lb1.stat()[names[0]]["weight"] == "1"
    # both instances saw each host out together: no sample where a host was out on one and fully back on
    # the other for long (they are set one after the other, within a poll)
    apart = [s for s in mon.samples if (s["lb1"] ^ s["lb2"]) - {parked}]
    assert len(apart) <= 0.1 * len(mon.samples) + 3, f"{len(apart)} of {len(mon.samples)} samples out of step"
    assert {_body(lb1.url), _body(lb2.url)} == {"sample-app v2"}
    proc = world.fleet.exec(parked, ["cat", "/opt/app/sample/index.html"])
    assert proc.stdout.strip() == "sample-app v2"  # deployed, but left out of rotation as it was


def _record(state: Path) -> Any:
    """The newest deployment of sample/fleet in the run's SQLite record store."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

    store = open_store("sqlite", {"path": str(state / "rollwright" / "deployments.sqlite3")})
    return store.get(store.list("sample", "fleet", limit=1)[0].deployment_id)


def test_hosts_with_ec2_ids_are_servers_by_inventory_name(fleet, lbs, tmp_path) -> None:
    """EC2 hosts (an ec2_instance_id host variable) behind HAProxy: a server is named by the inventory
    hostname, or by `servers` keyed by inventory hostname, never by the instance id."""
    world = fleet(2)
    _inv, state = _deployed_v1(world, tmp_path)
    first, second = [h.name for h in world.hosts]
    servers = backend_servers(world)
    hx = lbs({f"shop-{first}": servers[first], second: servers[second]})
    for server in (f"shop-{first}", second):
        hx.wait_status(server, "UP")
    v2 = build_bundle("v2", tmp_path / "bundles")
    with StatusMonitor(hx) as mon:
        run = run_inplace(world, world.inventory, v2, state,
                          load_balancer=_lb_config(hx, servers={first: f"shop-{first}"}))
    assert run.rc == 0, run
    assert mon.ever_out("lb1") == {f"shop-{first}", second} and mon.max_out("lb1") == 1
    assert hx.statuses() == {f"shop-{first}": "UP", second: "UP"}
    record = _record(state)
    by_name = {h.name: h for h in record.hosts}
    assert by_name[first].instance_id and by_name[first].instance_id.startswith("i-")
    assert [m["server"] for m in by_name[first].lb_membership] == [f"shop-{first}"]
    assert [m["server"] for m in by_name[second].lb_membership] == [second]


def test_host_failing_validation_stays_in_maint(fleet, lbs, tmp_path) -> None:
    world = fleet(3)
    inv, state = _deployed_v1(world, tmp_path)
    hx = lbs(backend_servers(world))
    names = [h.name for h in world.hosts]
    for n in names:
        hx.wait_status(n, "UP")
    bad = names[1]
    world.fleet.exec(bad, ["sh", "-c", "mkdir -p /srv && touch /srv/fail-validate"])
    v2 = build_bundle("v2", tmp_path / "bundles")
    run = run_inplace(world, inv, v2, state, load_balancer=_lb_config(hx), config="CodeDeployDefault.OneAtATime")
    assert run.rc != 0, run
    assert "ValidateService" in run.stdout and bad in run.stdout, run
    # the failed host stays out; every other host is in rotation (deployed before it, or never touched)
    assert hx.status(bad) == "MAINT"
    assert all(hx.status(n) == "UP" for n in names if n != bad), hx.statuses()
    bodies = {_body(hx.url) for _i in range(20)}
    assert bodies and bodies <= {"sample-app v1", "sample-app v2"}, bodies


def test_rollback_puts_the_server_a_failed_deployment_left_in_maint_back(fleet, lbs, tmp_path) -> None:
    """v2 fails ValidateService on one host (left in maint); the rollback playbook redeploys v1 and puts
    that server back as the failed deployment recorded it (ready), once: one membership per server line."""
    world = fleet(3)
    inv, state = _deployed_v1(world, tmp_path)
    hx = lbs(backend_servers(world))
    names = [h.name for h in world.hosts]
    for n in names:
        hx.wait_status(n, "UP")
    bad = names[0]
    world.fleet.exec(bad, ["sh", "-c", "mkdir -p /srv && touch /srv/fail-validate"])
    v2 = build_bundle("v2", tmp_path / "bundles")
    run = run_inplace(world, inv, v2, state, load_balancer=_lb_config(hx))
    assert run.rc != 0, run
    assert hx.status(bad) == "MAINT"
    failed_id = _record(state).deployment_id
    world.fleet.exec(bad, ["rm", "-f", "/srv/fail-validate"])
    rollback = run_inplace(world, inv, v2, state, load_balancer=_lb_config(hx), playbook="rollwright.deploy.rollback")
    assert rollback.rc == 0, rollback
    assert hx.statuses() == {n: "UP" for n in names}
    record = _record(state)
    assert record.rollback_of == failed_id and record.status == "Succeeded"
    assert record.host(bad).lb_membership == [{"kind": "haproxy", "instance": "lb1", "backend": "app", "server": bad,
                                               "state": "ready", "weight": 1}]
    assert {_body(hx.url) for _i in range(10)} == {"sample-app v1"}


def test_haproxy_server_module_on_a_fleet_host(fleet, lbs, tmp_path) -> None:
    world = fleet(2)
    inv, state = _deployed_v1(world, tmp_path)
    gateway = json.loads(world.world_json.read_text())["gateway"]
    # a TCP admin socket on the bridge's private address, reachable from the hosts
    hx = lbs(backend_servers(world), name="lbp", tcp_admin=True, tcp_admin_bind=gateway)
    names = [h.name for h in world.hosts]
    for n in names:
        hx.wait_status(n, "UP")
    target = names[0]

    def module(wanted: str, check: bool = False, **extra: Any):
        args = {"instances": [hx.instance_config(tcp=True)], "backend": extra.pop("backend", "app"),
                "server": extra.pop("server", "{{ inventory_hostname }}"), "state": wanted, "wait_timeout": 10}
        args.update(extra)
        play = [{"hosts": target, "gather_facts": False,
                 "tasks": [{"name": "haproxy", "rollwright.deploy.haproxy_server": args, "register": "out"}]}]
        return run_playbook(play, inv, check=check, env={"XDG_STATE_HOME": str(state)},
                            control_path_dir=str(world.control_path_dir), extra_args=["--diff"])

    def task_result(res):
        return res.task("haproxy")[target]

    res = module("maint", check=True)
    assert res.rc == 0, res
    assert task_result(res)["changed"] is True and hx.status(target) == "UP"
    res = module("maint")
    assert res.rc == 0, res
    out = task_result(res)
    assert out["changed"] is True and hx.status(target) == "MAINT"
    assert out["servers"][0]["state_before"] == "ready" and out["servers"][0]["state"] == "maint"
    res = module("maint")
    assert res.rc == 0 and task_result(res)["changed"] is False, res
    res = module("ready", weight=9)
    assert res.rc == 0, res
    assert hx.status(target) == "UP" and hx.stat()[target]["weight"] == "9"
    assert task_result(res)["wait"]["ok"] is True
    res = module("drain", backend="nope")
    assert res.rc != 0
    assert "backend 'nope' not found on haproxy instance lbp" in task_result(res)["msg"]
    res = module("drain", server="web-none")
    assert res.rc != 0
    assert "server 'web-none' not found in backend 'app'" in task_result(res)["msg"]


def test_recover_after_a_killed_controller(fleet, lbs, tmp_path) -> None:
    world = fleet(2)
    inv, state = _deployed_v1(world, tmp_path)
    hx = lbs(backend_servers(world))
    names = [h.name for h in world.hosts]
    for n in names:
        hx.wait_status(n, "UP")
    # a slow AfterInstall (the new revision's hook) keeps the first host out long enough to kill the controller there
    v2 = build_bundle("v2", tmp_path / "bundles", extra_files={"scripts/slow.sh": "#!/bin/sh\nsleep 20\n"},
                      edit_appspec=lambda t: t.replace("  AfterInstall:\n",
                                                       "  AfterInstall:\n    - location: scripts/slow.sh\n      timeout: 60\n"))
    variables = {"rollwright_hosts": "fleet", "rollwright_application": "sample", "rollwright_revision": str(v2),
                 "rollwright_load_balancer": _lb_config(hx)}
    cmd = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(inv), "rollwright.deploy.inplace", "-e", json.dumps(variables)]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=playbook_env(world, state), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "MAINT" not in hx.statuses().values():
            assert time.monotonic() < deadline and proc.poll() is None, "no server went to maint"
            time.sleep(0.05)
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert "MAINT" in hx.statuses().values()
    out_before = {n: st for n, st in hx.statuses().items() if st == "MAINT"}
    assert len(out_before) == 1, out_before
    # the group defaults to rollwright_hosts ("fleet") in the in-place role; no rollwright_load_balancer:
    # recovery finds the HAProxy instances in the record (extra.inplace.load_balancer)
    variables = {"rollwright_application": "sample", "rollwright_deployment_group": "fleet"}
    cmd = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(inv), "rollwright.deploy.recover", "-e", json.dumps(variables)]
    rec = subprocess.run(cmd, cwd=str(ROOT), env=playbook_env(world, state), capture_output=True, text=True, timeout=300,
                         check=False)
    assert rec.returncode == 0, rec.stdout[-4000:] + rec.stderr[-2000:]
    deadline = time.monotonic() + 15
    while set(hx.statuses().values()) != {"UP"}:
        assert time.monotonic() < deadline, hx.statuses()
        time.sleep(0.1)
    record = _record(state)
    assert record.status == "Stopped" and record.extra["recovery"]["restored"] == sorted(out_before)
    assert record.extra["inplace"]["load_balancer"]["haproxy"]["instances"] == [hx.instance_config()]
