# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every malformed revision, load-balancer and configuration form, through ``ansible-playbook``.

Each case runs the collection's in-place playbook against a one-host world with one malformed input
and checks what the user sees: the run fails, the failure message names the input (and, for a
nested one, the offending key; `deployment_config` may be named by the role's argument, a part of
the variable's name), and nothing happened: no deployment recorded, no lock left, nothing
installed on the host. The wording beyond the field's name is not pinned.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

APP = "badinput"

# (case id, extra vars with the malformed input, words the failure message must contain)
REVISIONS = [
    ("empty-string", {"rollwright_revision": ""}, ["rollwright_revision"]),
    ("s3-url-without-key", {"rollwright_revision": "s3://releases"}, ["rollwright_revision"]),
    ("s3-url-without-bucket", {"rollwright_revision": "s3:///shop/app.zip"}, ["rollwright_revision"]),
    ("s3-url-unknown-parameter", {"rollwright_revision": "s3://releases/app.zip?versionId=3&colour=red"},
     ["rollwright_revision", "colour"]),
    ("s3-url-bad-bundle-type", {"rollwright_revision": "s3://releases/app.zip?bundleType=rar"},
     ["rollwright_revision", "bundle"]),
    ("both-s3-and-path", {"rollwright_revision": {"s3": {"bucket": "b", "key": "k.zip"}, "path": "/tmp/k.zip"}},
     ["rollwright_revision"]),
    ("neither-s3-nor-path", {"rollwright_revision": {"bundle_type": "zip"}}, ["rollwright_revision"]),
    ("unknown-key", {"rollwright_revision": {"url": "https://example.invalid/app.zip"}}, ["rollwright_revision", "url"]),
    ("bad-bundle-type", {"rollwright_revision": {"path": "/tmp/app.zip", "bundle_type": "rar"}},
     ["rollwright_revision", "bundle_type"]),
    ("s3-not-a-dict", {"rollwright_revision": {"s3": "releases/app.zip"}}, ["rollwright_revision", "s3"]),
    ("s3-without-bucket", {"rollwright_revision": {"s3": {"key": "app.zip"}}}, ["rollwright_revision", "bucket"]),
    ("s3-without-key", {"rollwright_revision": {"s3": {"bucket": "releases"}}}, ["rollwright_revision", "key"]),
    ("s3-unknown-key", {"rollwright_revision": {"s3": {"bucket": "b", "key": "k.zip", "sha": "x"}}},
     ["rollwright_revision", "sha"]),
    ("path-not-a-string", {"rollwright_revision": {"path": 42}}, ["rollwright_revision", "path"]),
    ("a-list", {"rollwright_revision": ["s3://releases/app.zip"]}, ["rollwright_revision"]),
]
LOAD_BALANCERS = [
    ("lb-a-string", {"rollwright_load_balancer": "arn:aws:elasticloadbalancing:x"}, ["rollwright_load_balancer"]),
    ("lb-unknown-key", {"rollwright_load_balancer": {"target_groups": ["arn:x"]}},
     ["rollwright_load_balancer", "target_groups"]),
    ("lb-arns-not-strings", {"rollwright_load_balancer": {"target_group_arns": [1, 2]}},
     ["rollwright_load_balancer", "target_group_arns"]),
    ("lb-elb-names-a-dict", {"rollwright_load_balancer": {"classic_elb_names": {"web": 1}}},
     ["rollwright_load_balancer", "classic_elb_names"]),
]
CONFIGS = [
    ("config-unknown-name", {"rollwright_deployment_config": "CodeDeployDefault.Sometimes"},
     ["deployment_config"]),
    ("config-percent-too-high", {"rollwright_deployment_config": "FLEET_PERCENT:150"}, ["deployment_config"]),
    ("config-unknown-key", {"rollwright_deployment_config": {"minimum_healthy": {"type": "HOST_COUNT", "value": 1}}},
     ["deployment_config"]),
]
CASES = REVISIONS + LOAD_BALANCERS + CONFIGS


@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    from tests.harness.world import down, up

    made = up(tmp_path_factory.mktemp("badinput-world"), 1, emulator_handle=aws.handle.to_json(), region=aws.region)
    try:
        yield made
    finally:
        down(made.dir)


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle("v1", tmp_path_factory.mktemp("badinput-bundle"))


def failure_messages(result: Any) -> list[str]:
    """The messages of every failed task (not the echoed arguments, which would name every field)."""
    return [str(r.get("msg", "")) for t in result.tasks() for r in t["hosts"].values()
            if isinstance(r, dict) and r.get("failed")]


@pytest.mark.parametrize("extra,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_named_and_nothing_happens(world: Any, ansible_run: Any, tmp_path: Path, good_bundle: Path,
                                                      extra: dict[str, Any], words: list[str]) -> None:
    records = tmp_path / "records.sqlite3"
    extra_vars = {"rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_deployment_group": "g",
                  "rollwright_revision": str(good_bundle), "rollwright_record_sqlite_path": str(records),
                  "rollwright_deployment_config": "CodeDeployDefault.AllAtOnce", **extra}
    result = ansible_run("rollwright.deploy.inplace", world.inventory, extra_vars=extra_vars, timeout=120)
    assert result.rc != 0, result
    messages = failure_messages(result)
    assert messages, result
    assert any(all(w in m for w in words) for m in messages), (words, messages)
    # nothing happened: no record, no lock, nothing on the host
    if records.exists():
        store = open_store("sqlite", {"path": str(records)})
        assert store.list(APP, "g", limit=5) == [] and store.get_lock(APP, "g") is None
    assert H.installed(world, world.hosts[0].name) is None


def test_the_good_inputs_of_the_same_run_deploy(world: Any, ansible_run: Any, tmp_path: Path, good_bundle: Path) -> None:
    """The control: the same run with the valid inputs succeeds, so the cases above fail for their input only."""
    H.reset_hosts(world)
    try:
        result = ansible_run("rollwright.deploy.inplace", world.inventory, timeout=180, extra_vars={
            "rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_deployment_group": "g",
            "rollwright_revision": str(good_bundle), "rollwright_record_sqlite_path": str(tmp_path / "records.sqlite3"),
            "rollwright_deployment_config": "CodeDeployDefault.AllAtOnce", "rollwright_load_balancer": {},
            "rollwright_file_exists_behavior": "OVERWRITE"})
        assert result.rc == 0, result
        assert H.installed(world, world.hosts[0].name) == "sample-app v1"
    finally:
        H.reset_hosts(world)
