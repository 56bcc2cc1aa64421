# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``--check`` of the in-place and rollback playbooks is a dry run: it changes nothing anywhere.

A fleet on v1 behind a target group; ``ansible-playbook rollwright.deploy.inplace --check`` with v2
and ``rollwright.deploy.rollback --check`` must succeed and leave the load balancer (sampled every
100 ms while they run), the hosts (what they serve and have installed), the record and the lock as
they were. The same v2 run without ``--check`` then deploys, so the dry run was not a no-op by accident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

APP = "checkapp"


def test_check_mode_changes_nothing(fleet: Any, ansible_run: Any, tmp_path: Path) -> None:
    world = fleet(2)
    names = [h.name for h in world.hosts]
    ids = [h.instance_id for h in world.hosts]
    tg = H.create_target_group(world, ids)
    records = tmp_path / "records.sqlite3"
    store = open_store("sqlite", {"path": str(records)})
    common = {"rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_deployment_group": "g",
              "rollwright_target_group_arns": tg, "rollwright_record_sqlite_path": str(records),
              "rollwright_deployment_config": "CodeDeployDefault.OneAtATime",
              "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30}
    v2 = str(build_bundle("v2", tmp_path / "b"))
    first = ansible_run("rollwright.deploy.inplace", world.inventory, timeout=240,
                        extra_vars=dict(common, rollwright_revision=str(build_bundle("v1", tmp_path / "b"))))
    assert first.rc == 0, first
    on_v1 = {n: ("sample-app v1", "sample-app v1") for n in names}

    def snapshot() -> tuple:
        return ({n: (H.served(h.address), H.installed(world, n)) for n, h in zip(names, world.hosts)},
                [r.to_dict() for r in store.list(APP, "g", limit=20)], store.get_lock(APP, "g"),
                H.tg_states(world, tg))

    def dry_run_changes_nothing(playbook: str, extra: dict) -> None:
        before = snapshot()
        with H.HealthMonitor(world, target_group_arn=tg) as mon:
            dry = ansible_run(playbook, world.inventory, extra_vars=dict(common, **extra), check=True, timeout=240)
        assert dry.rc == 0, dry
        assert not mon.errors and set(mon.counts) == {2}, (playbook, [s for s in mon.samples if s[1] != 2])  # nobody left
        assert snapshot() == before, playbook

    assert snapshot()[0] == on_v1 and snapshot()[2] is None
    dry_run_changes_nothing("rollwright.deploy.inplace", {"rollwright_revision": v2})
    dry_run_changes_nothing("rollwright.deploy.inplace", {"rollwright_revision": v2, "rollwright_batches_in_one_task": True})

    real = ansible_run("rollwright.deploy.inplace", world.inventory, timeout=240, extra_vars=dict(common, rollwright_revision=v2))
    assert real.rc == 0, real
    assert snapshot()[0] == {n: ("sample-app v2", "sample-app v2") for n in names}
    # a rollback needs a good revision to go back to (v1): its dry run, too, leaves everything on v2
    dry_run_changes_nothing("rollwright.deploy.rollback", {})
