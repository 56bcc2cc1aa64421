# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""EC2 blue/green engine: inputs, copy request, listener swap, batches, and the controller steps
(start, provision, ready, reroute, finish, rollback, recover, continue) against moto in-process with a
real SQLite record store. Host-side results are given as the dicts host_lifecycle returns."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import bluegreen as bgm
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import fleet_provision as fp
from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import recovery
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.listener import (
    ListenerError,
    ListenerSwitch,
    forwarded_target_groups,
    live_and_idle,
    swap_actions,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

REGION = "us-east-1"
AMI = "ami-03cf127a"


# ---------------------------------------------------------------------------------------------- inputs

@pytest.mark.parametrize("text,seconds", [(90, 90), ("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600),
                                          ("1h30m", 5400), ("2d", 172800), ("0", 0), ("1.5m", 90)])
def test_parse_duration(text: Any, seconds: float) -> None:
    assert fp.parse_duration(text, "w") == seconds


@pytest.mark.parametrize("bad", ["", "soon", "-5", "1h30", True, None, [1]])
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(fp.FleetError, match="^w: "):
        fp.parse_duration(bad, "w")


def test_parse_tags() -> None:
    assert fp.parse_tags("app=web, env = prod", "t") == {"app": "web", "env": "prod"}
    assert fp.parse_tags({"a": 1}, "t") == {"a": "1"}
    assert fp.parse_tags("", "t") == {}
    with pytest.raises(fp.FleetError, match="key=value"):
        fp.parse_tags("app", "t")


def test_normalise_replacement_forms() -> None:
    assert fp.normalise_replacement(copy_auto_scaling_group="web") == {"kind": "copy_auto_scaling_group", "auto_scaling_group": "web"}
    lt = fp.normalise_replacement(launch_template="web-lt", launch_template_version=3, count="2", subnets="subnet-a,subnet-b")
    assert lt == {"kind": "launch_template", "launch_template": {"name": "web-lt", "version": "3"}, "count": 2,
                  "subnets": ["subnet-a", "subnet-b"]}
    by_id = fp.normalise_replacement({"launch_template": "lt-0123456789abcdef0", "count": 1, "subnets": ["s"]})
    assert by_id["launch_template"] == {"id": "lt-0123456789abcdef0", "version": "$Default"}
    assert fp.normalise_replacement(instance_tags="fleet=green") == {"kind": "instances", "tags": {"fleet": "green"}}
    with pytest.raises(fp.FleetError, match="exactly one replacement fleet.*got copy_auto_scaling_group, launch_template"):
        fp.normalise_replacement(copy_auto_scaling_group="a", launch_template="b", count=1, subnets="s")
    with pytest.raises(fp.FleetError, match="none"):
        fp.normalise_replacement()
    with pytest.raises(fp.FleetError, match="count: expected a whole number"):
        fp.normalise_replacement(launch_template="x", count=0, subnets="s")
    with pytest.raises(fp.FleetError, match="subnets"):
        fp.normalise_replacement(launch_template="x", count=1)


def test_normalise_original_defaults() -> None:
    copy = {"kind": "copy_auto_scaling_group", "auto_scaling_group": "web"}
    assert fp.normalise_original(replacement=copy) == {"kind": "auto_scaling_group", "auto_scaling_group": "web"}
    assert fp.normalise_original() == {"kind": "target_groups"}
    assert fp.normalise_original(hosts="a,b") == {"kind": "hosts", "hosts": ["a", "b"]}
    with pytest.raises(fp.FleetError, match="at most one"):
        fp.normalise_original(hosts="a", tags="x=y")


def test_copy_request_keeps_the_template_version_and_drops_load_balancers() -> None:
    original = {
        "AutoScalingGroupName": "web", "LaunchTemplate": {"LaunchTemplateId": "lt-1", "LaunchTemplateName": "t", "Version": "7"},
        "MinSize": 2, "MaxSize": 6, "DesiredCapacity": 3, "VPCZoneIdentifier": "subnet-a,subnet-b", "HealthCheckType": "ELB",
        "HealthCheckGracePeriod": 60, "TargetGroupARNs": ["arn:tg"], "LoadBalancerNames": ["clb"],
        "Tags": [{"Key": "app", "Value": "web", "PropagateAtLaunch": True},
                 {"Key": "aws:cloudformation:stack-name", "Value": "s", "PropagateAtLaunch": False}],
    }
    req = fp.copy_request(original, "web-d-ABCDEFGHI", "d-ABCDEFGHI")
    assert req["LaunchTemplate"] == {"LaunchTemplateId": "lt-1", "Version": "7"}
    assert (req["MinSize"], req["MaxSize"], req["DesiredCapacity"]) == (2, 6, 3)
    assert req["VPCZoneIdentifier"] == "subnet-a,subnet-b" and req["HealthCheckGracePeriod"] == 60
    assert "TargetGroupARNs" not in req and "LoadBalancerNames" not in req
    tags = {t["Key"]: t for t in req["Tags"]}
    assert set(tags) == {"app", fp.DEPLOYMENT_TAG, fp.FLEET_TAG}
    assert tags[fp.DEPLOYMENT_TAG]["Value"] == "d-ABCDEFGHI" and tags[fp.DEPLOYMENT_TAG]["PropagateAtLaunch"]


def test_spread() -> None:
    assert fp.spread(5, ["a", "b"]) == [("a", 3), ("b", 2)]
    assert fp.spread(1, ["a", "b", "c"]) == [("a", 1)]


# ---------------------------------------------------------------------------------------------- listener

BLUE, GREEN, OTHER = "arn:tg/blue", "arn:tg/green", "arn:tg/other"


def test_swap_plain_and_weighted_actions() -> None:
    actions = [{"Type": "authenticate-oidc", "Order": 1, "AuthenticateOidcConfig": {"Issuer": "x"}},
               {"Type": "forward", "Order": 2, "TargetGroupArn": BLUE}]
    new, changed = swap_actions(actions, BLUE, GREEN)
    assert changed and new[1]["TargetGroupArn"] == GREEN and new[0] == actions[0] and actions[1]["TargetGroupArn"] == BLUE
    weighted = [{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": BLUE, "Weight": 90},
                                                                       {"TargetGroupArn": OTHER, "Weight": 10}],
                                                      "TargetGroupStickinessConfig": {"Enabled": True, "DurationSeconds": 60}}}]
    new, changed = swap_actions(weighted, BLUE, GREEN)
    assert changed and new[0]["ForwardConfig"]["TargetGroups"] == [{"TargetGroupArn": GREEN, "Weight": 90},
                                                                   {"TargetGroupArn": OTHER, "Weight": 10}]
    assert new[0]["ForwardConfig"]["TargetGroupStickinessConfig"] == {"Enabled": True, "DurationSeconds": 60}
    assert swap_actions(new, BLUE, GREEN) == (new, False)
    with pytest.raises(ListenerError, match="both"):
        swap_actions([{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": BLUE}, {"TargetGroupArn": GREEN}]}}],
                     BLUE, GREEN)


def test_live_and_idle() -> None:
    actions = [{"Type": "forward", "TargetGroupArn": GREEN}]
    assert live_and_idle(actions, [BLUE, GREEN]) == (GREEN, BLUE)
    assert forwarded_target_groups(actions) == [GREEN]
    with pytest.raises(ListenerError, match="exactly one of"):
        live_and_idle([{"Type": "forward", "TargetGroupArn": OTHER}], [BLUE, GREEN])
    with pytest.raises(ListenerError, match="exactly two"):
        live_and_idle(actions, [BLUE])


# ---------------------------------------------------------------------------------------------- planning

def test_reroute_batches_gain_before_loss() -> None:
    assert bgm.reroute_batches(["g1", "g2", "g3"], ["b1", "b2", "b3"], 1) == [
        (["g1"], ["b1"]), (["g2"], ["b2"]), (["g3"], ["b3"])]
    assert bgm.reroute_batches(["g1", "g2"], ["b1", "b2", "b3"], 2) == [(["g1", "g2"], ["b1", "b2"]), ([], ["b3"])]


def test_plan_fleet_uses_the_replacement_fleet() -> None:
    assert bgm.plan_fleet("CodeDeployDefault.OneAtATime", 3) == (2, 1)
    assert bgm.plan_fleet("CodeDeployDefault.HalfAtATime", 4) == (2, 2)
    assert bgm.plan_fleet("CodeDeployDefault.AllAtOnce", 3) == (0, 3)
    with pytest.raises(bgm.BlueGreenError, match="leaves no room"):
        bgm.plan_fleet("HOST_COUNT:3", 3)


def test_host_calls_follow_lifecycle() -> None:
    assert bgm.HOST_CALLS["install"] == ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall",
                                         "ApplicationStart", "ValidateService"]
    assert (bgm.HOST_CALLS["pre_allow"], bgm.HOST_CALLS["post_allow"]) == (["BeforeAllowTraffic"], ["AfterAllowTraffic"])
    assert (bgm.HOST_CALLS["pre_block"], bgm.HOST_CALLS["post_block"]) == (["BeforeBlockTraffic"], ["AfterBlockTraffic"])


# ---------------------------------------------------------------------------------------------- engine on moto

class Clients:
    def __init__(self) -> None:
        self._c: dict[str, Any] = {}

    def client(self, name: str) -> Any:
        if name not in self._c:
            self._c[name] = boto3.client(name, region_name=REGION)
        return self._c[name]


@pytest.fixture
def aws_world(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for k, v in {"AWS_ACCESS_KEY_ID": "unit-test-key", "AWS_SECRET_ACCESS_KEY": "unit-test-secret", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        clients = Clients()
        ec2, asg, elbv2 = clients.client("ec2"), clients.client("autoscaling"), clients.client("elbv2")
        vpc = ec2.create_vpc(CidrBlock="10.9.0.0/24")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.0.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
        ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"})
        tg = elbv2.create_target_group(Name="blue", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="instance")[
            "TargetGroups"][0]["TargetGroupArn"]
        asg.create_auto_scaling_group(AutoScalingGroupName="web", LaunchTemplate={"LaunchTemplateName": "web", "Version": "1"},
                                      MinSize=3, MaxSize=3, DesiredCapacity=3, VPCZoneIdentifier=subnet, TargetGroupARNs=[tg])
        blue = sorted(i["InstanceId"] for i in asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])[
            "AutoScalingGroups"][0]["Instances"])
        store = open_store("sqlite", {"path": str(tmp_path / "records.sqlite3")})
        yield {"clients": clients, "tg": tg, "blue": blue, "store": store, "subnet": subnet, "vpc": vpc}


def ok(events: list[str]) -> dict:
    return {"changed": True, "events": [{"name": e, "status": "Succeeded"} for e in events]}


def failed(events: list[str], at: str) -> dict:
    evs = []
    for e in events:
        evs.append({"name": e, "status": "Failed" if e == at else ("Skipped" if evs and evs[-1]["status"] != "Succeeded" else "Succeeded"),
                    "message": "exit code 3" if e == at else None})
    return {"failed": True, "msg": f"{at} failed: exit code 3", "events": evs}


def start(w: dict, **kw: Any) -> tuple[bgm.BlueGreenRun, dict]:
    run = bgm.BlueGreenRun(w["store"], w["clients"], sleep=lambda s: None)
    args = dict(application="app", deployment_group="g", revision={"source": "local", "sha256": "x"}, appspec={}, config=None,
                lb_config={"target_group_arns": [w["tg"]], "classic_elb_names": []}, reroute={"mode": "targets"},
                ready={"action": "continue", "wait": 0}, original={"action": "terminate", "wait": 0},
                replacement_spec={"kind": "copy_auto_scaling_group", "auto_scaling_group": "web"},
                original_spec={"kind": "auto_scaling_group", "auto_scaling_group": "web"}, inventory_ids={},
                options={"healthy_timeout": 5, "drain_timeout": 5})
    args.update(kw)
    return run, run.start(**args)


def members(w: dict) -> set[str]:
    return {d["Target"]["Id"] for d in w["clients"].client("elbv2").describe_target_health(TargetGroupArn=w["tg"])["TargetHealthDescriptions"]}


def test_start_records_originals_before_any_change(aws_world: dict) -> None:
    run, state = start(aws_world)
    record = aws_world["store"].get(state["deployment_id"])
    assert record.deployment_type == "blue_green_ec2" and record.status == "InProgress"
    assert {h.instance_id for h in record.hosts} == set(aws_world["blue"])
    assert all(h.lb_membership == [{"kind": "elbv2", "target_group_arn": aws_world["tg"], "target_id": h.instance_id,
                                    "port": 8080, "availability_zone": None}] for h in record.hosts)
    bg = record.extra["bluegreen"]
    assert bg["phase"] == "started" and bg["original_asg_attachments"]["target_group_arns"] == [aws_world["tg"]]
    assert (bg["minimum"], bg["batch_size"]) == (2, 1)
    lock = aws_world["store"].get_lock("app", "g")
    assert lock is not None and lock.deployment_id == state["deployment_id"]
    with pytest.raises(Exception, match="locked by deployment"):
        start(aws_world)


def test_full_run_then_terminate(aws_world: dict) -> None:
    w = aws_world
    run, state = start(w)
    state = run.provision(state, timeout=10)
    green = state["bg"]["replacement_ids"]
    assert len(green) == 3 and state["bg"]["replacement_asg"] == f"web-{state['deployment_id']}"
    names = run.replacement_names(state)
    state = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in names})
    pre = {n: ok(["BeforeAllowTraffic"]) for n in names}
    pre.update({n: ok(["BeforeBlockTraffic"]) for n in run.original_names(state)})
    state = run.reroute(state, pre)
    assert not state["done"] and state["bg"]["phase"] == "rerouted", state.get("error")
    assert members(w) == set(green)
    asg = w["clients"].client("autoscaling")
    assert asg.describe_auto_scaling_groups(AutoScalingGroupNames=[state["bg"]["replacement_asg"]])["AutoScalingGroups"][0]["TargetGroupARNs"] == [w["tg"]]
    post = {n: ok(["AfterAllowTraffic"]) for n in names}
    post.update({n: ok(["AfterBlockTraffic"]) for n in run.original_names(state)})
    state = run.finish(state, post)
    assert state["status"] == "Succeeded"
    assert asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]["DesiredCapacity"] == 0
    assert w["store"].get_lock("app", "g") is None
    assert w["store"].get(state["deployment_id"]).extra["bluegreen"]["phase"] == "finished"


def test_install_failure_tears_down_and_leaves_originals(aws_world: dict) -> None:
    w = aws_world
    run, state = start(w)
    state = run.provision(state, timeout=10)
    names = run.replacement_names(state)
    results = {n: ok(bgm.HOST_CALLS["install"]) for n in names}
    results[names[1]] = failed(bgm.HOST_CALLS["install"], "ValidateService")
    state = run.ready(state, results)
    assert state["done"] and state["status"] == "Failed" and names[1] in state["error"]
    asg = w["clients"].client("autoscaling")
    assert not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[state["bg"]["replacement_asg"]])["AutoScalingGroups"]
    described = fp.Ec2Fleet(w["clients"]).describe(state["bg"]["replacement_ids"])
    assert {d["state"] for d in described.values()} <= {"terminated", "shutting-down"}
    assert members(w) == set(w["blue"])
    record = w["store"].get(state["deployment_id"])
    assert record.host(names[1]).status == "Failed" and record.host(names[1]).event("ValidateService").status == "Failed"


def test_ready_stop_times_out_as_stopped_and_continue_proceeds(aws_world: dict) -> None:
    w = aws_world
    clock = {"t": 0.0}
    run = bgm.BlueGreenRun(w["store"], w["clients"], sleep=lambda s: clock.__setitem__("t", clock["t"] + s), now=lambda: clock["t"])
    state = start(w, ready={"action": "stop", "wait": 60})[1]
    state = run.provision(state, timeout=10)
    names = run.replacement_names(state)
    stopped = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in names})
    assert stopped["status"] == "Stopped" and "no continue within 60s" in stopped["error"]
    assert members(w) == set(w["blue"])

    # a continue before the fleet is Ready is not recorded: it waits for Ready (here 5 s), then is refused
    state = start(w, ready={"action": "stop", "wait": 60})[1]
    state = run.provision(state, timeout=10)
    names = run.replacement_names(state)
    fake = {"sleep": lambda s: clock.__setitem__("t", clock["t"] + s), "now": lambda: clock["t"]}
    waited_from = clock["t"]
    with pytest.raises(bgm.BlueGreenError, match=r"is not Ready \(status InProgress, phase installing\) after 5s"):
        bgm.request_continue(w["store"], application="app", deployment_group="g", by="tester", wait=5, **fake)
    assert 5 <= clock["t"] - waited_from < 7
    assert bgm.CONTINUE_KEY not in w["store"].get(state["deployment_id"]).extra
    # one that comes while it waits in Ready lets it go on
    continued = []

    def approve_while_waiting(seconds: float) -> None:
        clock["t"] += seconds
        if not continued:
            continued.append(bgm.request_continue(w["store"], application="app", deployment_group="g", by="tester", wait=0))

    run.sleep = approve_while_waiting
    state = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in names})
    assert continued[0]["deployment_id"] == state["deployment_id"] and continued[0]["changed"]
    assert continued[0]["status"] == "Ready" and not continued[0]["split"]
    assert not state["done"] and w["store"].get(state["deployment_id"]).status == "InProgress"


def _age_lock(store: Any, application: str, group: str, seconds: float) -> None:
    """Make the group's lock look renewed `seconds` ago (the store judges staleness by its clock)."""
    import datetime
    import sqlite3

    then = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE locks SET heartbeat_at = ? WHERE application = ? AND deployment_group = ?", (then, application, group))


def test_split_form_hands_over_in_ready_then_a_continue_resumes_it(aws_world: dict) -> None:
    w = aws_world
    clock = {"t": 0.0}
    run = bgm.BlueGreenRun(w["store"], w["clients"], sleep=lambda s: None)
    state = start(w, ready={"action": "stop", "wait": 600, "split": True})[1]
    first_lock = dict(state["lock"])
    state = run.provision(state, timeout=10)
    names = run.replacement_names(state)
    handed = {}

    def job_one_reaches_ready(seconds: float) -> None:  # the continue started before Ready: job 1 goes on meanwhile
        clock["t"] += seconds
        if not handed:
            handed["state"] = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in names})

    out = bgm.request_continue(w["store"], application="app", deployment_group="g", by="approver", wait=30,
                               sleep=job_one_reaches_ready, now=lambda: clock["t"])
    ended = handed["state"]
    assert ended["done"] and ended["status"] == "Ready" and out["split"] and out["changed"]
    record = w["store"].get(state["deployment_id"])
    assert record.status == "Ready" and record.extra["bluegreen"]["handover"]["window"] == 600
    assert record.extra[bgm.CONTINUE_KEY]["by"] == "approver"
    assert "lock" not in record.extra[bgm.RESUME_KEY] and "host_vars" not in record.extra[bgm.RESUME_KEY]["options"]
    lease = w["store"].get_lock("app", "g")
    assert lease.ttl == 600 and not lease.stale and lease.owner.endswith("(awaiting approval)")
    live = control_requests.status(w["store"], record)  # a fresh lease, but no process behind it
    assert live["awaiting_approval"] and not live["controller_alive"], live
    with pytest.raises(Exception, match="no longer held"):  # job 1's token is fenced out
        w["store"].heartbeat(first_lock)
    # a recovery within the window refuses: the deployment waits for approval, it is not dead
    with pytest.raises(bgm.BlueGreenError, match="waits for approval until"):
        bgm.recover(w["store"], w["clients"], state["deployment_id"])
    assert recovery.bluegreen_plan(record, lease)["refused"]

    job2 = bgm.BlueGreenRun(w["store"], w["clients"], sleep=lambda s: None)
    resumed = job2.resume(state["deployment_id"], host_vars={"ansible_user": "deploy"})
    assert resumed["options"]["host_vars"] == {"ansible_user": "deploy"} and resumed["replacements"] == ended["replacements"]
    assert w["store"].get(state["deployment_id"]).status == "InProgress"
    with pytest.raises(bgm.BlueGreenError, match="no longer Ready"):  # a second approval loses
        bgm.BlueGreenRun(w["store"], w["clients"]).resume(state["deployment_id"])
    pre = {n: ok(["BeforeAllowTraffic"]) for n in names}
    pre.update({n: ok(["BeforeBlockTraffic"]) for n in job2.original_names(resumed)})
    resumed = job2.reroute(resumed, pre)
    post = {n: ok(["AfterAllowTraffic"]) for n in names}
    post.update({n: ok(["AfterBlockTraffic"]) for n in job2.original_names(resumed)})
    resumed = job2.finish(resumed, post)
    assert resumed["status"] == "Succeeded" and members(w) == set(resumed["bg"]["replacement_ids"])
    assert w["store"].get_lock("app", "g") is None


@pytest.mark.parametrize("how", ["deny", "window_passed"])
def test_split_form_deny_or_a_passed_window_tears_the_fleet_down(aws_world: dict, how: str) -> None:
    w = aws_world
    run = bgm.BlueGreenRun(w["store"], w["clients"], sleep=lambda s: None)
    state = start(w, ready={"action": "stop", "wait": 120, "split": True})[1]
    state = run.provision(state, timeout=10)
    state = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in run.replacement_names(state)})
    assert state["status"] == "Ready"
    if how == "deny":
        out = bgm.recover(w["store"], w["clients"], state["deployment_id"], stop_reason="denied by approver")
        reason = "denied by approver"
    else:
        _age_lock(w["store"], "app", "g", 121)
        with pytest.raises(bgm.BlueGreenError, match="approval window .* ended"):
            bgm.BlueGreenRun(w["store"], w["clients"]).resume(state["deployment_id"])
        out = bgm.recover(w["store"], w["clients"], state["deployment_id"])
        reason = "no approval within the approval window"
    record = w["store"].get(state["deployment_id"])
    assert out["action"] == "rolled_back" and record.status == "Stopped" and reason in record.error
    assert members(w) == set(w["blue"]) and w["store"].get_lock("app", "g") is None
    described = fp.Ec2Fleet(w["clients"]).describe(state["bg"]["replacement_ids"])
    assert {d["state"] for d in described.values()} <= {"terminated", "shutting-down"}


def test_after_traffic_failure_restores_originals_first(aws_world: dict) -> None:
    w = aws_world
    run, state = start(w)
    state = run.provision(state, timeout=10)
    names = run.replacement_names(state)
    state = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in names})
    pre = {n: ok(["BeforeAllowTraffic"]) for n in names}
    pre.update({n: ok(["BeforeBlockTraffic"]) for n in run.original_names(state)})
    state = run.reroute(state, pre)
    post = {n: ok(["AfterAllowTraffic"]) for n in names}
    post[names[0]] = failed(["AfterAllowTraffic"], "AfterAllowTraffic")
    post.update({n: ok(["AfterBlockTraffic"]) for n in run.original_names(state)})
    state = run.finish(state, post)
    assert state["status"] == "Failed"
    assert members(w) == set(w["blue"])  # originals back, replacements out
    asg = w["clients"].client("autoscaling")
    web = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]
    assert web["TargetGroupARNs"] == [w["tg"]] and web["DesiredCapacity"] == 3  # kept, re-attached
    assert not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[state["bg"]["replacement_asg"]])["AutoScalingGroups"]
    restored = w["store"].get(state["deployment_id"]).extra["bluegreen"]["restored"]
    assert restored["originals_registered"] == sorted(w["blue"]) and restored["original_asg_attached"] == "web"


def test_recover_from_record_after_a_crash_mid_provision(aws_world: dict) -> None:
    """The controller died right after creating the group: only the record (planned name) is left."""
    w = aws_world
    run, state = start(w)
    state = run.provision(state, timeout=10)  # then the controller "dies": no further step
    with pytest.raises(bgm.BlueGreenError, match="looks alive"):
        bgm.recover(w["store"], w["clients"], state["deployment_id"])
    out = bgm.recover(w["store"], w["clients"], state["deployment_id"], force=True)
    assert out["action"] == "rolled_back" and out["status"] == "Failed" and out["phase_before"] == "installing"
    assert out["restored"]["replacement_asg_deleted"] == state["bg"]["replacement_asg"]
    assert set(out["restored"]["terminated"]) >= set(state["bg"]["replacement_ids"])
    assert members(w) == set(w["blue"]) and w["store"].get_lock("app", "g") is None
    assert bgm.recover(w["store"], w["clients"], state["deployment_id"])["action"] == "none"


def test_listener_mode_swaps_only_the_listener(aws_world: dict) -> None:
    w = aws_world
    elbv2 = w["clients"].client("elbv2")
    green_tg = elbv2.create_target_group(Name="green", Protocol="HTTP", Port=8080, VpcId=w["vpc"], TargetType="instance")[
        "TargetGroups"][0]["TargetGroupArn"]
    lb = elbv2.create_load_balancer(Name="alb", Subnets=[w["subnet"]])["LoadBalancers"][0]["LoadBalancerArn"]
    listener = elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80,
                                     DefaultActions=[{"Type": "forward", "TargetGroupArn": w["tg"]}])["Listeners"][0]["ListenerArn"]
    rule = elbv2.create_rule(ListenerArn=listener, Priority=5, Conditions=[{"Field": "path-pattern", "Values": ["/x"]}],
                             Actions=[{"Type": "forward", "TargetGroupArn": w["tg"]}])["Rules"][0]
    run, state = start(w, lb_config={"target_group_arns": [green_tg, w["tg"]]},
                       reroute={"mode": "listener", "listener_arn": listener, "rule_arn": None},
                       original={"action": "keep_alive", "wait": 0})
    assert (state["bg"]["blue_tg"], state["bg"]["green_tg"]) == (w["tg"], green_tg)
    state = run.provision(state, timeout=10)
    names = run.replacement_names(state)
    state = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in names})
    pre = {n: ok(["BeforeAllowTraffic"]) for n in names}
    pre.update({n: ok(["BeforeBlockTraffic"]) for n in run.original_names(state)})
    state = run.reroute(state, pre)
    assert state["bg"]["listener_swapped"] is True, state.get("error")
    assert ListenerSwitch(elbv2).read(listener) == [{"Type": "forward", "TargetGroupArn": green_tg}]
    assert elbv2.describe_rules(RuleArns=[rule["RuleArn"]])["Rules"][0]["Actions"] == rule["Actions"]
    # a crash now: recovery swaps back and puts the originals back
    out = bgm.recover(w["store"], w["clients"], state["deployment_id"], force=True)
    assert out["restored"]["listener_restored"]
    assert ListenerSwitch(elbv2).read(listener) == [{"Type": "forward", "TargetGroupArn": w["tg"]}]
    assert members(w) == set(w["blue"])


# ---- control requests (stop, promote) at the blue/green safe points ----------------------------

def _ready_run(w: dict, requests: list, **ready: Any) -> tuple[bgm.BlueGreenRun, dict]:
    """A run up to Ready; `requests` (action names) are asked once the ready wait has begun."""
    clock = {"t": 0.0}
    run = bgm.BlueGreenRun(w["store"], w["clients"], now=lambda: clock["t"])
    state = start(w, ready={"action": "stop", "wait": 60, **ready})[1]
    state = run.provision(state, timeout=10)

    def sleep(seconds: float) -> None:
        clock["t"] += seconds
        while requests:
            control_requests.submit(w["store"], state["deployment_id"], requests.pop(0), requested_by="tester")

    run.sleep = sleep
    return run, state


def test_promote_ends_the_ready_wait_and_the_original_wait(aws_world: dict) -> None:
    w = aws_world
    run, state = _ready_run(w, ["promote"])
    names = run.replacement_names(state)
    state = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in names})
    assert not state["done"] and w["store"].get(state["deployment_id"]).status == "InProgress"
    assert run.now() < 10  # not the 60 s wait
    pre = {n: ok(["BeforeAllowTraffic"]) for n in names}
    pre.update({n: ok(["BeforeBlockTraffic"]) for n in run.original_names(state)})
    state = run.reroute(state, pre)
    state["bg"]["original_wait"] = 3600.0
    post = {n: ok(["AfterAllowTraffic"]) for n in names}
    post.update({n: ok(["AfterBlockTraffic"]) for n in run.original_names(state)})
    before = run.now()
    control_requests.submit(w["store"], state["deployment_id"], "promote", requested_by="tester")
    state = run.finish(state, post)
    assert state["status"] == "Succeeded" and run.now() - before < 5
    done = list(w["store"].list_requests(state["deployment_id"]))
    assert [(r.action, r.state) for r in done] == [("promote", "Done"), ("promote", "Done")]
    assert [r.message for r in done] == ["promoted: the ready wait ended", "promoted: the original-fleet wait ended"]


@pytest.mark.parametrize("when", ["ready_wait", "between_reroute_batches", "original_wait"])
def test_stop_request_puts_the_originals_back_and_tears_the_fleet_down(aws_world: dict, when: str) -> None:
    w = aws_world
    run, state = _ready_run(w, ["stop"] if when == "ready_wait" else [], action="stop" if when == "ready_wait" else "continue")
    names = run.replacement_names(state)
    state = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in names})
    if when != "ready_wait":
        pre = {n: ok(["BeforeAllowTraffic"]) for n in names}
        pre.update({n: ok(["BeforeBlockTraffic"]) for n in run.original_names(state)})
        if when == "between_reroute_batches":
            calls = []
            allow = run._allow  # pylint: disable=protected-access

            def allow_then_stop(*args: Any) -> Any:
                calls.append(args)
                if len(calls) == 1:
                    control_requests.submit(w["store"], state["deployment_id"], "stop", requested_by="tester")
                return allow(*args)

            run._allow = allow_then_stop  # pylint: disable=protected-access
            state = run.reroute(state, pre)
            assert len(calls) == 1  # batch 2 never started
        else:
            state = run.reroute(state, pre)
            state["bg"]["original_wait"] = 3600.0
            post = {n: ok(["AfterAllowTraffic"]) for n in names}
            post.update({n: ok(["AfterBlockTraffic"]) for n in run.original_names(state)})
            run.sleep = lambda s, old=run.sleep: (old(s), control_requests.submit(
                w["store"], state["deployment_id"], "stop", requested_by="tester") if not w["store"].list_requests(
                state["deployment_id"]) else None)
            state = run.finish(state, post)
    record = w["store"].get(state["deployment_id"])
    assert state["status"] == "Stopped" and record.status == "Stopped" and "stopped on request" in record.error
    assert members(w) == set(w["blue"]) and w["store"].get_lock("app", "g") is None
    described = fp.Ec2Fleet(w["clients"]).describe(state["bg"]["replacement_ids"])
    assert {d["state"] for d in described.values()} <= {"terminated", "shutting-down"}
    assert [(r.action, r.state, r.handled_by) for r in w["store"].list_requests(state["deployment_id"])] == [
        ("stop", "Done", "controller")]


def test_split_form_deny_is_a_stop_request_that_recover_carries_out(aws_world: dict) -> None:
    w = aws_world
    run = bgm.BlueGreenRun(w["store"], w["clients"], sleep=lambda s: None)
    state = start(w, ready={"action": "stop", "wait": 300, "split": True})[1]
    state = run.provision(state, timeout=10)
    state = run.ready(state, {n: ok(bgm.HOST_CALLS["install"]) for n in run.replacement_names(state)})
    record = w["store"].get(state["deployment_id"])
    lease = w["store"].get_lock("app", "g")
    assert recovery.bluegreen_plan(record, lease)["refused"]
    control_requests.submit(w["store"], state["deployment_id"], "stop", requested_by="approver")
    plan = recovery.bluegreen_plan(record, lease, stop_requested=bgm.stop_requested(w["store"], state["deployment_id"]))
    assert plan["refused"] is None and plan["action"] == "rolled_back"
    out = recovery.recover_bluegreen(w["store"], w["clients"], record, plan)
    record = w["store"].get(state["deployment_id"])
    assert out["action"] == "rolled_back" and out["lock_released"] and record.status == "Stopped"
    assert "stopped on request" in record.error and "by approver" in record.error
    assert [(r.action, r.state, r.handled_by) for r in w["store"].list_requests(state["deployment_id"])] == [
        ("stop", "Done", "recover")]
    assert members(w) == set(w["blue"])
