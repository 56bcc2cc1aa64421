# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Zero downtime, measured, with a control that proves the adapter is what keeps it.

3 hosts behind a real HAProxy (health check every 500 ms, down after 3 failures, up after 2) run
the "slow" sample app of the zero-downtime benchmark (listening 2 s after start), here with 500 ms
per request of the load (the health check's answer is immediate) so that every host has requests in
flight when it is stopped. Under a paced load
through HAProxy (loopback only, bounded), the same fleet is deployed twice, OneAtATime:

* with the HAProxy adapter (drain until no session is left, maintenance, deploy, back once UP): not
  one request may fail;
* the control, the same deployment with no load balancer configured: the hosts stop and start under
  HAProxy's feet, which only notices through its health checks. It must lose requests, or the
  first half of the test would not tell a draining adapter from one that does nothing.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from benchmarks.loadgen import LoadGenerator
from benchmarks.zero_downtime import start_script
from tests.bundles import build_bundle
from tests.haproxy_world import backend_servers, haproxy, haproxy_available, onprem_inventory, run_inplace

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

RATE = 20  # requests per second, all clients together: ~3 in flight on each host at any time
CONCURRENCY = 16  # enough clients for RATE at 500 ms per request
REQUEST_SECONDS = 0.5
CHECKS = {"inter_ms": 500, "rise": 2, "fall": 3}


def build(version: str, out: Any) -> Any:
    # the load's requests (/slow) take REQUEST_SECONDS; HAProxy's health check (GET /) answers at once;
    # the app listens 2 s after it starts
    start = start_script(REQUEST_SECONDS, 2, slow_path="/slow")
    return build_bundle(version, out, extra_files={"scripts/start_slow.sh": start},
                        edit_appspec=lambda text: text.replace("scripts/start_server.sh", "scripts/start_slow.sh"))


def _deploy_under_load(world: Any, hx: Any, inv: Any, bundle: Any, state: Any, lb: Any) -> tuple[Any, Any]:
    load = LoadGenerator(hx.url + "slow", total=3000, concurrency=CONCURRENCY, rate=RATE, timeout=10).start()
    time.sleep(1.0)  # steady state before the deployment
    run = run_inplace(world, inv, bundle, state, load_balancer=lb, config="CodeDeployDefault.OneAtATime", timeout=300)
    time.sleep(1.0)  # and after it
    return run, load.stop()


def _all_up(hx: Any, names: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while set(hx.statuses().values()) != {"UP"} or set(hx.statuses()) != set(names):
        assert time.monotonic() < deadline, hx.statuses()
        time.sleep(0.1)


def test_slow_app_loses_nothing_with_the_adapter_and_loses_requests_without(fleet: Any, tmp_path: Any) -> None:
    assert haproxy_available(), "haproxy is not installed; `make setup` installs it (APT_PKGS)"
    world = fleet(3)
    names = [h.name for h in world.hosts]
    inv = onprem_inventory(world, tmp_path / "onprem.yml")
    state = tmp_path / "state"
    first = run_inplace(world, inv, build("v1", tmp_path / "b"), state, config="CodeDeployDefault.AllAtOnce")
    assert first.rc == 0, first
    with haproxy(tmp_path / "hx", backend_servers(world), **CHECKS) as hx:
        _all_up(hx, names)
        lb = {"haproxy": {"instances": [hx.instance_config()], "backend": "app", "poll_interval": 0.1}}

        adapter_run, adapter = _deploy_under_load(world, hx, inv, build("v2", tmp_path / "b"), state, lb)
        assert adapter_run.rc == 0, adapter_run
        # the load kept its pace from a second before the deployment to a second after it
        assert adapter.sent >= 0.8 * RATE * (adapter_run.seconds + 2), (adapter_run.seconds, adapter.to_dict())
        assert adapter.failed == 0, adapter.to_dict()
        # the switch-over is visible: both versions were served, and only v2 at the end
        assert adapter.versions() == ["sample-app v1", "sample-app v2"], adapter.versions()
        assert set(adapter.per_second[max(adapter.per_second)]) == {"sample-app v2"}
        _all_up(hx, names)

        control_run, control = _deploy_under_load(world, hx, inv, build("v3", tmp_path / "b"), state, None)
        assert control_run.rc == 0, control_run
        assert control.sent >= 0.8 * RATE * (control_run.seconds + 2), (control_run.seconds, control.to_dict())
        # the same deployment without the adapter loses requests while HAProxy notices each stopped host
        assert control.failed > 0, control.to_dict()
        assert control.versions() == ["sample-app v2", "sample-app v3"], control.versions()
        print(f"\nslow app ({REQUEST_SECONDS} s per request), OneAtATime on 3 hosts at {RATE}/s: adapter {adapter.failed} of {adapter.sent} failed "
              f"({adapter_run.seconds:.1f} s), control {control.failed} of {control.sent} failed ({control_run.seconds:.1f} s)")
        _all_up(hx, names)
