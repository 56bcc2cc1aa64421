# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A classic ELB through the rollback and recover playbooks.

Two hosts behind a classic ELB: v1, then v2, then ``rollwright.deploy.rollback`` (back to v1, one host
at a time, the ELB never without an InService instance); then v3 is killed (SIGKILL to the
controller's process group) while its first host is out of the ELB, and ``rollwright.deploy.recover``
registers it again. Checked from outside: the ELB's instances and their health, what the hosts serve.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.harness.ansible_run import VENV_BIN, ansible_env
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

APP = "clbapp"
GROUP = "g"


def _slow(text: str) -> str:
    marker = "  BeforeInstall:\n    - location: scripts/record_event.sh\n"
    return text.replace(marker, marker + "    - location: scripts/slow.sh\n      timeout: 30\n")


def test_classic_elb_rollback_then_kill_and_recover(fleet: Any, aws: Any, ansible_run: Any, tmp_path: Path) -> None:
    world = fleet(2)
    ids = [h.instance_id for h in world.hosts]
    clb = H.create_classic_elb(world, ids)
    records = tmp_path / "records.sqlite3"
    store = open_store("sqlite", {"path": str(records)})
    common = {"rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_deployment_group": GROUP,
              "rollwright_classic_elb_names": clb, "rollwright_record_sqlite_path": str(records),
              "rollwright_deployment_config": "CodeDeployDefault.OneAtATime",
              "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30}
    in_service = {i: "InService" for i in ids}

    def served() -> set[Any]:
        return {H.served(h.address) for h in world.hosts}

    for version in ("v1", "v2"):
        result = ansible_run("rollwright.deploy.inplace", world.inventory, timeout=240,
                             extra_vars=dict(common, rollwright_revision=str(build_bundle(version, tmp_path / "b"))))
        assert result.rc == 0, result
    assert served() == {"sample-app v2"}
    assert H.clb_members(world, clb) == set(ids) and H.clb_states(world, clb) == in_service

    # rollback to v1 through the classic ELB: one host out at a time, both back InService
    with H.HealthMonitor(world, classic_elb=clb) as mon:
        back = ansible_run("rollwright.deploy.rollback", world.inventory, extra_vars=common, timeout=240)
    assert back.rc == 0, back
    assert served() == {"sample-app v1"}
    assert not mon.errors and mon.minimum == 1 and mon.counts[-1] == 2, mon.samples
    assert H.clb_members(world, clb) == set(ids) and H.clb_states(world, clb) == in_service
    rollback = store.get(store.list(APP, GROUP, limit=1)[0].deployment_id)
    assert rollback.creator == "rollback" and rollback.status == "Succeeded", rollback.error
    assert all(h.lb_restored and h.lb_membership and h.lb_membership[0]["kind"] == "classic_elb" for h in rollback.hosts)

    # v3 killed while its first host is out of the classic ELB
    bundle = build_bundle("v3", tmp_path / "b", extra_files={"scripts/slow.sh": "#!/bin/sh\nsleep 3\n"}, edit_appspec=_slow)
    vars_file = tmp_path / "v3.json"
    vars_file.write_text(json.dumps(dict(common, rollwright_revision=str(bundle))))
    env = ansible_env(aws.env, str(world.control_path_dir), {"ANSIBLE_STDOUT_CALLBACK": "default"})
    with open(tmp_path / "v3.log", "w") as log:
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(world.inventory), "rollwright.deploy.inplace",
                                 "-e", f"@{vars_file}"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while H.clb_members(world, clb) == set(ids):
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "v3.log").read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    out = set(ids) - H.clb_members(world, clb)
    assert len(out) == 1, H.clb_members(world, clb)
    killed = store.get(store.list(APP, GROUP, limit=1)[0].deployment_id)
    H.wait_until(lambda: store.get(killed.deployment_id).status == "Stopped", 30, interval=0.2,
                 what="the lease keeper marked the killed deployment Stopped")
    assert store.get_lock(APP, GROUP) is not None  # left for recovery

    recovered = ansible_run("rollwright.deploy.recover", world.inventory, timeout=180, extra_vars={
        "rollwright_application": APP, "rollwright_deployment_group": GROUP, "rollwright_record_sqlite_path": str(records)})
    assert recovered.rc == 0, recovered
    assert H.clb_members(world, clb) == set(ids)
    H.wait_until(lambda: H.clb_states(world, clb) == in_service, 20, what="both instances InService")
    final = store.get(killed.deployment_id)
    assert final.status == "Stopped" and store.get_lock(APP, GROUP) is None
    assert all(not h.lb_membership or h.lb_restored for h in final.hosts)
