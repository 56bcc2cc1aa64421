# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DynamoDB record backend under real deployments: a full in-place deployment, a kill of the
controller mid-batch (the lease keeper, reading and writing DynamoDB, marks it Stopped) and a recover,
all through ``ansible-playbook`` with ``rollwright_record_backend=dynamodb`` against the emulator.

The outcomes are read from outside: the target group (what the load balancer sees), the hosts (what
they serve) and the DynamoDB table (through the store, as another controller would read it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.harness.ansible_run import VENV_BIN, ansible_env
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

APP = "ddbapp"
GROUP = "g"
SLOW = "#!/bin/sh\nsleep 3\n"


def _slow(text: str) -> str:
    marker = "  BeforeInstall:\n    - location: scripts/record_event.sh\n"
    assert text.count(marker) == 1
    return text.replace(marker, marker + "    - location: scripts/slow.sh\n      timeout: 30\n")


def test_deploy_kill_and_recover_on_dynamodb(fleet: Any, aws: Any, ansible_run: Any, tmp_path: Path) -> None:
    world = fleet(3)
    ids = [h.instance_id for h in world.hosts]
    tg = H.create_target_group(world, ids)
    table = f"rw-deploy-{uuid.uuid4().hex[:10]}"
    options = {"table": table, "region": aws.region, "endpoint_url": aws.endpoint}
    open_store("dynamodb", dict(options, create_table=True), client_factory=aws.client)
    store = open_store("dynamodb", options, client_factory=aws.client)
    common = {"rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_deployment_group": GROUP,
              "rollwright_record_backend": "dynamodb", "rollwright_record_dynamodb_table": table,
              "rollwright_target_group_arns": tg, "rollwright_deployment_config": "CodeDeployDefault.OneAtATime",
              "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30}
    before = H.tg_states(world, tg)

    # 1. a full deployment, recorded in DynamoDB
    first = ansible_run("rollwright.deploy.inplace", world.inventory, timeout=240,
                        extra_vars=dict(common, rollwright_revision=str(build_bundle("v1", tmp_path / "b"))))
    assert first.rc == 0, first
    done = store.get(H.deployment_fact(first)["deployment_id"])
    assert done.status == "Succeeded" and sorted(h.name for h in done.hosts) == [h.name for h in world.hosts]
    assert all(h.status == "Succeeded" and h.lb_restored for h in done.hosts)
    assert store.get_lock(APP, GROUP) is None
    assert {h.name: H.served(h.address) for h in world.hosts} == {h.name: "sample-app v1" for h in world.hosts}
    assert H.tg_states(world, tg) == before

    # 2. v2 is killed (SIGKILL to ansible-playbook's process group) while its first host is out, in a slow hook
    bundle = build_bundle("v2", tmp_path / "b", extra_files={"scripts/slow.sh": SLOW}, edit_appspec=_slow)
    vars_file = tmp_path / "v2.json"
    vars_file.write_text(json.dumps(dict(common, rollwright_revision=str(bundle))))
    env = ansible_env(aws.env, str(world.control_path_dir), {"ANSIBLE_STDOUT_CALLBACK": "default"})
    log_path = tmp_path / "v2.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(world.inventory), "rollwright.deploy.inplace",
                                 "-e", f"@{vars_file}"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    running = None
    try:
        deadline = time.monotonic() + 120
        while running is None and time.monotonic() < deadline and proc.poll() is None:
            for summary in store.list(APP, GROUP, limit=2):
                record = store.get(summary.deployment_id)
                if record.status == "InProgress" and any(
                        h.event("BeforeInstall") is not None and h.event("BeforeInstall").status == "InProgress"
                        for h in record.hosts):
                    running = record
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert running is not None, log_path.read_text()[-3000:]
    out_at_kill = {i for (i, _port) in before} - {i for (i, _port), s in H.tg_states(world, tg).items() if s != "draining"}
    assert len(out_at_kill) == 1, H.tg_states(world, tg)  # OneAtATime: the first host was out when the kill landed
    # the lease keeper notices the dead controller and marks the record Stopped in DynamoDB; the lock stays
    H.wait_until(lambda: store.get(running.deployment_id).status == "Stopped", 30, interval=0.2,
                 what="the lease keeper marked the killed deployment Stopped")
    stopped = store.get(running.deployment_id)
    assert "rollwright.deploy.recover" in stopped.error
    lock = store.get_lock(APP, GROUP)
    assert lock is not None and lock.deployment_id == running.deployment_id

    # 3. recover, on DynamoDB: the host that was out is back, the lock is released
    recovered = ansible_run("rollwright.deploy.recover", world.inventory, timeout=180, extra_vars={
        "rollwright_application": APP, "rollwright_deployment_group": GROUP, "rollwright_record_backend": "dynamodb",
        "rollwright_record_dynamodb_table": table})
    assert recovered.rc == 0, recovered
    H.wait_until(lambda: H.tg_states(world, tg) == before, 20, what="every host back in the target group and healthy")
    final = store.get(running.deployment_id)
    assert final.status == "Stopped" and all(not h.lb_membership or h.lb_restored for h in final.hosts)
    assert store.get_lock(APP, GROUP) is None
    # the group deploys again after the recovery
    again = ansible_run("rollwright.deploy.inplace", world.inventory, timeout=240,
                        extra_vars=dict(common, rollwright_revision=str(build_bundle("v3", tmp_path / "b"))))
    assert again.rc == 0, again
    assert {h.name: H.served(h.address) for h in world.hosts} == {h.name: "sample-app v3" for h in world.hosts}
    assert H.tg_states(world, tg) == before
