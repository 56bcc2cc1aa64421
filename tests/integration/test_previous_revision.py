# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The previous-revision rule after a failed deployment, through ``ansible-playbook rollwright.deploy.inplace``.

BeforeBlockTraffic, AfterBlockTraffic and ApplicationStop run the scripts of the host's *last
successful* revision (CodeDeploy's rule, docs/architecture.md), not of the most recent one. v1
succeeds, v2 is installed and then fails ValidateService, v3 follows: v3's stop scripts must be
v1's. Every version ships its own, distinctly named script for the three events, which appends
"<event> <version of the script> <deployment id>" to a log on the host; the log and the record
(the script locations of each event) name whose scripts ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

PREVIOUS_EVENTS = ("BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop")
LOG = "/var/log/rollwright/previous-rule.log"


def _bundle(version: str, out: Path, broken: bool = False) -> Path:
    script = f"scripts/stop_{version}.sh"
    files = {script: f'#!/bin/sh\nmkdir -p /var/log/rollwright\necho "$LIFECYCLE_EVENT {version} $DEPLOYMENT_ID" >> {LOG}\n'}
    if broken:
        files["scripts/broken.sh"] = "#!/bin/sh\necho 'broken on purpose' >&2\nexit 1\n"

    def edit(text: str) -> str:
        for event in PREVIOUS_EVENTS:
            head = f"  {event}:\n    - location: scripts/record_event.sh\n"
            assert head in text, event
            text = text.replace(head, head + f"    - location: {script}\n")
        if broken:
            head = "  ValidateService:\n"
            text = text.replace(head, head + "    - location: scripts/broken.sh\n")
        return text

    return build_bundle(version, out, extra_files=files, edit_appspec=edit)


def _log(world: Any, name: str) -> list[tuple[str, str, str]]:
    proc = world.fleet.exec(name, ["cat", LOG], check=False)
    return [tuple(line.split()) for line in proc.stdout.splitlines() if line.strip()]  # type: ignore[misc]


def test_stop_scripts_come_from_the_last_successful_revision_not_the_failed_one(
        fleet: Any, ansible_run: Any, tmp_path: Path) -> None:
    world = fleet(2)
    names = [h.name for h in world.hosts]
    ids = [h.instance_id for h in world.hosts]
    arn = H.create_target_group(world, ids)
    records = tmp_path / "records.sqlite3"

    def deploy(bundle: Path) -> Any:
        return ansible_run("rollwright.deploy.inplace", world.inventory, timeout=240, extra_vars={
            "rollwright_hosts": "fleet", "rollwright_application": "prevrule", "rollwright_deployment_group": "g",
            "rollwright_revision": str(bundle), "rollwright_deployment_config": "CodeDeployDefault.AllAtOnce",
            "rollwright_target_group_arns": arn, "rollwright_record_sqlite_path": str(records),
            "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30})

    first = deploy(_bundle("v1", tmp_path))
    assert first.rc == 0, first
    v1_id = H.deployment_fact(first)["deployment_id"]

    failed = deploy(_bundle("v2", tmp_path, broken=True))
    assert failed.rc != 0, failed
    v2 = H.deployment_fact(failed)
    assert v2["status"] == "Failed" and {h["failed_event"] for h in v2["hosts"]} == {"ValidateService"}, H.dumps(v2)
    # v2 is the most recent revision on both hosts: installed, then failed validation
    assert {n: H.installed(world, n) for n in names} == {n: "sample-app v2" for n in names}

    # the failed hosts stay out of the target group; the operator puts them back before the next deployment
    world.client("elbv2").register_targets(TargetGroupArn=arn, Targets=[{"Id": i, "Port": H.APP_PORT} for i in ids])
    H.wait_until(lambda: set(H.tg_states(world, arn).values()) == {"healthy"}, 20, what="hosts back in service")

    third = deploy(_bundle("v3", tmp_path))
    assert third.rc == 0, third
    v3_id = H.deployment_fact(third)["deployment_id"]
    assert {n: H.served(h.address) for n, h in zip(names, world.hosts)} == {n: "sample-app v3" for n in names}

    for name in names:
        lines = _log(world, name)
        # v1's deployment: the first on the host, no previous revision, no stop script ran
        assert not [line for line in lines if line[2] == v1_id], lines
        # v2 and v3 both ran v1's scripts (the last successful), never v2's (the most recent when v3 began)
        for deployment_id in (v2["deployment_id"], v3_id):
            assert [(e, v) for e, v, d in lines if d == deployment_id] == [(e, "v1") for e in PREVIOUS_EVENTS], lines
        assert not [line for line in lines if line[1] in ("v2", "v3")], lines

    store = open_store("sqlite", {"path": str(records)})
    v3_record = store.get(v3_id)
    for host in v3_record.hosts:
        for event in PREVIOUS_EVENTS:
            locations = [s.get("location") for s in host.event(event).scripts]
            assert "scripts/stop_v1.sh" in locations and "scripts/stop_v2.sh" not in locations, (event, locations)
