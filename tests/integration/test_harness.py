# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test world itself: isolation of fleet hosts, fail-fast SSH, clean tear-down, and the AWS
behaviour the emulator adds to moto (ELBv2 initial/draining, classic ELB, scripted Lambda results)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.harness.ansible_run import ansible_env
from tests.harness.proc import ProcRef

ROOT = Path(__file__).resolve().parents[2]


def _cmd(cmd: str, **extra):
    return {"name": extra.pop("name", cmd), "ansible.builtin.shell": cmd, **extra}


@pytest.mark.fleet
def test_private_paths_differ_per_host(fleet, ansible_run):
    world = fleet(2)
    res = ansible_run([
        {"hosts": "host1", "gather_facts": False, "tasks": [
            {"name": "write", "ansible.builtin.copy": {"dest": "/srv/x", "content": "only on host1\n"}}]},
        {"hosts": "fleet", "gather_facts": False, "tasks": [
            {"name": "look", "ansible.builtin.stat": {"path": "/srv/x"}},
            {"name": "hostname", "ansible.builtin.command": "hostname"}]},
    ], world.inventory, timeout=60)
    assert res.rc == 0, res
    look = res.task("look")
    assert look["host1"]["stat"]["exists"] is True
    assert look["host2"]["stat"]["exists"] is False
    assert {h: r["stdout"] for h, r in res.task("hostname").items()} == {"host1": "host1", "host2": "host2"}
    assert not Path("/srv/x").exists(), "a host's /srv leaked into the root filesystem"


@pytest.mark.fleet
def test_processes_are_private_per_host(fleet, ansible_run):
    world = fleet(2)
    res = ansible_run([{"hosts": "fleet", "gather_facts": False, "tasks": [
        _cmd("nohup sleep 4242 >/dev/null 2>&1 &", name="start"),
        _cmd("pkill -f '[s]leep 4242'", name="kill on host2", when="inventory_hostname == 'host2'"),
        _cmd("pgrep -f '[s]leep 4242' || true", name="look"),
        _cmd("ps -e -o pid= | wc -l", name="count"),
    ]}], world.inventory, timeout=60)
    assert res.rc == 0, res
    look = res.task("look")
    assert look["host1"]["stdout"].strip(), "pkill on host2 killed host1's process"
    assert look["host2"]["stdout"].strip() == ""
    # From the root namespace the harness sees host1's sleep among host1's processes only.
    sleeps = [p for p in world.fleet.host_pids("host1") if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\x004242")]
    assert len(sleeps) == 1
    assert not [p for p in world.fleet.host_pids("host2") if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\x004242")]


@pytest.mark.fleet
def test_dead_sshd_fails_fast_for_that_host_only(fleet, ansible_run):
    world = fleet(3)
    play = [{"hosts": "fleet", "gather_facts": False, "tasks": [{"name": "ping", "ansible.builtin.ping": {}}]}]
    # Same control-path directory for both runs, so host2 has a live ControlPersist master to lose.
    first = ansible_run(play, world.inventory, timeout=60)
    assert first.rc == 0, first
    world.fleet.kill_sshd("host2")
    start = time.monotonic()
    second = ansible_run(play, world.inventory, timeout=30)
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"a dead host took {elapsed:.1f}s to fail"
    assert second.unreachable_hosts() == {"host2"}, second
    assert second.ok_hosts() == {"host1", "host3"}, second
    world.fleet.start_sshd("host2")
    third = ansible_run(play, world.inventory, timeout=60)
    assert third.rc == 0, third


@pytest.mark.fleet
def test_cli_up_down_leaves_nothing_behind(aws, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root")
    world_dir = tmp_path / "cliworld"
    cli = [sys.executable, "-m", "tests.harness"]
    up = subprocess.run(cli + ["up", "--hosts", "2", "--dir", str(world_dir), "--endpoint", aws.endpoint],
                        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert up.returncode == 0, up.stderr
    info = json.loads((world_dir / "world.json").read_text())
    env_text = (world_dir / "aws.env").read_text()
    assert f"AWS_ENDPOINT_URL={aws.endpoint}" in env_text and "AWS_DEFAULT_REGION=us-east-1" in env_text
    wid = info["world_id"]
    host_pids = [h["pid"] for h in info["hosts"]]
    refs = [ProcRef.of(p) for p in host_pids]
    assert all(r.alive() for r in refs)
    # every process of each host, seen from the root namespace (init, sshd)
    state = json.loads((world_dir / ".state.json").read_text())
    launchers = [ProcRef.from_json(h["launcher"]) for h in state["fleet"]["hosts"]]
    ping = subprocess.run([str(ROOT / ".venv/bin/ansible"), "-i", str(world_dir / "inventory.yml"), "fleet", "-m", "ping"],
                          env=ansible_env(aws.env, str(world_dir / ".cp")), capture_output=True, text=True, timeout=60, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    for attempt in range(2):  # twice: the second must be a harmless no-op
        down = subprocess.run(cli + ["down", "--dir", str(world_dir)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert down.returncode == 0, f"down #{attempt + 1}: {down.stderr}"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    assert f"rw-{wid}" not in netns
    assert f"rw-{wid}" not in links
    assert f"rw-{wid}" not in Path("/proc/mounts").read_text()
    assert not any(r.alive() for r in refs + launchers), "a host process survived `down`"
    assert not any(Path(f"/proc/{p}").exists() and ProcRef.of(p) in refs for p in host_pids)
    assert not Path(f"/run/rollwright/worlds/{wid}.json").exists()
    # the shared emulator is not the world's: it must still answer
    assert aws.client("sts").get_caller_identity()["Account"]


@pytest.mark.fleet
def test_hosts_can_join_and_leave_a_live_world(fleet, ansible_run):
    world = fleet(1)
    new = world.add_host()
    assert new.name == "host2" and new.address != world.hosts[0].address
    play = [{"hosts": "fleet", "gather_facts": False, "tasks": [{"name": "ping", "ansible.builtin.ping": {}}]}]
    res = ansible_run(play, world.inventory, timeout=60)
    assert res.ok_hosts() == {"host1", "host2"}, res
    world.remove_host("host1")
    res = ansible_run(play, world.inventory, timeout=60)
    assert res.rc == 0 and res.ok_hosts() == {"host2"}, res


@pytest.mark.fleet
def test_ec2_view_matches_the_fleet(fleet, aws):
    world = fleet(3)
    ec2 = aws.client("ec2")
    found = ec2.describe_instances(Filters=[{"Name": "tag:fleet", "Values": [world.dir.name]},
                                            {"Name": "instance-state-name", "Values": ["running"]}])
    by_name = {}
    for reservation in found["Reservations"]:
        for inst in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
            by_name[tags["Name"]] = (inst["PrivateIpAddress"], inst["InstanceId"], inst["SubnetId"])
    assert by_name == {h.name: (h.address, h.instance_id, world.subnet_id) for h in world.hosts}
    # and the amazon.aws.aws_ec2 inventory plugin resolves them to the SSH addresses
    source = world.dir / "fleet.aws_ec2.yml"
    source.write_text(
        "plugin: amazon.aws.aws_ec2\nregions: [us-east-1]\n"
        f"filters:\n  tag:fleet: {world.dir.name}\n  instance-state-name: running\n"
        "hostnames: [tag:Name]\ncompose:\n  ansible_host: private_ip_address\n")
    inv = subprocess.run([str(ROOT / ".venv/bin/ansible-inventory"), "-i", str(source), "--list"], cwd=ROOT,
                         env=ansible_env(aws.env), capture_output=True, text=True, timeout=60, check=False)
    assert inv.returncode == 0, inv.stderr
    hostvars = json.loads(inv.stdout)["_meta"]["hostvars"]

    def plain(value):  # ansible-inventory marks values from the cloud as unsafe
        return value.get("__ansible_unsafe", value) if isinstance(value, dict) else value

    assert {n: plain(v["ansible_host"]) for n, v in hostvars.items()} == {h.name: h.address for h in world.hosts}


def _instances(aws, count):
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.250.0.0/24")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.250.0.0/24")["Subnet"]["SubnetId"]
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId="ami-03cf127a", MinCount=count, MaxCount=count, SubnetId=subnet)["Instances"]]
    return vpc, ids


def test_elbv2_initial_then_healthy_and_draining_then_gone(aws):
    vpc, (a, b) = _instances(aws, 2)
    elb = aws.client("elbv2")
    tg = elb.create_target_group(Name="harness-timing", Protocol="HTTP", Port=80, VpcId=vpc,
                                 HealthCheckIntervalSeconds=5, HealthyThresholdCount=2,
                                 Tags=[{"Key": "rollwright-emulator:registration-seconds", "Value": "2"}])["TargetGroups"][0]
    arn = tg["TargetGroupArn"]
    attrs = {x["Key"]: x["Value"] for x in elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]}
    assert attrs["deregistration_delay.timeout_seconds"] == "300"  # AWS's default stays
    elb.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "2"}])

    def health(**kw):
        return {d["Target"]["Id"]: (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
                for d in elb.describe_target_health(TargetGroupArn=arn, **kw)["TargetHealthDescriptions"]}

    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": a}, {"Id": b}])
    assert health() == {a: ("initial", "Elb.RegistrationInProgress"), b: ("initial", "Elb.RegistrationInProgress")}
    time.sleep(2.2)
    assert health() == {a: ("healthy", None), b: ("healthy", None)}
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": a}])  # already registered: stays healthy
    assert health()[a] == ("healthy", None)

    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": a}])
    assert health() == {a: ("draining", "Target.DeregistrationInProgress"), b: ("healthy", None)}
    time.sleep(1.0)
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": a}])  # re-registered while draining
    assert health()[a] == ("initial", "Elb.RegistrationInProgress")
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": a}])
    time.sleep(2.2)
    assert health() == {b: ("healthy", None)}
    assert health(Targets=[{"Id": a}]) == {a: ("unused", "Target.NotRegistered")}

    # without the test tag, AWS's timing applies: interval x healthy threshold (10 s here)
    elb.remove_tags(ResourceArns=[arn], TagKeys=["rollwright-emulator:registration-seconds"])
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": a}])
    time.sleep(2.2)
    assert health()[a] == ("initial", "Elb.RegistrationInProgress")


def test_classic_elb_deregistered_is_out_of_service(aws):
    a, b = _instances(aws, 2)[1]
    clb = aws.client("elb")
    clb.create_load_balancer(LoadBalancerName="harness-clb", AvailabilityZones=["us-east-1a"],
                             Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}])
    reg = clb.register_instances_with_load_balancer(LoadBalancerName="harness-clb", Instances=[{"InstanceId": a}, {"InstanceId": b}])
    assert sorted(i["InstanceId"] for i in reg["Instances"]) == sorted([a, b])
    dereg = clb.deregister_instances_from_load_balancer(LoadBalancerName="harness-clb", Instances=[{"InstanceId": a}])
    assert [i["InstanceId"] for i in dereg["Instances"]] == [b]
    states = {s["InstanceId"]: s["State"] for s in clb.describe_instance_health(LoadBalancerName="harness-clb")["InstanceStates"]}
    assert states == {b: "InService"}
    one = clb.describe_instance_health(LoadBalancerName="harness-clb", Instances=[{"InstanceId": a}])["InstanceStates"]
    assert [(s["InstanceId"], s["State"]) for s in one] == [(a, "OutOfService")]
    clb.get_waiter("instance_deregistered").wait(LoadBalancerName="harness-clb", Instances=[{"InstanceId": a}],
                                                 WaiterConfig={"Delay": 1, "MaxAttempts": 3})


def test_lambda_queued_function_error(aws):
    iam = aws.client("iam")
    role = iam.create_role(RoleName="harness-lambda", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("index.py", "def handler(event, context):\n    return event\n")
    lam = aws.client("lambda")
    lam.create_function(FunctionName="harness-fn", Runtime="python3.11", Role=role, Handler="index.handler",
                        Code={"ZipFile": buf.getvalue()})
    version = lam.publish_version(FunctionName="harness-fn")["Version"]
    lam.create_alias(FunctionName="harness-fn", Name="live", FunctionVersion=version)
    aws.queue_lambda_results([{"payload": '{"errorMessage": "boom"}', "function_error": "Unhandled"},
                              {"payload": '"Succeeded"', "function_error": None}])
    first = lam.invoke(FunctionName="harness-fn", Qualifier="live", Payload=b"{}")
    assert first["FunctionError"] == "Unhandled"
    assert json.loads(first["Payload"].read()) == {"errorMessage": "boom"}
    second = lam.invoke(FunctionName="harness-fn:live", Payload=b"{}")
    assert "FunctionError" not in second and second["Payload"].read() == b'"Succeeded"'
    third = lam.invoke(FunctionName="harness-fn", Payload=b'{"echo": 1}')  # queue empty: echo
    assert "FunctionError" not in third and json.loads(third["Payload"].read()) == {"echo": 1}
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="harness-fn", Qualifier="no-such-alias", Payload=b"{}")
    seen = [(i["function_name"], i["qualifier"], i["version"]) for i in aws.lambda_invocations() if i["function_name"].startswith("harness-fn")]
    assert seen[:3] == [("harness-fn", "live", version), ("harness-fn:live", None, version), ("harness-fn", None, "$LATEST")]
