# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile input against the records, through the store on the AWS emulator (DynamoDB over HTTP)
and through ``ansible-playbook rollwright.deploy.recover`` on localhost, SQLite and DynamoDB.

Each case asserts what the emulator says afterwards (describe calls): no target registered, no
instance terminated, no Auto Scaling group deleted, the lock where it was; and that the error
names the cause. The kill-then-recover scenario is in test_kill_recover.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import (
    DeploymentRecord,
    HostRecord,
    InvalidRecord,
    LockHeld,
    LockLost,
    open_store,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records.dynamodb import DynamoDBRecordStore

pytestmark = pytest.mark.hostile

ROOT = Path(__file__).resolve().parents[2]
RECOVER = ROOT / "playbooks" / "recover.yml"
AMI = "ami-03cf127a"
TASK = "Recover the deployment and release the group's lock"


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def table(aws: Any) -> str:
    name = f"rw-hostile-{uuid.uuid4().hex[:10]}"
    open_store("dynamodb", {"table": name, "create_table": True}, client_factory=aws.client)
    return name


def _dynamo(aws: Any, table: str, skew: float = 0.0) -> DynamoDBRecordStore:
    import time

    store = DynamoDBRecordStore(aws.client("dynamodb"), table, clock=lambda: time.time() + skew)
    store.ensure_table()
    return store


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: Any, tmp_path: Path, aws: Any) -> dict:
    """A record store and the playbook variables that name it."""
    if request.param == "sqlite":
        path = str(tmp_path / "records.sqlite3")
        return {"store": open_store("sqlite", {"path": path}), "vars": {"rollwright_record_sqlite_path": path}}
    name = request.getfixturevalue("table")
    return {"store": open_store("dynamodb", {"table": name}, client_factory=aws.client),
            "vars": {"rollwright_record_backend": "dynamodb", "rollwright_record_dynamodb_table": name}}


@pytest.fixture
def localhost(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")
    return path


@pytest.fixture
def cloud(aws: Any) -> dict:
    """A VPC with two target groups (empty) and one running instance (the host), unique per test."""
    ec2, elb = aws.client("ec2"), aws.client("elbv2")
    tag = uuid.uuid4().hex[:8]
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/24")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.0.0/24")["Subnet"]["SubnetId"]
    groups = [elb.create_target_group(Name=f"hz-{tag}-{n}", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance")
              ["TargetGroups"][0]["TargetGroupArn"] for n in ("a", "b")]
    instance = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0]["InstanceId"]
    return {"tg_a": groups[0], "tg_b": groups[1], "instance": instance, "subnet": subnet, "tag": tag}


def targets(aws: Any, arn: str) -> list:
    return sorted((d["Target"]["Id"], d["Target"].get("Port")) for d in
                  aws.client("elbv2").describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
                  if d["TargetHealth"]["State"] not in ("draining", "unused"))


def stopped_with_host_out(store: Any, cloud: dict, membership: dict, app: str = "web", group: str = "prod") -> str:
    """An in-place deployment the lease keeper marked Stopped while web1 was out of tg_a (lock left)."""
    record = store.create(DeploymentRecord(
        application=app, deployment_group=group, status="Created",
        hosts=[HostRecord(name="web1", instance_id=cloud["instance"], status="InProgress", lb_membership=[membership])]))
    did = record.deployment_id
    store.set_extra(did, "inplace", {"load_balancer": {"target_group_arns": [cloud["tg_a"]]}})
    store.acquire_lock(app, group, did, owner="ctl@elsewhere pid 4242", ttl=60)
    store.update_status(did, "InProgress")
    store.update_status(did, "Stopped", error="the controller died")
    return did


def recover(ansible_run: Any, inventory: Path, backend: dict, **extra: Any) -> tuple:
    names = {"rollwright_application": "web", "rollwright_deployment_group": "prod"}
    run = ansible_run(RECOVER, inventory, extra_vars=dict(names, **backend["vars"], **extra), timeout=180)
    result = run.task(TASK)["localhost"]
    return run, result


# ------------------------------------------------------------------------------------------------ DynamoDB: the store's clock


def test_dynamodb_reader_61s_ahead_does_not_steal_a_live_lock(aws: Any, table: str) -> None:
    holder, ahead = _dynamo(aws, table), _dynamo(aws, table, skew=61.0)
    lock = holder.acquire_lock("web", "prod", "d-AAAAAAAAA", owner="alice@ctl pid 1", ttl=60)
    info = ahead.get_lock("web", "prod")
    assert info.stale is False and info.heartbeat_age < 5, info.to_dict()
    with pytest.raises(LockHeld, match="wait for it to finish"):
        ahead.acquire_lock("web", "prod", "d-BBBBBBBBB", force=True)
    with pytest.raises(LockHeld):
        ahead.take_over("web", "prod", "d-AAAAAAAAA", owner="recovery")
    holder.heartbeat(lock)  # still the holder's: its token was never replaced
    assert holder.get_lock("web", "prod").owner == "alice@ctl pid 1"


def test_dynamodb_holder_61s_behind_neither_expires_early_nor_lives_forever(aws: Any, table: str) -> None:
    import time

    behind, reader, reader_behind = _dynamo(aws, table, skew=-61.0), _dynamo(aws, table), _dynamo(aws, table, skew=-61.0)
    behind.acquire_lock("web", "prod", "d-AAAAAAAAA", owner="slow-clock", ttl=3)
    assert reader.get_lock("web", "prod").stale is False  # the expiry is on the store's clock, not 61 s in the past
    time.sleep(4.5)
    assert reader.get_lock("web", "prod").stale is True and reader_behind.get_lock("web", "prod").stale is True
    taken = reader.acquire_lock("web", "prod", "d-BBBBBBBBB", owner="next", force=True)
    assert reader.release_lock(taken) is True


def test_dynamodb_release_renewal_and_takeover_by_token_only(aws: Any, table: str) -> None:
    a, b = _dynamo(aws, table), _dynamo(aws, table)
    lock = a.acquire_lock("web", "prod", "d-AAAAAAAAA", owner="alice", ttl=60)
    with pytest.raises(InvalidRecord, match="needs the token"):
        b.release_lock(("web", "prod", "d-AAAAAAAAA"))
    seen = b.get_lock("web", "prod")
    first = a.take_over("web", "prod", "d-AAAAAAAAA", owner="recovery-1", live=True, acquired_at=seen.acquired_at)
    with pytest.raises(LockHeld):  # the second recovery judged the lock before the first took it over
        b.take_over("web", "prod", "d-AAAAAAAAA", owner="recovery-2", live=True, acquired_at=seen.acquired_at)
    with pytest.raises(LockLost):  # the old holder is fenced off
        a.heartbeat(lock)
    with pytest.raises(LockLost, match="with another token"):
        a.release_lock(lock)
    assert b.get_lock("web", "prod").owner == "recovery-1"
    assert b.release_lock(first) is True and b.get_lock("web", "prod") is None


# ------------------------------------------------------------------------------------------------ recover playbook


def test_recover_refuses_a_foreign_membership_and_registers_nothing(
        aws: Any, cloud: dict, backend: dict, localhost: Path, ansible_run: Any) -> None:
    store = backend["store"]
    did = stopped_with_host_out(store, cloud, {"kind": "elbv2", "target_group_arn": cloud["tg_b"], "target_id": "10.9.9.9",
                                               "port": 22})
    before = store.get(did).to_dict()
    run, result = recover(ansible_run, localhost, backend)
    assert run.rc != 0 and result.get("failed"), result
    msg = result["msg"]
    assert "10.9.9.9:22" in msg and f"is not host web1's instance ({cloud['instance']})" in msg, msg
    assert f"target group {cloud['tg_b']} is not a load balancer of the deployment's configuration" in msg
    assert targets(aws, cloud["tg_a"]) == [] and targets(aws, cloud["tg_b"]) == []
    assert store.get(did).to_dict() == before
    assert store.get_lock("web", "prod").deployment_id == did


def test_recover_passes_over_a_superseded_deployment_unless_named(aws: Any, cloud: dict, backend: dict,
                                                                  localhost: Path, ansible_run: Any) -> None:
    store = backend["store"]
    good = {"kind": "elbv2", "target_group_arn": cloud["tg_a"], "target_id": cloud["instance"], "port": 80}
    old = stopped_with_host_out(store, cloud, good)
    store.break_lock("web", "prod", old, live=True)
    later = store.create(DeploymentRecord(application="web", deployment_group="prod", status="Created"))
    store.update_status(later.deployment_id, "InProgress")
    store.update_status(later.deployment_id, "Succeeded")
    run, result = recover(ansible_run, localhost, backend)
    assert run.rc == 0 and result["changed"] is False and "nothing to recover" in result["message"], result
    assert targets(aws, cloud["tg_a"]) == []
    assert store.get(old).host("web1").lb_restored is False
    # named explicitly, it is recovered
    run, result = recover(ansible_run, localhost, backend, rollwright_deployment_id=old, rollwright_healthy_timeout=30)
    assert run.rc == 0 and result["report"]["restored"] == ["web1"], result
    assert targets(aws, cloud["tg_a"]) == [(cloud["instance"], 80)]


def test_recover_refuses_a_superseded_lock_holder(aws: Any, cloud: dict, backend: dict, localhost: Path,
                                                  ansible_run: Any) -> None:
    store = backend["store"]
    good = {"kind": "elbv2", "target_group_arn": cloud["tg_a"], "target_id": cloud["instance"], "port": 80}
    old = stopped_with_host_out(store, cloud, good)
    later = store.create(DeploymentRecord(application="web", deployment_group="prod", status="Created"))
    store.update_status(later.deployment_id, "InProgress")
    run, result = recover(ansible_run, localhost, backend)
    assert run.rc != 0 and f"superseded by the later deployment {later.deployment_id}" in result["msg"], result
    assert targets(aws, cloud["tg_a"]) == [] and store.get_lock("web", "prod").deployment_id == old


def test_bluegreen_recover_terminates_and_deletes_only_what_carries_the_deployment_tag(
        aws: Any, cloud: dict, backend: dict, localhost: Path, ansible_run: Any) -> None:
    store = backend["store"]
    ec2, asg = aws.client("ec2"), aws.client("autoscaling")
    name = f"prod-web-{cloud['tag']}"
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"})
    asg.create_auto_scaling_group(AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": name},
                                  MinSize=0, MaxSize=1, DesiredCapacity=0, VPCZoneIdentifier=cloud["subnet"])
    record = store.create(DeploymentRecord(application="web", deployment_group="bg", deployment_type="blue_green_ec2"))
    did = record.deployment_id
    store.set_extra(did, "bluegreen", {
        "phase": "installing", "mode": "targets", "lb_config": {"target_group_arns": [cloud["tg_a"]], "classic_elb_names": []},
        "replacement_asg": name, "replacement_ids": [cloud["instance"]], "created": True, "original_ids": [],
        "original_memberships": {}, "green_memberships": []})
    store.acquire_lock("web", "bg", did, owner="ctl pid 1", ttl=7200)
    store.update_status(did, "InProgress")
    run, result = recover(ansible_run, localhost, backend, rollwright_application="web", rollwright_deployment_group="bg",
                          rollwright_force_recover=True)
    assert run.rc != 0, result
    msg = result["msg"]
    assert f"Auto Scaling group {name} does not carry the tag rollwright:deployment-id={did}" in msg, msg
    assert f"instance {cloud['instance']} does not carry the tag" in msg and "nothing was changed" in msg
    state = ec2.describe_instances(InstanceIds=[cloud["instance"]])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"
    assert asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    assert store.get(did).status == "InProgress" and store.get_lock("web", "bg").owner == "ctl pid 1"


def test_unlock_without_token_ends_only_a_stale_lock_unless_forced(aws: Any, backend: dict, localhost: Path,
                                                                   ansible_run: Any) -> None:
    store = backend["store"]
    store.acquire_lock("web", "prod", "d-AAAAAAAAA", owner="alice", ttl=600)
    task = {"rollwright.deploy.deployment_record": {
        "state": "unlock", "application": "web", "deployment_group": "prod", "deployment_id": "d-AAAAAAAAA",
        "backend": backend["vars"].get("rollwright_record_backend", "sqlite"),
        "sqlite_path": backend["vars"].get("rollwright_record_sqlite_path") or "{{ omit }}",
        "dynamodb_table": backend["vars"].get("rollwright_record_dynamodb_table") or "rollwright-deployments"}}
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [dict(task, name="unlock", ignore_errors=True)]}]
    run = ansible_run(play, localhost, timeout=120)
    result = run.task("unlock")["localhost"]
    assert result.get("failed") and "wait for it to finish" in result["msg"], result
    assert store.get_lock("web", "prod").owner == "alice"
    forced = dict(task)
    forced["rollwright.deploy.deployment_record"] = dict(task["rollwright.deploy.deployment_record"], force=True)
    run = ansible_run([{"hosts": "localhost", "gather_facts": False, "tasks": [dict(forced, name="unlock")]}], localhost,
                      timeout=120)
    assert run.rc == 0 and run.task("unlock")["localhost"]["released"] is True
    assert store.get_lock("web", "prod") is None
