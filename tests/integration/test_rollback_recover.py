# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 5 on a real fleet: automatic rollback on failure and on a CloudWatch alarm, the group lock,
two groups deploying at once. The playbooks run as a user runs them (rollwright.deploy.inplace).

One world (4 hosts behind one target group) serves the module. A test that needs history makes it:
the rollback tests start from v1 as the group's last successful revision (the `on_v1` fixture deploys
it unless the fleet is already there), so they pass alone, in any order, or after each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.bundles import build_bundle
from tests.harness.ansible_run import VENV_BIN, AnsibleResult, ansible_env, run_playbook

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
APP = "rbapp"
GROUP = "fleet"
ALARM = "rbapp-5xx"
FAIL_MARKER = "/srv/fail-validate"

# v2's ValidateService also fails when /srv/fail-validate exists on the host (v1's does not look at it
# in this test: the stock validate script is replaced by one that checks the served version only).
MARKED_CHECK = "#!/bin/sh\nif [ -f /srv/fail-validate ]; then echo \"validation failed on purpose: $0\" >&2; exit 3; fi\n"
SLOW = "#!/bin/sh\nsleep 4\n"


def _edit(extra_validate: bool = False, slow_before_install: bool = False):
    def edit(text: str) -> str:
        # the stock validate_service.sh fails on /srv/fail-validate whatever the version: only v2 may
        text = text.replace("    - location: scripts/validate_service.sh\n      timeout: 30\n",
                            "    - location: scripts/validate_version.sh\n      timeout: 30\n")
        if extra_validate:
            text = text.replace("  ValidateService:\n    - location: scripts/record_event.sh\n",
                                "  ValidateService:\n    - location: scripts/record_event.sh\n"
                                "    - location: scripts/marked.sh\n")
        if slow_before_install:
            text = text.replace("  BeforeInstall:\n    - location: scripts/record_event.sh\n",
                                "  BeforeInstall:\n    - location: scripts/record_event.sh\n"
                                "    - location: scripts/slow.sh\n")
        return text
    return edit


VALIDATE_VERSION = (Path(__file__).resolve().parents[1] / "sample_app" / "scripts" / "validate_service.sh").read_text() \
    .replace('if [ -f /srv/fail-validate ]; then', 'if false; then')


def bundle(version: str, out: Path, *, fail_on_marker: bool = False, slow: bool = False) -> Path:
    extra = {"scripts/validate_version.sh": VALIDATE_VERSION, "scripts/marked.sh": MARKED_CHECK, "scripts/slow.sh": SLOW}
    return build_bundle(version, out, extra_files=extra, edit_appspec=_edit(fail_on_marker, slow))


@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    from tests.harness.world import down, up

    made = up(tmp_path_factory.mktemp("rollback-world"), 4, emulator_handle=aws.handle.to_json(), region=aws.region)
    try:
        yield made
    finally:
        down(made.dir)


@pytest.fixture(scope="module")
def tg(world: Any) -> str:
    elb = world.client("elbv2")
    arn = elb.create_target_group(Name=f"rb-{world.world_id}", Protocol="HTTP", Port=80, VpcId=world.vpc_id,
                                  TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "1"}])
    elb.add_tags(ResourceArns=[arn], Tags=[{"Key": "rollwright-emulator:registration-seconds", "Value": "1"}])
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": h.instance_id, "Port": 80} for h in world.hosts])
    return arn


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollback-work")


@pytest.fixture(scope="module")
def store(work: Path) -> Any:
    from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

    return open_store("sqlite", {"path": str(work / "records.sqlite3")})


def base_vars(work: Path, tg: str, **extra: Any) -> dict[str, Any]:
    out = {"rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_target_group_arns": tg,
           "rollwright_record_sqlite_path": str(work / "records.sqlite3"), "rollwright_healthy_timeout": 60,
           "rollwright_deployment_config": "CodeDeployDefault.HalfAtATime"}
    out.update(extra)
    return out


def deploy(world: Any, aws: Any, extra_vars: dict[str, Any], playbook: str = "inplace.yml", timeout: float = 300) -> AnsibleResult:
    return run_playbook(str(ROOT / "playbooks" / playbook), world.inventory, extra_vars=extra_vars, aws_env=aws.env,
                        control_path_dir=str(world.control_path_dir), timeout=timeout)


def shell(world: Any, aws: Any, hosts: str, command: str) -> AnsibleResult:
    plays = [{"hosts": hosts, "gather_facts": False,
              "tasks": [{"name": "sh", "ansible.builtin.shell": command, "register": "out", "changed_when": False}]}]
    return run_playbook(plays, world.inventory, aws_env=aws.env, control_path_dir=str(world.control_path_dir), timeout=60)


def served_versions(world: Any, aws: Any) -> dict[str, str]:
    result = shell(world, aws, "fleet", "cat /opt/app/sample/index.html")
    assert result.rc == 0, result
    return {h: r["stdout"].strip() for h, r in result.task("sh").items()}


def registered(world: Any, tg: str) -> dict[str, str]:
    descs = world.client("elbv2").describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
    by_id = {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in descs}
    return {h.name: by_id.get(h.instance_id, "unused") for h in world.hosts}


def newest(store: Any, n: int = 5) -> list[Any]:
    return [store.get(r.deployment_id) for r in store.list(APP, GROUP, limit=n)]


@pytest.fixture
def on_v1(world: Any, aws: Any, tg: str, work: Path, store: Any) -> None:
    """Every host serves v1 and v1 is the group's last successful revision (deployed here if not)."""
    v1 = bundle("v1", work / "b")
    sha = hashlib.sha256(v1.read_bytes()).hexdigest()
    last = store.last_successful(APP, GROUP)
    if last is None or last.revision.get("sha256") != sha or not all("v1" in v for v in served_versions(world, aws).values()):
        result = deploy(world, aws, base_vars(work, tg, rollwright_revision=str(v1), rollwright_file_exists_behavior="OVERWRITE"))
        assert result.rc == 0, result
    assert store.last_successful(APP, GROUP).revision.get("sha256") == sha


def test_failure_rolls_back_automatically_to_v1(world: Any, aws: Any, tg: str, work: Path, store: Any) -> None:
    v1 = bundle("v1", work / "b")
    first = deploy(world, aws, base_vars(work, tg, rollwright_revision=str(v1)))
    assert first.rc == 0, first
    assert all("v1" in v for v in served_versions(world, aws).values())
    assert shell(world, aws, "host2", f"touch {FAIL_MARKER}").rc == 0
    try:
        v2 = bundle("v2", work / "b", fail_on_marker=True)
        t0 = time.monotonic()
        second = deploy(world, aws, base_vars(work, tg, rollwright_revision=str(v2),
                                              rollwright_deployment_config="CodeDeployDefault.OneAtATime",
                                              rollwright_auto_rollback={"on_failure": True}))
        print(f"\nv2 + automatic rollback: {time.monotonic() - t0:.1f} s")
    finally:
        shell(world, aws, "host2", f"rm -f {FAIL_MARKER}")
    assert second.rc != 0, second  # the deployment failed (and says it was rolled back)
    assert "Rolled back by deployment" in second.stdout + second.stderr, second
    rollback, failed, good = newest(store, 3)
    assert failed.status == "Failed" and failed.host("host2").event("ValidateService").status == "Failed"
    assert good.status == "Succeeded" and good.revision["sha256"] != failed.revision["sha256"]
    assert rollback.creator == "rollback" and rollback.status == "Succeeded", rollback.error
    assert rollback.rollback_of == failed.deployment_id and failed.rolled_back_by == rollback.deployment_id
    assert rollback.revision["sha256"] == good.revision["sha256"]
    assert sorted(h.name for h in rollback.hosts) == ["host1", "host2"]  # the hosts v2 reached
    assert all("v1" in v for v in served_versions(world, aws).values())
    assert set(registered(world, tg).values()) == {"healthy"}
    assert store.get_lock(APP, GROUP) is None


@pytest.fixture(scope="module")
def alarm(world: Any) -> str:
    world.client("cloudwatch").put_metric_alarm(
        AlarmName=ALARM, MetricName="HTTPCode_Target_5XX_Count", Namespace="AWS/ApplicationELB", Statistic="Sum",
        Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold")
    return ALARM


def test_alarm_already_firing_refuses_to_start(world: Any, aws: Any, tg: str, work: Path, store: Any, alarm: str) -> None:
    cw = world.client("cloudwatch")
    cw.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="test: 5xx up")
    try:
        before = len(store.list(APP, GROUP, limit=50))
        result = deploy(world, aws, base_vars(work, tg, rollwright_revision=str(bundle("v3", work / "b")),
                                              rollwright_auto_rollback_alarms=ALARM))
        assert result.rc != 0 and f"alarm {ALARM} in ALARM since" in result.stdout + result.stderr, result
        assert len(store.list(APP, GROUP, limit=50)) == before and store.get_lock(APP, GROUP) is None
    finally:
        cw.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="test: reset")


def test_alarm_mid_deployment_stops_and_rolls_back(world: Any, aws: Any, tg: str, work: Path, store: Any,
                                                   alarm: str, on_v1: None) -> None:
    cw = world.client("cloudwatch")
    known = {r.deployment_id for r in store.list(APP, GROUP, limit=50)}
    tripped: dict[str, Any] = {}

    def trip() -> None:
        from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

        own = open_store("sqlite", {"path": str(work / "records.sqlite3")})  # sqlite objects stay in their thread
        alarms = world.client("cloudwatch")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for rec in own.list(APP, GROUP, limit=2):
                if rec.deployment_id in known:
                    continue
                full = own.get(rec.deployment_id)
                if any(h.event("BlockTraffic") is not None for h in full.hosts):  # the first batch is under way
                    alarms.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="test: 5xx up mid-deployment")
                    tripped["at"] = time.time()
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=trip, daemon=True)
    watcher.start()
    try:
        result = deploy(world, aws, base_vars(work, tg, rollwright_revision=str(bundle("v4", work / "b", slow=True)),
                                              rollwright_auto_rollback={"on_alarm": True, "alarms": [ALARM]}))
    finally:
        watcher.join(5)
        cw.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="test: reset")
    assert tripped, "the alarm was never set: the deployment did not start its first batch"
    assert result.rc != 0, result
    rollback, stopped = newest(store, 2)
    assert stopped.status == "Stopped" and f"alarm {ALARM} in ALARM since" in stopped.error, stopped.error
    assert rollback.creator == "rollback" and rollback.rollback_of == stopped.deployment_id
    assert stopped.rolled_back_by == rollback.deployment_id and rollback.status == "Succeeded", rollback.error
    reached = sorted(h.name for h in stopped.hosts if h.events)
    assert sorted(h.name for h in rollback.hosts) == reached and len(reached) == 2  # batch 1 only
    assert all("v1" in v for v in served_versions(world, aws).values())
    assert set(registered(world, tg).values()) == {"healthy"}


def test_locked_group_fails_at_once_and_two_groups_deploy_in_parallel(
        world: Any, aws: Any, tg: str, work: Path, store: Any) -> None:
    env = ansible_env(aws.env, str(world.control_path_dir), {"ANSIBLE_STDOUT_CALLBACK": "default"})

    def popen(extra: dict[str, Any], name: str) -> tuple[subprocess.Popen, Path]:
        vars_file = work / f"{name}.json"
        vars_file.write_text(json.dumps(extra))
        log = work / f"{name}.log"
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(world.inventory),
                                 str(ROOT / "playbooks" / "inplace.yml"), "-e", f"@{vars_file}"], cwd=str(ROOT), env=env,
                                stdin=subprocess.DEVNULL, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                start_new_session=True)
        return proc, log

    slow = bundle("v5", work / "b", slow=True)
    known = {r.deployment_id for r in store.list(APP, GROUP, limit=50)}
    holder_proc, holder_log = popen(base_vars(work, tg, rollwright_revision=str(slow)), "holder")
    try:
        holder = None
        for _attempt in range(600):
            fresh = [r for r in store.list(APP, GROUP, limit=3) if r.deployment_id not in known and r.status == "InProgress"]
            if fresh:
                holder = fresh[0]
                break
            time.sleep(0.1)
        assert holder is not None, holder_log.read_text()
        t0 = time.monotonic()
        second = deploy(world, aws, base_vars(work, tg, rollwright_revision=str(slow)))
        took = time.monotonic() - t0
        text = second.stdout + second.stderr
        assert second.rc != 0 and f"is locked by deployment {holder.deployment_id} (started by" in text, second
        assert " at 20" in text  # since when
        assert took < 30, f"the second deployment waited {took:.1f} s instead of failing at once"
    finally:
        assert holder_proc.wait(timeout=300) == 0, holder_log.read_text()
    assert store.get(holder.deployment_id).status == "Succeeded"

    # two groups on disjoint hosts, at once
    v6 = bundle("v6", work / "b")
    left, left_log = popen(base_vars(work, tg, rollwright_hosts="host1:host2", rollwright_deployment_group="left", rollwright_file_exists_behavior="OVERWRITE",
                                     rollwright_revision=str(v6)), "left")
    right, right_log = popen(base_vars(work, tg, rollwright_hosts="host3:host4", rollwright_deployment_group="right",
                                       rollwright_file_exists_behavior="OVERWRITE",
                                       rollwright_revision=str(v6)), "right")
    assert left.wait(timeout=300) == 0, left_log.read_text()
    assert right.wait(timeout=300) == 0, right_log.read_text()
    for group, hosts in (("left", ["host1", "host2"]), ("right", ["host3", "host4"])):
        rec = store.get(store.list(APP, group, limit=1)[0].deployment_id)
        assert rec.status == "Succeeded" and sorted(h.name for h in rec.hosts) == hosts
        assert store.get_lock(APP, group) is None
    assert all("v6" in v for v in served_versions(world, aws).values())
    assert set(registered(world, tg).values()) == {"healthy"}
