# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load-balancer adapters and the lb_membership module against the AWS emulator over HTTP.

World per test: a VPC, 4 instances, target groups tg-a (port 80: i0 i1 i2) and tg-b (port 8080:
i1 i3), deregistration delay 2 s, and a classic ELB (i0 i3). API calls are counted with botocore's
``before-call`` event, i.e. what really went over the wire.

The emulator (tests/harness, the session `aws` fixture) models ``draining`` and ``initial``; plain
moto does not. The tests that rely on it fail (never skip) when the emulator stops modelling them.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
import types
from collections import Counter
from pathlib import Path

import boto3
import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.client import aws_client_factory
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers import (
    ELBv2Membership,
    NotFoundError,
    load_balancer_from_config,
)

ROOT = Path(__file__).resolve().parents[2]
DELAY = 2
_names = itertools.count()


@pytest.fixture(scope="module")
def lb_emulator(aws):
    """The session's AWS emulator (tests/conftest.py `aws`), with AWS_URL set for amazon.aws too."""
    env = dict(aws.env)
    env.setdefault("AWS_URL", aws.endpoint)
    return types.SimpleNamespace(endpoint=aws.endpoint, region=aws.region, env=env,
                                 access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"])


def _raw(emu, service):
    return boto3.client(service, endpoint_url=emu.endpoint, region_name=emu.region,
                        aws_access_key_id=emu.access_key, aws_secret_access_key=emu.secret_key)


class CountingClients:
    """Our aws_session factory, with every API call over the wire counted per operation."""

    def __init__(self, emu):
        self.factory = aws_client_factory({"endpoint_url": emu.endpoint, "region": emu.region,
                                           "access_key": emu.access_key, "secret_key": emu.secret_key})
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, dict]] = []

    def client(self, service):
        c = self.factory.client(service)
        # the client path caches clients per process: hand a cached client's counting over to this counter
        previous = getattr(c, "_rw_counter", None)
        if previous is not self:
            if previous is not None:
                c.meta.events.unregister("before-parameter-build", previous._params)  # pylint: disable=protected-access
                c.meta.events.unregister("before-call", previous._count)  # pylint: disable=protected-access
            c.meta.events.register("before-parameter-build", self._params)
            c.meta.events.register("before-call", self._count)
            c._rw_counter = self
        return c

    def _params(self, model, params, **kwargs):
        self._last_params = dict(params)  # the API parameters, before serialisation

    def _count(self, model, params, **kwargs):
        self.calls[model.name] += 1
        self.log.append((model.name, self._last_params))


def make_world(emu, delay=DELAY, registration_seconds=1):
    n = next(_names)
    ec2, elbv2, elb = _raw(emu, "ec2"), _raw(emu, "elbv2"), _raw(emu, "elb")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone=f"{emu.region}a")["Subnet"]["SubnetId"]
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId="ami-12c6146b", MinCount=4, MaxCount=4, SubnetId=subnet)["Instances"]]
    tgs = {}
    for name, port, members in (("a", 80, ids[0:3]), ("b", 8080, [ids[1], ids[3]])):
        tg = elbv2.create_target_group(
            Name=f"rw-lb-{n}-{name}", Protocol="HTTP", Port=port, VpcId=vpc, TargetType="instance",
            HealthCheckIntervalSeconds=5, HealthyThresholdCount=2,
            Tags=[{"Key": "rollwright-emulator:registration-seconds", "Value": str(registration_seconds)}],
        )["TargetGroups"][0]["TargetGroupArn"]
        elbv2.modify_target_group_attributes(
            TargetGroupArn=tg, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}]
        )
        elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": i, "Port": port} for i in members])
        tgs[name] = tg
    clb = f"rw-clb-{n}"
    elb.create_load_balancer(LoadBalancerName=clb, AvailabilityZones=[f"{emu.region}a"],
                             Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}])
    elb.register_instances_with_load_balancer(LoadBalancerName=clb, Instances=[{"InstanceId": ids[0]}, {"InstanceId": ids[3]}])
    config = {"target_group_arns": [tgs["a"], tgs["b"]], "classic_elb_names": [clb]}
    # let the emulator's `initial` period pass so the world starts healthy
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = [d["TargetHealth"]["State"] for tg in tgs.values()
                  for d in elbv2.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]]
        if all(s == "healthy" for s in states):
            break
        time.sleep(0.2)
    return types.SimpleNamespace(ids=ids, tg_a=tgs["a"], tg_b=tgs["b"], clb=clb, config=config, elbv2=elbv2, elb=elb)


def _flat(snapshot):
    return [m for ms in snapshot.values() for m in ms]


def _target_states(world, arn):
    return {(d["Target"]["Id"], d["Target"]["Port"]): d["TargetHealth"]["State"]
            for d in world.elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}


def test_snapshot_records_every_membership_with_one_call_per_group(lb_emulator):
    w = make_world(lb_emulator)
    clients = CountingClients(lb_emulator)
    lb = load_balancer_from_config(w.config, clients)
    snap = lb.snapshot(w.ids)
    got = {h: sorted(json.dumps(m.to_dict(), sort_keys=True) for m in ms) for h, ms in snap.items()}

    def e(arn, i, port):
        return json.dumps({"kind": "elbv2", "target_group_arn": arn, "target_id": i, "port": port, "availability_zone": None}, sort_keys=True)

    def c(i):
        return json.dumps({"kind": "classic_elb", "load_balancer_name": w.clb, "instance_id": i}, sort_keys=True)

    i0, i1, i2, i3 = w.ids
    assert got == {
        i0: sorted([e(w.tg_a, i0, 80), c(i0)]),
        i1: sorted([e(w.tg_a, i1, 80), e(w.tg_b, i1, 8080)]),
        i2: sorted([e(w.tg_a, i2, 80)]),
        i3: sorted([e(w.tg_b, i3, 8080), c(i3)]),
    }
    # 4 hosts, 2 target groups, 1 classic ELB: no per-host calls
    assert clients.calls == Counter({"DescribeTargetGroups": 1, "DescribeTargetHealth": 2, "DescribeLoadBalancers": 1})
    assert lb.api_calls == clients.calls
    assert lb.health(w.ids) == {i: "healthy" for i in w.ids}


def test_block_a_batch_one_deregister_per_group_then_drain_and_restore_exactly(lb_emulator):
    w = make_world(lb_emulator)
    clients = CountingClients(lb_emulator)
    lb = load_balancer_from_config(w.config, clients)
    i0, i1, i2, i3 = w.ids
    before = lb.snapshot([i0, i1])
    batch = _flat(before)
    lb.block(batch)
    dereg = [p for op, p in clients.log if op == "DeregisterTargets"]
    assert len(dereg) == 2  # exactly one per target group for the whole batch
    by_tg = {p["TargetGroupArn"]: sorted((t["Id"], t["Port"]) for t in p["Targets"]) for p in dereg}
    assert by_tg == {w.tg_a: sorted([(i0, 80), (i1, 80)]), w.tg_b: [(i1, 8080)]}
    assert clients.calls["DeregisterInstancesFromLoadBalancer"] == 1

    models_draining = _target_states(w, w.tg_a).get((i0, 80)) == "draining"
    messages: list[str] = []
    t0 = time.monotonic()
    result = lb.wait_drained(batch, timeout=None, progress=messages.append)
    took = time.monotonic() - t0
    assert result.ok, result.message()
    assert set(result.outcomes) == {i0, i1}
    assert clients.calls["DescribeTargetGroupAttributes"] == 2  # once per target group
    assert (i0, 80) not in _target_states(w, w.tg_a) and (i1, 8080) not in _target_states(w, w.tg_b)
    assert (i2, 80) in _target_states(w, w.tg_a)  # outside the batch: untouched
    if models_draining:
        assert DELAY - 0.3 <= took <= DELAY + 12, took  # honoured the 2 s delay, and not much more
        assert any("drain" in m and "delay 2s" in m for m in messages), messages
        # a poll is one DescribeTargetHealth per target group still draining, never per host
        assert clients.calls["DescribeTargetHealth"] <= 2 + 2 * result.polls
    assert lb.snapshot([i0, i1]) == {i0: [], i1: []}

    registered_calls = clients.calls["RegisterTargets"]
    lb.allow(batch)
    assert clients.calls["RegisterTargets"] - registered_calls == 2
    assert clients.calls["RegisterInstancesWithLoadBalancer"] == 1
    healthy = lb.wait_healthy(batch, timeout=30)
    assert healthy.ok, healthy.message()
    after = lb.snapshot([i0, i1])
    assert {h: sorted(map(str, ms)) for h, ms in after.items()} == {h: sorted(map(str, ms)) for h, ms in before.items()}


def test_restore_keeps_recorded_ports(lb_emulator):
    """Recorded memberships are JSON: restoring from the dicts registers the same ports."""
    w = make_world(lb_emulator, delay=0)
    i1 = w.ids[1]
    lb = load_balancer_from_config(w.config, CountingClients(lb_emulator))
    recorded = [m.to_dict() for m in lb.snapshot([i1])[i1]]
    lb.block(lb.snapshot([i1])[i1])
    assert lb.wait_drained(lb.snapshot([i1])[i1] or [ELBv2Membership(w.tg_b, i1, 8080)], timeout=10).ok
    # a fresh object (as after a controller crash) restores from the record alone
    lb2 = load_balancer_from_config(None, CountingClients(lb_emulator))
    from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers import memberships_from_list

    lb2.allow(memberships_from_list(recorded))
    assert (i1, 8080) in _target_states(w, w.tg_b) and (i1, 80) in _target_states(w, w.tg_a)


def test_missing_target_group_is_named_and_nothing_is_deregistered(lb_emulator):
    w = make_world(lb_emulator)
    missing = w.tg_b.rsplit("/", 2)[0] + "/rw-lb-gone/0123456789abcdef"
    clients = CountingClients(lb_emulator)
    lb = load_balancer_from_config({"target_group_arns": [w.tg_a, missing], "classic_elb_names": [w.clb]}, clients)
    with pytest.raises(NotFoundError, match="rw-lb-gone") as err:
        lb.snapshot(w.ids)
    assert err.value.missing == [missing]
    assert "nothing was changed" in str(err.value)
    # recorded memberships naming a vanished group: refused before any deregistration
    lb2 = load_balancer_from_config(w.config, clients)
    with pytest.raises(NotFoundError, match="rw-lb-gone"):
        lb2.block([ELBv2Membership(w.tg_a, w.ids[0], 80), ELBv2Membership(missing, w.ids[0], 80)])
    assert clients.calls["DeregisterTargets"] == 0
    assert clients.calls["DeregisterInstancesFromLoadBalancer"] == 0
    assert _target_states(w, w.tg_a)[(w.ids[0], 80)] == "healthy"
    # a missing classic ELB is named too
    lb3 = load_balancer_from_config({"classic_elb_names": [w.clb, "rw-clb-gone"]}, clients)
    with pytest.raises(NotFoundError, match="rw-clb-gone"):
        lb3.snapshot(w.ids)


def test_a_draining_target_is_registered_again(lb_emulator):
    w = make_world(lb_emulator, delay=30)
    i2 = w.ids[2]
    lb = load_balancer_from_config(w.config, CountingClients(lb_emulator))
    ms = lb.snapshot([i2])[i2]
    lb.block(ms)
    # the session emulator models draining (30 s here): a target that vanished at once is a regression
    assert _target_states(w, w.tg_a).get((i2, 80)) == "draining"
    assert lb.health([i2]) == {i2: "draining"}
    short = lb.wait_drained(ms, timeout=1.5)
    assert not short.ok and short.outcomes[i2].status == "timeout" and short.outcomes[i2].state == "draining"
    assert i2 in short.message()
    lb.allow(ms)
    assert _target_states(w, w.tg_a)[(i2, 80)] in ("initial", "healthy")
    result = lb.wait_healthy(ms, timeout=20)
    assert result.ok, result.message()
    assert lb.snapshot([i2])[i2] == ms


def test_wait_healthy_waits_through_initial(lb_emulator):
    # 5 s of `initial`: far more than a loaded machine needs between the registration and the first read
    w = make_world(lb_emulator, delay=0, registration_seconds=5)
    i3 = w.ids[3]
    lb = load_balancer_from_config({"target_group_arns": [w.tg_a]}, CountingClients(lb_emulator))
    new = lb.desired([i3])
    assert new == [ELBv2Membership(w.tg_a, i3, 80)]
    t0 = time.monotonic()
    lb.allow(new)
    assert _target_states(w, w.tg_a)[(i3, 80)] == "initial"  # the emulator models `initial`: not, a regression
    result = lb.wait_healthy(new, timeout=30)
    assert result.ok, result.message()
    # it returned once the target was healthy, not before: the emulator's 5 s had passed
    assert _target_states(w, w.tg_a)[(i3, 80)] == "healthy"
    assert time.monotonic() - t0 >= 4.5


def _ansible(emu, args: dict, check=False):
    env = dict(os.environ)
    env.update(emu.env)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / "build")
    env["ANSIBLE_LOCALHOST_WARNING"] = "False"
    env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "False"
    env["ANSIBLE_NOCOLOR"] = "1"
    cmd = [str(ROOT / ".venv" / "bin" / "ansible"), "localhost", "-m", "rollwright.deploy.lb_membership",
           "-a", json.dumps(args), "-e", f"ansible_python_interpreter={ROOT / '.venv' / 'bin' / 'python'}"]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL, check=False)
    out = proc.stdout
    assert "=>" in out, f"rc={proc.returncode}\n{out}\n{proc.stderr}"
    return proc.returncode, json.loads(out[out.index("=> {") + 3:])


@pytest.mark.slow
def test_lb_membership_module_via_ansible(lb_emulator):
    w = make_world(lb_emulator)
    i0 = w.ids[0]
    base = {"instance_ids": [i0], "load_balancer": w.config}

    rc, res = _ansible(lb_emulator, dict(base, state="snapshot"))
    assert rc == 0 and res["changed"] is False
    assert {m["kind"] for m in res["memberships"]} == {"elbv2", "classic_elb"}
    assert res["health"] == {i0: "healthy"}

    rc, res = _ansible(lb_emulator, dict(base, state="absent"), check=True)
    assert rc == 0 and res["changed"] is True and len(res["deregistered"]) == 2
    assert _target_states(w, w.tg_a)[(i0, 80)] == "healthy"  # check mode changed nothing

    rc, res = _ansible(lb_emulator, dict(base, state="absent"))
    assert rc == 0 and res["changed"] is True, res
    recorded = res["memberships"]
    assert res["wait"]["ok"] is True
    assert res["api_calls"]["DeregisterTargets"] == 1 and res["api_calls"]["DeregisterInstancesFromLoadBalancer"] == 1
    assert (i0, 80) not in _target_states(w, w.tg_a)

    rc, res = _ansible(lb_emulator, dict(base, state="absent"))
    assert rc == 0 and res["changed"] is False  # idempotent

    rc, res = _ansible(lb_emulator, {"state": "restore", "memberships": recorded, "wait_timeout": 30})
    assert rc == 0 and res["changed"] is True and res["wait"]["ok"] is True, res
    assert sorted(json.dumps(m, sort_keys=True) for m in res["registered"]) == sorted(json.dumps(m, sort_keys=True) for m in recorded)

    rc, res = _ansible(lb_emulator, {"state": "restore", "memberships": recorded})
    assert rc == 0 and res["changed"] is False  # already healthy

    # present without memberships: the instance joins every configured group on the group's port
    i2 = w.ids[2]
    rc, res = _ansible(lb_emulator, {"instance_ids": [i2], "state": "present", "load_balancer": {"target_group_arns": [w.tg_b]},
                                     "wait_timeout": 30})
    assert rc == 0 and res["changed"] is True, res
    assert res["registered"] == [{"kind": "elbv2", "target_group_arn": w.tg_b, "target_id": i2, "port": 8080, "availability_zone": None}]
    assert _target_states(w, w.tg_b)[(i2, 8080)] == "healthy"

    rc, res = _ansible(lb_emulator, {"instance_ids": [i0], "state": "snapshot",
                                     "load_balancer": {"target_group_arns": ["not-an-arn"]}})
    assert rc != 0 and "load_balancer.target_group_arns[0]: expected an ELBv2 target group ARN, got 'not-an-arn'" in res["msg"]
