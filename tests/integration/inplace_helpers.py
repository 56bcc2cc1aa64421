# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for in-place deployment tests and the benchmark: load balancers on the emulator, a
health monitor, host resets and probes. Everything here talks to the emulator with boto3 and to
hosts through the harness (nsenter) or plain HTTP from the root namespace: no rollwright code.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from tests.harness.world import World


@contextlib.contextmanager
def fleet_world(aws: Any, tmp_path_factory: Any, hosts: int, name: str) -> Iterator[World]:
    """A world of `hosts` SSH hosts on the session's emulator (for a module-scoped fixture); root only."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    from tests.harness.world import down, up

    made = up(tmp_path_factory.mktemp(name), hosts, emulator_handle=aws.handle.to_json(), region=aws.region)
    try:
        yield made
    finally:
        down(made.dir)


# Small but real LB delays: targets drain for DRAIN_SECONDS and stay `initial` for REGISTRATION_SECONDS.
DRAIN_SECONDS = 1
REGISTRATION_SECONDS = 1
REGISTRATION_TAG = "rollwright-emulator:registration-seconds"
APP_PORT = 8080
PIDFILE = "/var/log/rollwright/sample-app.pid"

_serial = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{int(time.time() * 1000) % 10_000_000}-{next(_serial)}"


# ----------------------------------------------------------------------------------------------
# load balancers
# ----------------------------------------------------------------------------------------------

def create_target_group(world: World, instance_ids: list[str], port: int = APP_PORT, name: Optional[str] = None,
                        drain_seconds: int = DRAIN_SECONDS, registration_seconds: float = REGISTRATION_SECONDS,
                        wait: bool = True) -> str:
    """A target group in the world's VPC with the instances registered (on `port`), healthy when returned."""
    elbv2 = world.client("elbv2")
    arn = elbv2.create_target_group(
        Name=(name or unique("rw-ip"))[:32], Protocol="HTTP", Port=port, VpcId=world.vpc_id, TargetType="instance",
        HealthCheckIntervalSeconds=5, HealthyThresholdCount=2,
        Tags=[{"Key": REGISTRATION_TAG, "Value": str(registration_seconds)}],
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(
        TargetGroupArn=arn, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(drain_seconds)}])
    if instance_ids:
        elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i, "Port": port} for i in instance_ids])
    if wait:
        wait_until(lambda: tg_states(world, arn) and all(s == "healthy" for s in tg_states(world, arn).values()),
                   timeout=registration_seconds + 10, what=f"targets of {arn} healthy")
    return arn


def tg_states(world: World, arn: str, client: Any = None) -> dict[tuple[str, int], str]:
    """(instance id, port) -> state of every target of the group (draining ones included)."""
    client = client or world.client("elbv2")
    return {(d["Target"]["Id"], d["Target"]["Port"]): d["TargetHealth"]["State"]
            for d in client.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}


def create_classic_elb(world: World, instance_ids: list[str], name: Optional[str] = None) -> str:
    elb = world.client("elb")
    name = (name or unique("rw-clb"))[:32]
    elb.create_load_balancer(LoadBalancerName=name, AvailabilityZones=[f"{world.region}a"],
                             Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": APP_PORT}])
    elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": i} for i in instance_ids])
    return name


def clb_states(world: World, name: str, client: Any = None) -> dict[str, str]:
    """instance id -> InService/OutOfService for every instance the classic ELB reports."""
    client = client or world.client("elb")
    return {d["InstanceId"]: d["State"] for d in client.describe_instance_health(LoadBalancerName=name)["InstanceStates"]}


def clb_members(world: World, name: str) -> set[str]:
    lbs = world.client("elb").describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"]
    return {i["InstanceId"] for i in lbs[0]["Instances"]}


@dataclass
class HealthMonitor:
    """Samples the healthy count of a target group (or classic ELB) every `interval` seconds in a thread."""

    world: World
    target_group_arn: Optional[str] = None
    classic_elb: Optional[str] = None
    interval: float = 0.1
    samples: list[tuple[float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._client = self.world.client("elbv2" if self.target_group_arn else "elb")

    def healthy_now(self) -> int:
        if self.target_group_arn:
            return sum(1 for s in tg_states(self.world, self.target_group_arn, self._client).values() if s == "healthy")
        return sum(1 for s in clb_states(self.world, str(self.classic_elb), self._client).values() if s == "InService")

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append((round(time.monotonic() - start, 2), self.healthy_now()))
            except Exception as exc:  # pylint: disable=broad-except
                self.errors.append(str(exc))
            self._stop.wait(self.interval)

    def __enter__(self) -> "HealthMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def counts(self) -> list[int]:
        return [c for _when, c in self.samples]

    @property
    def minimum(self) -> int:
        return min(self.counts)


@contextlib.contextmanager
def ec2_synced_world(aws: Any, directory: Any) -> Iterator[World]:
    """A world with no host of its own whose EC2 sync makes every instance run in its subnet an SSH host
    (so Auto Scaling groups and launch templates of the emulator are the fleet); torn down after."""
    from tests.harness.world import down, up

    made = up(directory, 0, emulator_handle=aws.handle.to_json(), region=aws.region)
    made.start_ec2_sync()
    try:
        yield made
    finally:
        made.stop_ec2_sync()
        down(made.dir)


# ----------------------------------------------------------------------------------------------
# hosts
# ----------------------------------------------------------------------------------------------

RESET = f"""
if [ -f {PIDFILE} ]; then kill "$(cat {PIDFILE})" 2>/dev/null; rm -f {PIDFILE}; fi
rm -f /srv/fail-validate
# these are the host's private mounts: empty them, do not remove them
for d in /opt/app /var/lib/rollwright /var/log/rollwright; do [ -d "$d" ] && find "$d" -mindepth 1 -delete; done
exit 0
"""


def reset_hosts(world: World, names: Optional[list[str]] = None) -> None:
    """Stop the sample app and forget every deployment on the hosts (through nsenter, no SSH)."""
    fleet = world.fleet
    for name in names or [h.name for h in world.hosts]:
        fleet.exec(name, ["sh", "-c", RESET])


def fail_validate(world: World, name: str, on: bool = True) -> None:
    world.fleet.exec(name, ["sh", "-c", "mkdir -p /srv && touch /srv/fail-validate" if on else "rm -f /srv/fail-validate"])


def served(address: str, timeout: float = 2.0) -> Optional[str]:
    """What the sample app on the host answers (from the root namespace), None if nothing listens."""
    try:
        with urllib.request.urlopen(f"http://{address}:{APP_PORT}/", timeout=timeout) as resp:
            return resp.read().decode().strip()
    except (urllib.error.URLError, OSError):
        return None


def installed(world: World, name: str) -> Optional[str]:
    """The content of /opt/app/sample/index.html on the host, None if absent."""
    proc = world.fleet.exec(name, ["cat", "/opt/app/sample/index.html"], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(interval)


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------

def deployment_fact(result: Any) -> Optional[dict[str, Any]]:
    """The `rollwright_deployment` summary the last controller step returned (json callback output)."""
    found = None
    for task in result.tasks():
        for host_result in task["hosts"].values():
            if isinstance(host_result, dict) and isinstance(host_result.get("rollwright_deployment"), dict):
                found = host_result["rollwright_deployment"]
                found = dict(found, summary_text=host_result.get("summary_text"))
    return found


def role_task(result: Any, name: str) -> dict[str, Any]:
    """Per-host results of the last task of the inplace role called `name` (task names carry the role's prefix)."""
    return result.task(f"rollwright.deploy.inplace : {name}")


def summary_lines(result: Any) -> list[str]:
    """The lines the 'Show the deployment summary' task printed."""
    for host_result in role_task(result, "Show the deployment summary").values():
        lines = host_result.get("summary_lines")
        if lines:
            return list(lines)
    return []


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
