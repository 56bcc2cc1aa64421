# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 7: EC2 blue/green end to end, through ``ansible-playbook rollwright.deploy.bluegreen_ec2``.

The world starts with no host; its EC2 sync (tests/harness/ec2_sync.py) gives every instance that
runs in the fleet subnet an SSH host and removes the host of a terminated one, so the Auto Scaling
groups and launch templates of the emulator ARE the fleet. Each test makes its own blue Auto Scaling
group (3 instances behind a target group that drains in 1 s and keeps new targets `initial` for 1 s),
its own application and its own SQLite record file. A monitor thread samples the target groups every
100 ms while the playbook runs: the serving group never has fewer healthy targets than the minimum,
never more than one reroute batch of blue and green mixed, and the app is checked over HTTP from the
root namespace. No rollwright code is used to check outcomes, apart from reading the record.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

PLAYBOOK = "rollwright.deploy.bluegreen_ec2"
CONTINUE = "rollwright.deploy.continue"
PROMOTE = "rollwright.deploy.promote"
STOP = "rollwright.deploy.stop"
RECOVER = "rollwright.deploy.recover"
RECOVER_TASK = "Recover the deployment and release the group's lock"
N = 3
AMI = "ami-03cf127a"


@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    with H.ec2_synced_world(aws, tmp_path_factory.mktemp("bg-world")) as made:
        yield made


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bg-bundles")
    return {v: build_bundle(v, out) for v in ("v1", "v2")}


class Env:
    """One test's blue fleet (a launch template + Auto Scaling group behind a target group) and runner."""

    def __init__(self, world: Any, ansible_run: Any, state_dir: Path, name: str) -> None:
        self.world, self.ansible_run, self.state_dir, self.name = world, ansible_run, state_dir, name
        self.ec2, self.asg, self.elbv2 = world.client("ec2"), world.client("autoscaling"), world.client("elbv2")
        self.groups: list[str] = []
        self.template = self.ec2.create_launch_template(
            LaunchTemplateName=H.unique(f"lt-{name}"), LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"},
        )["LaunchTemplate"]["LaunchTemplateName"]
        self.tg = H.create_target_group(self.world, [], name=H.unique("bg"), wait=False)

    def blue_asg(self, tgs: Optional[list[str]] = None) -> str:
        name = H.unique(f"blue-{self.name}")[:40]
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": self.template, "Version": "1"},
            MinSize=N, MaxSize=N, DesiredCapacity=N, VPCZoneIdentifier=self.world.subnet_id,
            TargetGroupARNs=tgs if tgs is not None else [self.tg], HealthCheckType="ELB", HealthCheckGracePeriod=30,
            Tags=[{"Key": "app", "Value": self.name, "PropagateAtLaunch": True, "ResourceId": name,
                   "ResourceType": "auto-scaling-group"}])
        self.groups.append(name)
        ids = self.asg_ids(name)
        H.wait_until(lambda: {h.instance_id for h in self.world.hosts} >= set(ids), 30, what="blue hosts up")
        if tgs is None or tgs:
            arn = (tgs or [self.tg])[0]
            H.wait_until(lambda: sum(1 for s in H.tg_states(self.world, arn).values() if s == "healthy") == N, 15,
                         what="blue targets healthy")
        return name

    def asg_ids(self, name: str) -> list[str]:
        groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return sorted(i["InstanceId"] for i in groups[0]["Instances"]) if groups else []

    def asg_exists(self, name: str) -> bool:
        return bool(self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"])

    def states(self, ids: list[str]) -> dict[str, str]:
        found = {}
        for res in self.ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            for inst in res["Instances"]:
                found[inst["InstanceId"]] = inst["State"]["Name"]
        return found

    def members(self, arn: Optional[str] = None) -> dict[str, str]:
        """instance id -> state of every target (draining included) of the group."""
        return {i: s for (i, _port), s in H.tg_states(self.world, arn or self.tg).items()}

    def address(self, iid: str) -> str:
        return next(h.address for h in self.world.hosts if h.instance_id == iid)

    def run(self, bundle: Path, timeout: float = 240, **extra: Any) -> Any:
        extra_vars = {
            "rollwright_application": f"bg-{self.name}",
            "rollwright_deployment_group": "g",
            "rollwright_revision": str(bundle),
            "rollwright_target_group_arns": self.tg,
            "rollwright_file_exists_behavior": "OVERWRITE",
            "rollwright_healthy_timeout": 30,
            "bluegreen_ec2_original_wait": "0s",
            "bluegreen_ec2_connect_timeout": 60,
            **extra,
        }
        return self.ansible_run(PLAYBOOK, self.world.inventory, extra_vars=extra_vars, timeout=timeout,
                                env={"XDG_STATE_HOME": str(self.state_dir)})

    def store(self) -> Any:
        return open_store("sqlite", {"path": str(self.state_dir / "rollwright" / "deployments.sqlite3")})

    def record(self) -> dict[str, Any]:
        found = self.store().list(f"bg-{self.name}", "g", limit=1)
        return self.store().get(found[0].deployment_id).to_dict()

    def cleanup(self) -> None:
        for name in self.groups + [g["AutoScalingGroupName"] for g in self.asg.describe_auto_scaling_groups()["AutoScalingGroups"]
                                   if any(name in g["AutoScalingGroupName"] for name in self.groups)]:
            try:
                self.asg.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
            except Exception:  # pylint: disable=broad-except
                pass


@pytest.fixture
def env(world: Any, ansible_run: Any, tmp_path: Path, request: Any) -> Any:
    made = Env(world, ansible_run, tmp_path, request.node.name.split("[")[0].replace("test_", "")[:12].replace("_", "-"))
    yield made
    made.cleanup()


class TrafficMonitor:
    """Samples target groups every 100 ms: healthy count and blue/green (non-draining) counts of the
    group that serves (the listener's forward target in listener mode). Optionally breaks validation
    on the first replacement host that appears."""

    def __init__(self, env: Env, blue_ids: list[str], listener_arn: Optional[str] = None,
                 fail_validate_on_first_green: bool = False) -> None:
        self.env, self.blue = env, set(blue_ids)
        self.listener_arn = listener_arn
        self.fail_first = fail_validate_on_first_green
        self.failed_host: Optional[str] = None
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._elbv2 = env.world.client("elbv2")
        self._present = {h.instance_id for h in env.world.hosts}

    def serving_tg(self) -> str:
        if not self.listener_arn:
            return self.env.tg
        actions = self._elbv2.describe_listeners(ListenerArns=[self.listener_arn])["Listeners"][0]["DefaultActions"]
        return actions[0]["TargetGroupArn"]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                tg = self.serving_tg()
                states = {i: s for (i, _p), s in H.tg_states(self.env.world, tg, self._elbv2).items()}
                live = {i for i, s in states.items() if s != "draining"}
                # A sample only when the listener did not move between the two reads: states read just after a
                # reroute are of a group it no longer forwards to (keep_alive deregisters the originals at once).
                if not self.listener_arn or self.serving_tg() == tg:
                    self.samples.append({"t": time.monotonic(), "tg": tg,
                                         "healthy": sum(1 for s in states.values() if s == "healthy"),
                                         "blue": len(live & self.blue), "green": len(live - self.blue)})
                if self.fail_first and self.failed_host is None:
                    green = [h for h in self.env.world.hosts if h.instance_id and h.instance_id not in self._present]
                    if green:
                        H.fail_validate(self.env.world, green[0].name)
                        self.failed_host = green[0].instance_id
            except Exception as exc:  # pylint: disable=broad-except
                self.errors.append(str(exc))
            self._stop.wait(0.1)

    def __enter__(self) -> "TrafficMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def min_healthy(self) -> int:
        return min(s["healthy"] for s in self.samples)

    @property
    def max_mixed(self) -> int:
        """The most targets of the minority colour seen in the serving group at once."""
        return max(min(s["blue"], s["green"]) for s in self.samples)


def failures(result: Any) -> list[str]:
    """The messages of the failed (or rescued) tasks of a run, for assertion output."""
    out = []
    for task in result.tasks():
        for host, res in task["hosts"].items():
            if isinstance(res, dict) and (res.get("failed") or res.get("unreachable")):
                out.append(f"{task['name']} on {host}: {res.get('msg')} {res.get('exception', '')[-1500:]}")
    return out


# ----------------------------------------------------------------------------------------------


def test_ec2_sync_follows_the_ec2_view(world: Any) -> None:
    """Instances the emulator runs in the fleet subnet become SSH hosts at their private IPs; a terminated
    instance's host goes away; an instance outside the subnet gets none."""
    import ipaddress
    import socket

    ec2 = world.client("ec2")
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2, SubnetId=world.subnet_id)["Instances"]]
    other_vpc = ec2.create_vpc(CidrBlock="10.250.0.0/24")["Vpc"]["VpcId"]
    other = ec2.create_subnet(VpcId=other_vpc, CidrBlock="10.250.0.0/24")["Subnet"]["SubnetId"]
    outside = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=other)["Instances"][0]["InstanceId"]
    hosts = H.wait_until(lambda: [h for h in world.hosts if h.instance_id in ids] if
                         len([h for h in world.hosts if h.instance_id in ids]) == 2 else None, 20, what="hosts for the instances")
    described = {i["InstanceId"]: i["PrivateIpAddress"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
                 for i in r["Instances"]}
    for h in hosts:
        assert h.address == described[h.instance_id] and h.name == h.instance_id
        assert ipaddress.IPv4Address(h.address) in ipaddress.IPv4Network(world.fleet_state.subnet)
        with socket.create_connection((h.address, 22), timeout=2) as conn:
            assert conn.recv(4).startswith(b"SSH")
    assert outside not in {h.instance_id for h in world.hosts}
    ec2.terminate_instances(InstanceIds=ids[:1])
    H.wait_until(lambda: ids[0] not in {h.instance_id for h in world.hosts}, 10, what="host of the terminated instance removed")
    assert ids[1] in {h.instance_id for h in world.hosts}
    ec2.terminate_instances(InstanceIds=ids[1:] + [outside])
    H.wait_until(lambda: not {h.instance_id for h in world.hosts} & set(ids), 10, what="hosts removed")
    assert not world._ec2_sync.errors  # pylint: disable=protected-access


def test_copy_asg_targets_mode(env: Env, bundles: dict[str, Path]) -> None:
    blue_asg = env.blue_asg()
    blue = env.asg_ids(blue_asg)
    # A launching hook (event-driven scale-outs) put once the blue fleet is up: the copy gets it too.
    hook = {"LifecycleHookName": "rollwright-deploy", "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "HeartbeatTimeout": 900, "DefaultResult": "ABANDON"}
    env.asg.put_lifecycle_hook(AutoScalingGroupName=blue_asg, **hook)
    with TrafficMonitor(env, blue) as mon:
        result = env.run(bundles["v2"], bluegreen_ec2_copy_auto_scaling_group=blue_asg)
    assert result.rc == 0, failures(result) or result
    record = env.record()
    assert record["status"] == "Succeeded" and record["deployment_type"] == "blue_green_ec2"
    green_asg = f"{blue_asg}-{record['deployment_id']}"
    green = env.asg_ids(green_asg)
    assert len(green) == N and not set(green) & set(blue)
    # traffic: all green, healthy; the green group took the attachment; blue group emptied, hosts gone
    # (every green target healthy when the playbook ends; the drained blues gone from the group)
    assert env.members() == {i: "healthy" for i in green}
    assert env.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[green_asg])["AutoScalingGroups"][0]["TargetGroupARNs"] == [env.tg]
    assert env.asg_ids(blue_asg) == [] and env.asg_exists(blue_asg)
    copied = env.asg.describe_lifecycle_hooks(AutoScalingGroupName=green_asg)["LifecycleHooks"]
    assert [{k: h[k] for k in hook} for h in copied] == [hook]
    H.wait_until(lambda: not {h.instance_id for h in env.world.hosts} & set(blue), 10, what="blue hosts removed")
    for iid in green:
        assert H.served(env.address(iid)) == "sample-app v2"
    # during the run: OneAtATime on 3 -> minimum 2, batches of 1
    assert not mon.errors
    assert mon.min_healthy >= 2, mon.samples
    # never more than one reroute batch (1) beyond the fleet's size in the serving group
    assert max(s["blue"] + s["green"] for s in mon.samples) <= N + 1, mon.samples
    assert max(s["green"] for s in mon.samples) == N and mon.samples[-1]["blue"] == 0
    # the record: originals' membership recorded, every event of both fleets
    hosts = {h["instance_id"]: h for h in record["hosts"]}
    assert set(blue) <= set(hosts) and set(green) <= set(hosts)
    assert all(hosts[i]["lb_membership"] and hosts[i]["lb_membership"][0]["target_group_arn"] == env.tg for i in blue)
    assert [e["name"] for e in hosts[blue[0]]["events"]] == ["BeforeBlockTraffic", "BlockTraffic", "AfterBlockTraffic"]
    assert [e["name"] for e in hosts[green[0]]["events"]][-3:] == ["BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic"]
    assert record["extra"]["bluegreen"]["phase"] == "finished"


def _alb(env: Env, blue_tg: str) -> dict[str, str]:
    """An ALB whose port-80 listener forwards to blue_tg, with a second rule (to a third group) on that
    listener and a second listener (fixed response): neither may change during a swap."""
    elbv2 = env.elbv2
    lb = elbv2.create_load_balancer(Name=H.unique("alb")[:32], Subnets=[env.world.subnet_id], Type="application")[
        "LoadBalancers"][0]["LoadBalancerArn"]
    other_tg = H.create_target_group(env.world, [], name=H.unique("other"), wait=False)
    main = elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80,
                                 DefaultActions=[{"Type": "forward", "TargetGroupArn": blue_tg}])["Listeners"][0]["ListenerArn"]
    rule = elbv2.create_rule(ListenerArn=main, Priority=10, Conditions=[{"Field": "path-pattern", "Values": ["/admin/*"]}],
                             Actions=[{"Type": "forward", "TargetGroupArn": other_tg}])["Rules"][0]["RuleArn"]
    second = elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=81, DefaultActions=[
        {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain"}}])["Listeners"][0]["ListenerArn"]
    return {"lb": lb, "listener": main, "rule": rule, "second": second, "other_tg": other_tg}


def test_copy_asg_listener_mode_keep_alive(env: Env, bundles: dict[str, Path]) -> None:
    blue_asg = env.blue_asg()
    blue = env.asg_ids(blue_asg)
    green_tg = H.create_target_group(env.world, [], name=H.unique("green"), wait=False)
    alb = _alb(env, env.tg)
    rule_before = env.elbv2.describe_rules(RuleArns=[alb["rule"]])["Rules"]
    second_before = env.elbv2.describe_listeners(ListenerArns=[alb["second"]])["Listeners"]
    with TrafficMonitor(env, blue, listener_arn=alb["listener"]) as mon:
        result = env.run(bundles["v2"], bluegreen_ec2_copy_auto_scaling_group=blue_asg,
                         rollwright_target_group_arns=f"{env.tg},{green_tg}", bluegreen_ec2_reroute_mode="listener",
                         bluegreen_ec2_listener_arn=alb["listener"], bluegreen_ec2_original_action="keep_alive")
    assert result.rc == 0, failures(result) or result
    record = env.record()
    green = env.asg_ids(f"{blue_asg}-{record['deployment_id']}")
    listener = env.elbv2.describe_listeners(ListenerArns=[alb["listener"]])["Listeners"][0]
    assert listener["DefaultActions"] == [{"Type": "forward", "TargetGroupArn": green_tg}]
    assert env.elbv2.describe_rules(RuleArns=[alb["rule"]])["Rules"] == rule_before
    assert env.elbv2.describe_listeners(ListenerArns=[alb["second"]])["Listeners"] == second_before
    assert set(env.members(green_tg)) == set(green) and all(s == "healthy" for s in env.members(green_tg).values())
    # keep_alive: originals deregistered from the blue group (which the group no longer feeds) and running
    assert not {i for i, s in env.members().items() if s != "draining"}
    assert set(env.states(blue).values()) == {"running"} and env.asg_ids(blue_asg) == blue
    assert env.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[blue_asg])["AutoScalingGroups"][0]["TargetGroupARNs"] == []
    for iid in green:
        assert H.served(env.address(iid)) == "sample-app v2"
    # the serving group (whichever the listener forwards to) was never short and never mixed
    assert not mon.errors and mon.min_healthy >= 2 and mon.max_mixed == 0, mon.samples
    assert {s["tg"] for s in mon.samples} == {env.tg, green_tg}


def test_ready_stop_without_continue_is_stopped(env: Env, bundles: dict[str, Path]) -> None:
    blue_asg = env.blue_asg()
    blue = env.asg_ids(blue_asg)
    with TrafficMonitor(env, blue) as mon:
        result = env.run(bundles["v2"], bluegreen_ec2_copy_auto_scaling_group=blue_asg,
                         bluegreen_ec2_ready_action="stop", bluegreen_ec2_ready_wait="3s")
    assert result.rc != 0, result
    record = env.record()
    assert record["status"] == "Stopped" and "no continue" in record["error"]
    green_asg = f"{blue_asg}-{record['deployment_id']}"
    assert not env.asg_exists(green_asg)
    green = record["extra"]["bluegreen"]["replacement_ids"]
    assert len(green) == N and set(env.states(green).values()) <= {"terminated", "shutting-down"}
    assert env.members() == {i: "healthy" for i in blue}
    assert mon.min_healthy == N and max(s["green"] for s in mon.samples) == 0
    H.wait_until(lambda: not {h.instance_id for h in env.world.hosts} & set(green), 10, what="green hosts removed")


def test_ready_stop_with_continue_proceeds(env: Env, bundles: dict[str, Path]) -> None:
    blue_asg = env.blue_asg()
    blue = env.asg_ids(blue_asg)
    continued: dict[str, Any] = {}

    def approve() -> None:
        store = env.store
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the deployment is Ready, then continue it
            try:
                found = store().list(f"bg-{env.name}", "g", limit=1)
            except Exception:  # pylint: disable=broad-except
                found = []
            if found and found[0].status == "Ready":
                continued["at"] = time.monotonic()
                continued["result"] = env.ansible_run(
                    CONTINUE, env.world.inventory, env={"XDG_STATE_HOME": str(env.state_dir)},
                    extra_vars={"rollwright_application": f"bg-{env.name}", "rollwright_deployment_group": "g"})
                return
            time.sleep(0.3)

    approver = threading.Thread(target=approve, daemon=True)
    approver.start()
    with TrafficMonitor(env, blue) as mon:
        result = env.run(bundles["v2"], bluegreen_ec2_copy_auto_scaling_group=blue_asg,
                         bluegreen_ec2_ready_action="stop", bluegreen_ec2_ready_wait="90s")
        approver.join(30)
    assert continued.get("result") is not None and continued["result"].rc == 0, continued
    assert result.rc == 0, failures(result) or result
    record = env.record()
    assert record["status"] == "Succeeded" and record["extra"]["bluegreen_continue"]["at"]
    green = env.asg_ids(f"{blue_asg}-{record['deployment_id']}")
    assert env.members() == {i: "healthy" for i in green}
    for iid in green:
        assert H.served(env.address(iid)) == "sample-app v2"
    # traffic: the blues alone served until the continue; then never short of the minimum, one batch mixed at most
    assert not mon.errors, mon.errors
    before = [s for s in mon.samples if s["t"] < continued["at"]]
    assert before and all(s["green"] == 0 and s["blue"] == N and s["healthy"] == N for s in before), before
    assert mon.min_healthy >= 2, mon.samples
    assert max(s["blue"] + s["green"] for s in mon.samples) <= N + 1, mon.samples
    assert mon.samples[-1]["green"] == N and mon.samples[-1]["blue"] == 0, mon.samples[-1]


def test_promote_ends_the_ready_wait_then_stop_in_the_original_wait_reroutes_back(env: Env, bundles: dict[str, Path]) -> None:
    """Issue 16, single-job form: `promote` while it waits in Ready (300 s) reroutes at once; `stop` during
    the original-fleet wait (300 s) puts the traffic back on the originals, which still run, and tears the
    replacement fleet down: Stopped. Both are requests in the record, honoured at the waits' safe points."""
    blue_asg = env.blue_asg()
    blue = env.asg_ids(blue_asg)
    app = {"rollwright_application": f"bg-{env.name}", "rollwright_deployment_group": "g"}
    asked: dict[str, Any] = {}

    def control() -> None:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and "stop" not in asked:
            try:
                found = env.store().list(f"bg-{env.name}", "g", limit=1)
                record = env.store().get(found[0].deployment_id) if found else None
            except Exception:  # pylint: disable=broad-except
                record = None
            phase = ((record.extra if record else {}).get("bluegreen") or {}).get("phase")
            for action, playbook, when in (("promote", PROMOTE, record is not None and record.status == "Ready"),
                                           ("stop", STOP, phase == "retiring")):
                if when and action not in asked:
                    asked[action] = time.monotonic()
                    asked[action + "_result"] = env.ansible_run(playbook, env.world.inventory, extra_vars=app,
                                                                env={"XDG_STATE_HOME": str(env.state_dir)})
            time.sleep(0.2)

    controller = threading.Thread(target=control, daemon=True)
    controller.start()
    with TrafficMonitor(env, blue) as mon:
        started = time.monotonic()
        result = env.run(bundles["v2"], bluegreen_ec2_copy_auto_scaling_group=blue_asg, bluegreen_ec2_ready_action="stop",
                         bluegreen_ec2_ready_wait="300s", bluegreen_ec2_original_wait="300s",
                         rollwright_deployment_config="CodeDeployDefault.AllAtOnce")  # one reroute batch: lean
        ended = time.monotonic()
        controller.join(30)
    assert asked.get("promote_result") is not None and asked["promote_result"].rc == 0, (asked, failures(result), result)
    assert asked.get("stop_result") is not None and asked["stop_result"].rc == 0, asked
    assert result.rc != 0 and ended - started < 200, (ended - started, failures(result))  # neither 300 s wait ran out
    record = env.record()
    assert record["status"] == "Stopped" and "stopped on request (stop" in record["error"], record["error"]
    requests = env.store().list_requests(record["deployment_id"])
    assert [(r.action, r.state, r.message) for r in requests] == [
        ("promote", "Done", "promoted: the ready wait ended"),
        ("stop", "Done", "stopped: the original fleet serves, the replacement fleet is torn down")]
    assert f"request promote {requests[0].request_id} by" in result.stdout + result.stderr  # the progress line
    # the originals serve again (healthy), the replacement fleet is gone, the original group has its target group back
    assert {i: st for i, st in env.members().items() if st != "draining"} == {i: "healthy" for i in blue}
    assert not env.asg_exists(f"{blue_asg}-{record['deployment_id']}")
    green = record["extra"]["bluegreen"]["replacement_ids"]
    assert set(env.states(green).values()) <= {"terminated", "shutting-down"}
    assert set(env.states(blue).values()) == {"running"}
    assert env.store().get_lock(f"bg-{env.name}", "g") is None
    # traffic: the blues alone until the promote; all green after the reroute; then back - the originals are
    # registered and healthy before the replacements leave, so the serving group never had fewer than N healthy
    assert not mon.errors and mon.min_healthy >= N, mon.samples
    assert all(s["green"] == 0 for s in mon.samples if s["t"] < asked["promote"]), mon.samples
    assert [s for s in mon.samples if asked["promote"] < s["t"] < asked["stop"] and s["green"] == N and s["blue"] == 0]
    assert mon.samples[-1]["blue"] == N and mon.samples[-1]["green"] == 0, mon.samples[-1]


def test_validate_failure_on_one_green_host_rolls_back(env: Env, bundles: dict[str, Path]) -> None:
    blue_asg = env.blue_asg()
    blue = env.asg_ids(blue_asg)
    with TrafficMonitor(env, blue, fail_validate_on_first_green=True) as mon:
        result = env.run(bundles["v2"], bluegreen_ec2_copy_auto_scaling_group=blue_asg)
    assert result.rc != 0, result
    record = env.record()
    assert record["status"] == "Failed" and "ValidateService" in record["error"], record["error"]
    failed = {h["instance_id"]: h for h in record["hosts"]}[mon.failed_host]
    assert failed["status"] == "Failed"
    assert [e["status"] for e in failed["events"] if e["name"] == "ValidateService"] == ["Failed"]
    # originals untouched and serving; replacement fleet gone
    assert env.members() == {i: "healthy" for i in blue} and mon.min_healthy == N
    assert not env.asg_exists(f"{blue_asg}-{record['deployment_id']}")
    green = record["extra"]["bluegreen"]["replacement_ids"]
    assert set(env.states(green).values()) <= {"terminated", "shutting-down"}
    assert env.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[blue_asg])["AutoScalingGroups"][0]["TargetGroupARNs"] == [env.tg]


def test_launch_template_flow(env: Env, bundles: dict[str, Path]) -> None:
    blue_asg = env.blue_asg()
    blue = env.asg_ids(blue_asg)
    env.ec2.create_launch_template_version(LaunchTemplateName=env.template,
                                           LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.small"})
    with TrafficMonitor(env, blue) as mon:
        result = env.run(bundles["v2"], bluegreen_ec2_launch_template=env.template, bluegreen_ec2_launch_template_version="2",
                         bluegreen_ec2_count=2, bluegreen_ec2_subnets=env.world.subnet_id,
                         bluegreen_ec2_original_auto_scaling_group=blue_asg,
                         rollwright_deployment_config="CodeDeployDefault.AllAtOnce")
    assert result.rc == 0, failures(result) or result
    record = env.record()
    green = record["extra"]["bluegreen"]["replacement_ids"]
    assert len(green) == 2 and set(env.members()) == set(green)
    found = env.ec2.describe_instances(InstanceIds=green)["Reservations"]
    assert {i["InstanceType"] for r in found for i in r["Instances"]} == {"t3.small"}
    tags = {t["Key"]: t["Value"] for r in found for i in r["Instances"] for t in i["Tags"]}
    assert tags["rollwright:deployment-id"] == record["deployment_id"]
    # terminate: the original group is scaled to zero (it stays), its instances end
    assert env.asg_exists(blue_asg) and env.asg_ids(blue_asg) == []
    assert set(env.states(blue).values()) <= {"terminated", "shutting-down"}
    # AllAtOnce: minimum 0 - one batch of 2 greens, then the 3 blues in batches of 2
    assert record["extra"]["bluegreen"]["batch_size"] == 2
    assert max(s["blue"] + s["green"] for s in mon.samples) <= N + 2
    for iid in green:
        assert H.served(env.address(iid)) == "sample-app v2"


@pytest.mark.parametrize("via", ["bluegreen_step", "recover_playbook"])
def test_controller_killed_during_reroute_then_recover(env: Env, bundles: dict[str, Path], via: str) -> None:
    """kill -9 of ansible-playbook as soon as a green target is registered (the lease keeper marks it
    Stopped and keeps the lock); the record alone lets
    `bluegreen_step: step=recover`, or `ansible-playbook rollwright.deploy.recover` (which finds the
    deployment by the group's lock and dispatches on its type), put the originals back (healthy first)
    and tear the green fleet down."""
    import subprocess

    from tests.harness.ansible_run import VENV_BIN, ansible_env

    blue_asg = env.blue_asg()
    blue = env.asg_ids(blue_asg)
    extra = {"rollwright_application": f"bg-{env.name}", "rollwright_deployment_group": "g",
             "rollwright_revision": str(bundles["v2"]), "rollwright_target_group_arns": env.tg,
             "rollwright_file_exists_behavior": "OVERWRITE", "bluegreen_ec2_copy_auto_scaling_group": blue_asg}
    vars_file = env.state_dir / "vars.json"
    vars_file.write_text(__import__("json").dumps(extra))
    environ = ansible_env(env.world.aws_env(), str(env.state_dir / "cp"), {"XDG_STATE_HOME": str(env.state_dir)})
    proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(env.world.inventory), PLAYBOOK, "-e", f"@{vars_file}"],
                            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    recover_vars = {"rollwright_application": f"bg-{env.name}", "rollwright_deployment_group": "g"}
    with TrafficMonitor(env, blue) as mon:
        try:
            H.wait_until(lambda: any(s["green"] for s in mon.samples[-3:]), 180, interval=0.05, what="a green target registered")
        finally:
            os.killpg(proc.pid, 9)
            proc.wait(10)
        # the lease keeper (it outlives the killed process group) marks the deployment Stopped and keeps the lock
        H.wait_until(lambda: env.record()["status"] == "Stopped", 15, interval=0.1, what="the lease keeper's Stopped")
        record = env.record()
        assert record["extra"]["bluegreen"]["phase"] == "rerouting"
        assert record["extra"]["interrupted"]["noticed_by"] == "lease keeper" and "recover" in record["error"]
        assert "held for recovery" in env.store().get_lock(f"bg-{env.name}", "g").owner
        green = record["extra"]["bluegreen"]["replacement_ids"]
        if via == "bluegreen_step":
            recovered = env.ansible_run(
                [{"hosts": "localhost", "gather_facts": False, "tasks": [{
                    "rollwright.deploy.bluegreen_step": {"step": "recover", "deployment_id": record["deployment_id"],
                                                         "force_lock": True}, "register": "out"}]}],
                env.world.inventory, env={"XDG_STATE_HOME": str(env.state_dir)})
        else:
            # the lock is fresh (the keeper took it over), but its controller ran on this machine and is gone
            # (pid and start time, recorded by the keeper): recovered without force
            recovered = env.ansible_run(RECOVER, env.world.inventory, extra_vars=recover_vars,
                                        env={"XDG_STATE_HOME": str(env.state_dir)})
        time.sleep(0.5)
    assert recovered.rc == 0, failures(recovered) or recovered
    if via == "bluegreen_step":
        out = recovered.task("rollwright.deploy.bluegreen_step")["localhost"]["recovery"]
    else:
        task = recovered.task(RECOVER_TASK)["localhost"]
        assert task["changed"] is True and task["deployment_type"] == "blue_green_ec2"
        assert task["deployment_id"] == record["deployment_id"] and task["plan"]["action"] == "rolled_back"
        assert "rolled back" in task["message"], task["message"]
        out = task["report"]
        assert out["lock_released"] is True
    assert out["action"] == "rolled_back" and out["phase_before"] == "rerouting"
    record = env.record()
    assert record["status"] == "Stopped" and "died or was interrupted" in record["error"]
    assert {i for i, s in env.members().items() if s != "draining"} == set(blue)
    assert all(s == "healthy" for i, s in env.members().items() if i in blue)
    assert not env.asg_exists(f"{blue_asg}-{record['deployment_id']}")
    assert set(env.states(green).values()) <= {"terminated", "shutting-down"}
    assert env.store().get_lock(f"bg-{env.name}", "g") is None
    # the serving group was never short of the minimum, before, during and after recovery
    assert mon.min_healthy >= 2, mon.samples
    if via == "recover_playbook":
        again = env.ansible_run(RECOVER, env.world.inventory, extra_vars=recover_vars,
                                env={"XDG_STATE_HOME": str(env.state_dir)})
        assert again.rc == 0, failures(again) or again
        assert again.task(RECOVER_TASK)["localhost"]["changed"] is False
        assert "nothing to recover" in again.task(RECOVER_TASK)["localhost"]["message"]
