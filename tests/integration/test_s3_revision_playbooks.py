# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 revisions by version id and ETag through the in-place, rollback and blue/green playbooks.

The bundles live in a versioned bucket of the emulator, every version under the same key, so only
the version id tells them apart: a deployment of an older version must install that version although
a newer one is the object's current version. The ETag given with a revision is checked: a revision
whose ETag does not match refuses to deploy and changes nothing. Outcomes are read from the hosts
(what the app serves, over HTTP from the root namespace) and from the record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

KEY = "shop/sample-app.zip"
AMI = "ami-03cf127a"


def upload_versions(aws: Any, out: Path, versions: list[str]) -> tuple[str, dict[str, dict[str, str]]]:
    """A versioned bucket with every version of the sample app under KEY: (bucket, {version: {id, etag}})."""
    s3 = aws.client("s3")
    bucket = H.unique("rw-rel")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    found = {}
    for version in versions:
        put = s3.put_object(Bucket=bucket, Key=KEY, Body=build_bundle(version, out).read_bytes())
        found[version] = {"id": put["VersionId"], "etag": put["ETag"].strip('"')}
    assert len({v["id"] for v in found.values()}) == len(versions)
    return bucket, found


def served(world: Any) -> dict[str, Any]:
    return {h.name: H.served(h.address) for h in world.hosts}


def test_inplace_and_rollback_by_version_id_and_etag(fleet: Any, aws: Any, ansible_run: Any, tmp_path: Path) -> None:
    world = fleet(2)
    bucket, v = upload_versions(aws, tmp_path / "b", ["v1", "v2"])
    records = tmp_path / "records.sqlite3"
    store = open_store("sqlite", {"path": str(records)})
    common = {"rollwright_hosts": "fleet", "rollwright_application": "s3app", "rollwright_deployment_group": "g",
              "rollwright_record_sqlite_path": str(records), "rollwright_deployment_config": "CodeDeployDefault.AllAtOnce",
              "rollwright_file_exists_behavior": "OVERWRITE"}

    def run(playbook: str, **extra: Any) -> Any:
        return ansible_run(playbook, world.inventory, extra_vars=dict(common, **extra), timeout=240)

    # v1 by the survey form: an older version than the object's current one (v2)
    first = run("rollwright.deploy.inplace",
                rollwright_revision=f"s3://{bucket}/{KEY}?versionId={v['v1']['id']}&etag={v['v1']['etag']}")
    assert first.rc == 0, first
    assert served(world) == {h.name: "sample-app v1" for h in world.hosts}
    v1_record = store.get(H.deployment_fact(first)["deployment_id"])
    assert (v1_record.revision["bucket"], v1_record.revision["key"], v1_record.revision["version"]) == (bucket, KEY, v['v1']['id'])
    assert v1_record.revision["etag"].strip('"') == v["v1"]["etag"]

    # v2 by the dict form
    second = run("rollwright.deploy.inplace", rollwright_revision={
        "s3": {"bucket": bucket, "key": KEY, "version": v["v2"]["id"], "etag": v["v2"]["etag"]}})
    assert second.rc == 0, second
    assert served(world) == {h.name: "sample-app v2" for h in world.hosts}

    # v1's version id with v2's ETag: refused, named, nothing recorded, the hosts keep serving v2
    known = {r.deployment_id for r in store.list("s3app", "g", limit=20)}
    wrong = run("rollwright.deploy.inplace",
                rollwright_revision=f"s3://{bucket}/{KEY}?versionId={v['v1']['id']}&etag={v['v2']['etag']}")
    assert wrong.rc != 0, wrong
    text = wrong.stdout + wrong.stderr
    assert "etag" in text.lower() and v["v2"]["etag"] in text and v["v1"]["etag"] in text, text[-3000:]
    fresh = [r for r in store.list("s3app", "g", limit=20) if r.deployment_id not in known]
    assert all(r.status != "Succeeded" for r in fresh), fresh
    assert served(world) == {h.name: "sample-app v2" for h in world.hosts}
    assert store.get_lock("s3app", "g") is None

    # rollback: the last good revision before v2 is fetched again from S3 by its version id
    back = run("rollwright.deploy.rollback")
    assert back.rc == 0, back
    assert served(world) == {h.name: "sample-app v1" for h in world.hosts}
    rollback = store.get(store.list("s3app", "g", limit=1)[0].deployment_id)
    assert rollback.creator == "rollback" and rollback.status == "Succeeded", rollback.error
    assert (rollback.revision["bucket"], rollback.revision["version"]) == (bucket, v["v1"]["id"])


def test_bluegreen_by_version_id_and_etag(ec2_world: Any, aws: Any, ansible_run: Any, tmp_path: Path) -> None:
    world = ec2_world
    bucket, v = upload_versions(aws, tmp_path / "b", ["v1", "v2", "v3"])
    ec2, asg = world.client("ec2"), world.client("autoscaling")
    template = ec2.create_launch_template(LaunchTemplateName=H.unique("lt-s3"), LaunchTemplateData={
        "ImageId": AMI, "InstanceType": "t3.micro"})["LaunchTemplate"]["LaunchTemplateName"]
    tg = H.create_target_group(world, [], name=H.unique("s3bg"), wait=False)
    blue_asg = H.unique("blue-s3")[:40]
    asg.create_auto_scaling_group(AutoScalingGroupName=blue_asg, LaunchTemplate={"LaunchTemplateName": template, "Version": "1"},
                                  MinSize=2, MaxSize=2, DesiredCapacity=2, VPCZoneIdentifier=world.subnet_id,
                                  TargetGroupARNs=[tg], HealthCheckType="ELB", HealthCheckGracePeriod=30)
    blue = sorted(i["InstanceId"] for i in asg.describe_auto_scaling_groups(
        AutoScalingGroupNames=[blue_asg])["AutoScalingGroups"][0]["Instances"])
    H.wait_until(lambda: {h.instance_id for h in world.hosts} >= set(blue), 30, what="blue hosts up")
    H.wait_until(lambda: list(H.tg_states(world, tg).values()) == ["healthy", "healthy"], 15, what="blue healthy")
    records = tmp_path / "records.sqlite3"
    try:
        result = ansible_run("rollwright.deploy.bluegreen_ec2", world.inventory, timeout=300, extra_vars={
            "rollwright_application": "s3bg", "rollwright_deployment_group": "g",
            # v2, although v3 is the object's current version
            "rollwright_revision": f"s3://{bucket}/{KEY}?versionId={v['v2']['id']}&etag={v['v2']['etag']}",
            "rollwright_target_group_arns": tg, "rollwright_record_sqlite_path": str(records),
            "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30,
            "bluegreen_ec2_copy_auto_scaling_group": blue_asg, "bluegreen_ec2_original_wait": "0s",
            "bluegreen_ec2_connect_timeout": 60})
        assert result.rc == 0, result
        store = open_store("sqlite", {"path": str(records)})
        record = store.get(store.list("s3bg", "g", limit=1)[0].deployment_id)
        assert record.status == "Succeeded" and record.revision["version"] == v["v2"]["id"]
        green = sorted(i for (i, _port) in H.tg_states(world, tg))
        assert green and not set(green) & set(blue)
        assert set(H.tg_states(world, tg).values()) == {"healthy"}
        addresses = {h.instance_id: h.address for h in world.hosts}
        assert {i: H.served(addresses[i]) for i in green} == {i: "sample-app v2" for i in green}
    finally:
        for group in asg.describe_auto_scaling_groups()["AutoScalingGroups"]:
            if group["AutoScalingGroupName"].startswith(blue_asg):
                asg.delete_auto_scaling_group(AutoScalingGroupName=group["AutoScalingGroupName"], ForceDelete=True)
