# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lambda recovery after a real kill: ``ansible-playbook rollwright.deploy.lambda`` is SIGKILLed (its
whole process group) while the alias splits traffic; the lease keeper marks the deployment Stopped and
keeps the lock; then the same playbook recovers it.

What a caller sees is read from the alias itself, what the record and lock say from the store.
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
from tests.harness.ansible_run import VENV_BIN, ansible_env
from tests.integration.test_lambda_deploy import LambdaWorld

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = "rollwright.deploy.lambda"
pytestmark = pytest.mark.slow


def _msgs(run: Any) -> list[str]:
    return [str(h.get("msg")) for t in run.tasks() for h in t["hosts"].values() if h.get("failed")]


def test_killed_mid_shift_then_recovered(aws: Any, ansible_run: Any, tmp_path: Path) -> None:
    world = LambdaWorld(aws)
    group = f"{world.name}:live"
    db = tmp_path / "records.sqlite3"
    store = open_store("sqlite", {"path": str(db)})
    inventory = tmp_path / "hosts"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")
    base = {"rollwright_lambda_function_name": world.name, "rollwright_lambda_alias": "live",
            "rollwright_record_sqlite_path": str(db)}
    # a canary that would hold 10 % for 10 minutes: the kill lands while the alias is weighted
    shift = dict(base, rollwright_lambda_target_version="2",
                 rollwright_deployment_config={"type": "canary", "percentage": 10, "interval": "10m"})
    vars_file = tmp_path / "shift.json"
    vars_file.write_text(json.dumps(shift))
    log_path = tmp_path / "shift.log"
    env = ansible_env(aws.env, str(tmp_path / "cp"), {"ANSIBLE_STDOUT_CALLBACK": "default"})
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), PLAYBOOK, "-e", f"@{vars_file}"],
                                cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while world.alias() != ("1", {"2": 0.1}):
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    # what the dead controller left: the alias still split, the lock held; its lease keeper (which survives
    # the kill of the process group) saw the controller die, marked the record Stopped and kept the lock
    deadline = time.monotonic() + 15
    while store.get(store.list(world.name, group, limit=5)[0].deployment_id).status != "Stopped":
        assert time.monotonic() < deadline, "the lease keeper did not notice the dead controller"
        time.sleep(0.2)
    assert world.alias() == ("1", {"2": 0.1})
    (summary,) = store.list(world.name, group, limit=5)
    record = store.get(summary.deployment_id)
    assert record.deployment_type == "lambda" and record.extra["interrupted"]["noticed_by"] == "lease keeper"
    assert "rollwright_lambda_recover=true" in record.error
    lock = store.get_lock(world.name, group)
    assert lock is not None and lock.deployment_id == record.deployment_id and "held for recovery" in lock.owner
    holder = int(record.extra["controller"]["pid"])  # the killed ansible-playbook: gone
    assert not Path(f"/proc/{holder}").exists() or "Z" in Path(f"/proc/{holder}/stat").read_text().split(")")[-1][:3], holder

    # a new deployment is refused before it takes anything, and says how to recover
    refused = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=dict(base, rollwright_lambda_target_version="3"))
    assert refused.rc != 0 and any("rollwright_lambda_recover=true" in m for m in _msgs(refused)), _msgs(refused)
    assert world.alias() == ("1", {"2": 0.1}) and len(store.list(world.name, group, limit=5)) == 1

    # recovery: the lock is fresh (its holder may be alive as far as anyone can tell), so it needs force
    recover = dict(base, rollwright_lambda_recover=True)
    not_forced = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=recover)
    assert not_forced.rc != 0 and any("rollwright_force_lock=true" in m for m in _msgs(not_forced)), _msgs(not_forced)
    assert world.alias() == ("1", {"2": 0.1})
    forced = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=dict(recover, rollwright_force_lock=True))
    assert forced.rc == 0, forced
    assert world.alias() == ("1", {})
    after = store.get(record.deployment_id)
    assert after.status == "Stopped" and after.extra["recovery"]["alias_before"] == {
        "function_version": "1", "additional_version_weights": {"2": 0.1}}
    assert store.get_lock(world.name, group) is None

    # the group deploys again, all at once
    again = ansible_run(PLAYBOOK, inventory, timeout=120, extra_vars=dict(
        base, rollwright_lambda_target_version="3", rollwright_deployment_config={"type": "all_at_once"}))
    assert again.rc == 0, again
    assert world.alias() == ("3", {})
