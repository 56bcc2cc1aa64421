# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""EC2 blue/green with tag-selected fleets and listener-rule mode, through ``ansible-playbook``.

The originals and the replacements are existing instances chosen by their tags; the reroute swaps
one *rule* of a shared ALB listener from the blue target group to the green one, and nothing else:
the listener's default action and its other rule stay as they were. A monitor samples the group the
rule forwards to every 100 ms: it is always fully healthy and never mixed. Outcomes are read from
the emulator's ELBv2 and EC2 views and over HTTP from the hosts.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.bundles import build_bundle
from tests.integration import inplace_helpers as H

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

AMI = "ami-03cf127a"
N = 2


class RuleMonitor:
    """Every 100 ms: the group the rule forwards to, its healthy and live (non-draining) targets."""

    def __init__(self, world: Any, rule_arn: str, blue: set[str]) -> None:
        self.world, self.rule_arn, self.blue = world, rule_arn, blue
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._elbv2 = world.client("elbv2")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rule = self._elbv2.describe_rules(RuleArns=[self.rule_arn])["Rules"][0]
                tg = rule["Actions"][0]["TargetGroupArn"]
                states = {i: s for (i, _p), s in H.tg_states(self.world, tg, self._elbv2).items()}
                live = {i for i, s in states.items() if s != "draining"}
                self.samples.append({"tg": tg, "healthy": sum(1 for s in states.values() if s == "healthy"),
                                     "blue": len(live & self.blue), "green": len(live - self.blue)})
            except Exception as exc:  # pylint: disable=broad-except
                self.errors.append(str(exc))
            self._stop.wait(0.1)

    def __enter__(self) -> "RuleMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)


def _tagged_instances(world: Any, app: str, colour: str) -> list[str]:
    found = world.client("ec2").run_instances(ImageId=AMI, MinCount=N, MaxCount=N, SubnetId=world.subnet_id, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "app", "Value": app}, {"Key": "colour", "Value": colour}]}])
    return sorted(i["InstanceId"] for i in found["Instances"])


def test_tag_selected_fleets_swap_one_listener_rule(ec2_world: Any, ansible_run: Any, tmp_path: Path) -> None:
    world = ec2_world
    app = H.unique("tagapp")
    blue, green = _tagged_instances(world, app, "blue"), _tagged_instances(world, app, "green")
    H.wait_until(lambda: {h.instance_id for h in world.hosts} >= set(blue + green), 30, what="hosts for the instances")
    blue_tg = H.create_target_group(world, blue, name=H.unique("tblue"))
    green_tg = H.create_target_group(world, [], name=H.unique("tgreen"), wait=False)
    other_tg = H.create_target_group(world, [], name=H.unique("tother"), wait=False)
    elbv2 = world.client("elbv2")
    lb = elbv2.create_load_balancer(Name=H.unique("alb")[:32], Subnets=[world.subnet_id], Type="application")[
        "LoadBalancers"][0]["LoadBalancerArn"]
    listener = elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[
        {"Type": "forward", "TargetGroupArn": other_tg}])["Listeners"][0]["ListenerArn"]
    app_rule = elbv2.create_rule(ListenerArn=listener, Priority=10, Conditions=[{"Field": "path-pattern", "Values": ["/app/*"]}],
                                 Actions=[{"Type": "forward", "TargetGroupArn": blue_tg}])["Rules"][0]["RuleArn"]
    admin_rule = elbv2.create_rule(ListenerArn=listener, Priority=20, Conditions=[{"Field": "path-pattern", "Values": ["/admin/*"]}],
                                   Actions=[{"Type": "forward", "TargetGroupArn": other_tg}])["Rules"][0]["RuleArn"]
    listener_before = elbv2.describe_listeners(ListenerArns=[listener])["Listeners"]
    admin_before = elbv2.describe_rules(RuleArns=[admin_rule])["Rules"]
    records = tmp_path / "records.sqlite3"

    with RuleMonitor(world, app_rule, set(blue)) as mon:
        result = ansible_run("rollwright.deploy.bluegreen_ec2", world.inventory, timeout=300, extra_vars={
            "rollwright_application": app, "rollwright_deployment_group": "g",
            "rollwright_revision": str(build_bundle("v2", tmp_path / "b")),
            "rollwright_target_group_arns": f"{blue_tg},{green_tg}", "rollwright_record_sqlite_path": str(records),
            "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30,
            "bluegreen_ec2_instance_tags": f"app={app},colour=green", "bluegreen_ec2_original_tags": f"app={app},colour=blue",
            "bluegreen_ec2_reroute_mode": "listener", "bluegreen_ec2_listener_arn": listener,
            "bluegreen_ec2_listener_rule_arn": app_rule, "bluegreen_ec2_original_action": "keep_alive",
            "bluegreen_ec2_original_wait": "0s", "bluegreen_ec2_connect_timeout": 60})
        time.sleep(0.3)
    assert result.rc == 0, result
    store = open_store("sqlite", {"path": str(records)})
    record = store.get(store.list(app, "g", limit=1)[0].deployment_id)
    assert record.status == "Succeeded", record.error
    # the fleets were chosen by their tags
    assert sorted(record.extra["bluegreen"]["replacement_ids"]) == green
    assert {h.instance_id for h in record.hosts} == set(blue + green)
    # only the rule moved, to the green group, which holds the green instances, healthy and serving v2
    assert elbv2.describe_rules(RuleArns=[app_rule])["Rules"][0]["Actions"] == [{"Type": "forward", "TargetGroupArn": green_tg}]
    assert elbv2.describe_listeners(ListenerArns=[listener])["Listeners"] == listener_before
    assert elbv2.describe_rules(RuleArns=[admin_rule])["Rules"] == admin_before
    assert {i: s for (i, _p), s in H.tg_states(world, green_tg).items()} == {i: "healthy" for i in green}
    addresses = {h.instance_id: h.address for h in world.hosts}
    assert {i: H.served(addresses[i]) for i in green} == {i: "sample-app v2" for i in green}
    # keep_alive: the originals left the blue group and still run
    assert not {i for (i, _p), s in H.tg_states(world, blue_tg).items() if s != "draining"}
    states = {i["InstanceId"]: i["State"]["Name"] for r in world.client("ec2").describe_instances(InstanceIds=blue)["Reservations"]
              for i in r["Instances"]}
    assert states == {i: "running" for i in blue}
    # what the rule served: all blue, then all green, always fully healthy, never mixed; one switch
    assert not mon.errors, mon.errors
    assert [s["tg"] for s in mon.samples][:1] == [blue_tg] and mon.samples[-1]["tg"] == green_tg
    switches = sum(1 for a, b in zip(mon.samples, mon.samples[1:]) if a["tg"] != b["tg"])
    assert switches == 1, [s["tg"] for s in mon.samples]
    assert all(s["healthy"] == N and min(s["blue"], s["green"]) == 0 for s in mon.samples), mon.samples
    assert all(s["green"] == N for s in mon.samples if s["tg"] == green_tg)
