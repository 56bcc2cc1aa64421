# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14: a batch larger than the controller can tell to go on within one drain leaves its load balancers a few
hosts at a time, each drained before it is told to go on, through ``ansible-playbook rollwright.deploy.inplace``.

The world is sized from the controller's cores: one batch (AllAtOnce) of a few more hosts than the controller is
expected to reach in one drain of 1 s at the start pace per core, so the pacing applies on any machine. The record
(each host's BlockTraffic and ApplicationStop) and a 0.1 s sampler of the target group say what happened.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import drain_pacing
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import parse_time
from tests.bundles import build_bundle
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

DRAIN_SECONDS = 1
# The hosts the controller is expected to reach in one drain before it measured anything: the first batch's depth.
START_DEPTH = math.ceil(drain_pacing.START_PACE_PER_CORE * (os.cpu_count() or 1) * drain_pacing.PACE_MARGIN
                        * DRAIN_SECONDS)
N_HOSTS = START_DEPTH + 4


@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with H.fleet_world(aws, tmp_path_factory, N_HOSTS, "pacing-world") as made:
        yield made


def _at(stamp: str) -> float:
    return parse_time(stamp).timestamp()


def test_a_batch_larger_than_one_drain_of_words_leaves_a_few_hosts_at_a_time_each_drained_before_its_word(
        world: Any, ansible_run: Any, tmp_path: Path) -> None:
    names = [h.name for h in world.hosts]
    ids = {h.name: h.instance_id for h in world.hosts}
    H.reset_hosts(world)
    common = {"rollwright_hosts": ":".join(names), "rollwright_application": "pacing", "rollwright_deployment_group": "g",
              "rollwright_deployment_config": "CodeDeployDefault.AllAtOnce",
              "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30}
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    first = ansible_run("rollwright.deploy.inplace", world.inventory, timeout=300, env=env, extra_vars=dict(
        common, rollwright_revision=str(build_bundle("v1", tmp_path))))  # so ApplicationStop has scripts to run
    assert first.rc == 0, first
    arn = H.create_target_group(world, list(ids.values()), drain_seconds=DRAIN_SECONDS)
    left: dict = {}  # host -> when the sampler first saw it leave the target group's healthy targets
    stop = threading.Event()

    def sample() -> None:
        client = world.client("elbv2")
        while not stop.is_set():
            states = {tid: state for (tid, _port), state in H.tg_states(world, arn, client).items()}
            now = time.time()
            for name, instance_id in ids.items():
                if states.get(instance_id) != "healthy":
                    left.setdefault(name, now)
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = ansible_run("rollwright.deploy.inplace", world.inventory, timeout=300, env=env, extra_vars=dict(
            common, rollwright_revision=str(build_bundle("v2", tmp_path)), rollwright_target_group_arns=arn))
    finally:
        stop.set()
        sampler.join(10)
    assert result.rc == 0, result
    assert f"of {N_HOSTS} hosts out at a time at first" in result.stdout, result.stdout[-3000:]
    fact = H.deployment_fact(result)
    assert fact["status"] == "Succeeded" and fact["batches"] == 1, H.dumps(fact)
    store = open_store("sqlite", {"path": str(tmp_path / "state" / "rollwright" / "deployments.sqlite3")})
    record = store.get(fact["deployment_id"]).to_dict()
    events = {h["name"]: {e["name"]: e for e in h["events"]} for h in record["hosts"]}
    # the hosts left in several groups, the first one smaller than the batch, in the batch's order
    left_at = {n: _at(e["BlockTraffic"]["start_time"]) for n, e in events.items()}
    groups = sorted(set(left_at.values()))
    assert len(groups) >= 2, left_at
    assert sum(1 for t in left_at.values() if t == groups[0]) <= START_DEPTH
    # and the load balancer saw them go at different times (a group every half second at the most)
    assert max(left.values()) - min(left.values()) >= 0.4, left
    for name, host_events in events.items():
        block, stop_event = host_events["BlockTraffic"], host_events["ApplicationStop"]
        assert block["status"] == "Succeeded" and stop_event["status"] == "Succeeded", host_events
        # drained for the whole delay before it was told to go on
        assert _at(block["end_time"]) - _at(block["start_time"]) >= DRAIN_SECONDS - 0.05, block
        assert _at(stop_event["start_time"]) >= _at(block["end_time"]) - 0.05, (block, stop_event)
        assert _at(host_events["AllowTraffic"]["start_time"]) >= _at(host_events["ValidateService"]["end_time"]) - 0.05
    assert {h["status"] for h in fact["hosts"]} == {"Succeeded"}
    assert {n: H.served(h.address) for n, h in zip(names, world.hosts)} == dict.fromkeys(names, "sample-app v2")
    assert H.tg_states(world, arn) == {(i, H.APP_PORT): "healthy" for i in ids.values()}
