# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Zero downtime, measured: 1,000 requests through HAProxy while an in-place deployment replaces
v1 with v2 on 4 hosts one at a time, with the HAProxy adapter. Not one request may fail."""

from __future__ import annotations

import pytest

from benchmarks.loadgen import LoadGenerator
from tests.bundles import build_bundle
from tests.haproxy_world import backend_servers, haproxy, haproxy_available, onprem_inventory, run_inplace

pytestmark = pytest.mark.skipif(not haproxy_available(), reason="haproxy is not installed (make setup installs it)")


def test_one_at_a_time_behind_haproxy_loses_no_request(fleet, tmp_path) -> None:
    world = fleet(4)
    inv = onprem_inventory(world, tmp_path / "onprem.yml")
    state = tmp_path / "state"
    first = run_inplace(world, inv, build_bundle("v1", tmp_path / "b"), state, config="CodeDeployDefault.AllAtOnce")
    assert first.rc == 0, first
    v2 = build_bundle("v2", tmp_path / "b")
    with haproxy(tmp_path / "hx", backend_servers(world)) as hx:
        for h in world.hosts:
            hx.wait_status(h.name, "UP")
        lb = {"haproxy": {"instances": [hx.instance_config()], "backend": "app", "poll_interval": 0.1}}
        # paced so the 1,000 requests span the deployment; the rest is sent after it if it is quicker
        load = LoadGenerator(hx.url, total=1000, concurrency=4, rate=40).start()
        run = run_inplace(world, inv, v2, state, load_balancer=lb, config="CodeDeployDefault.OneAtATime")
        result = load.wait(120)
        assert run.rc == 0, run
        assert result.sent == 1000
        assert result.failed == 0, result.to_dict()
        assert result.ok == 1000
        # the switch-over is visible: both versions were served, and v2 at the end
        assert result.versions() == ["sample-app v1", "sample-app v2"], result.versions()
        last = result.per_second[max(result.per_second)]
        assert set(last) == {"sample-app v2"}, last
        assert set(hx.statuses().values()) == {"UP"}
