# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 5: kill ansible-playbook (SIGKILL to its whole process group) in the middle of a real
in-place deployment at 10 different points, then run ``rollwright.deploy.recover``.

Clean means: every host is registered in exactly the target groups it was in before the deployment
(compared with a snapshot taken before), the record is Stopped (the lease keeper marked it so when
the controller died) and the group's lock is released. The test prints n/10 and asserts 10/10.
A kill point whose window a loaded machine missed (the deployment got past it, or its batch was not
out of the load balancer, when the kill landed) is tried again with a fresh deployment, at most three
times; every point must land where intended.
Each run also records where its kill landed (the hosts out of their target groups once the controller
is dead): the kills meant to land with a batch out of the load balancer must find that batch out, the
record must name those hosts as taken out, and recovery must bring each of them back.

One world (4 hosts, two target groups, 1 s deregistration delay and registration time) serves all
ten runs; every run deploys a new revision, so no host is skipped as "already on it".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from tests.bundles import build_bundle
from tests.harness.ansible_run import VENV_BIN, ansible_env, run_playbook

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
APP = "killapp"
GROUP = "fleet"
SLOW_HOOK = "#!/bin/sh\nsleep 2\n"
KILL_ATTEMPTS = 3  # deployments per kill point at most: a window missed under load is tried again


def _slow_appspec(text: str) -> str:
    """BeforeInstall sleeps 2 s: a window to kill during a hook."""
    marker = "  BeforeInstall:\n    - location: scripts/record_event.sh\n"
    assert text.count(marker) == 1
    return text.replace(marker, marker + "    - location: scripts/slow.sh\n      timeout: 30\n")


@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")
    from tests.harness.world import down, up

    made = up(tmp_path_factory.mktemp("kill-world"), 4, emulator_handle=aws.handle.to_json(), region=aws.region)
    try:
        yield made
    finally:
        down(made.dir)


@pytest.fixture(scope="module")
def target_groups(world: Any) -> list[str]:
    """tg-a holds every host, tg-b only host1 and host3 (so 'exactly its groups' differs per host)."""
    elb = world.client("elbv2")
    arns = []
    for name, members in (("a", world.hosts), ("b", [world.hosts[0], world.hosts[2]])):
        arn = elb.create_target_group(Name=f"kill-{world.world_id}-{name}", Protocol="HTTP", Port=80, VpcId=world.vpc_id,
                                      TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
        elb.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
            {"Key": "deregistration_delay.timeout_seconds", "Value": "1"}])
        elb.add_tags(ResourceArns=[arn], Tags=[{"Key": "rollwright-emulator:registration-seconds", "Value": "1"}])
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": h.instance_id, "Port": 80} for h in members])
        arns.append(arn)
    return arns


def membership(world: Any, arns: list[str]) -> dict[str, list[str]]:
    """instance id -> sorted target groups it is registered in (draining counts as out)."""
    elb = world.client("elbv2")
    out: dict[str, list[str]] = {h.instance_id: [] for h in world.hosts}
    for arn in arns:
        for desc in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]:
            if desc["TargetHealth"]["State"] not in ("draining", "unused"):
                out.setdefault(desc["Target"]["Id"], []).append(arn)
    return {k: sorted(v) for k, v in out.items()}


class Watch:
    """Reads the test's SQLite record store (as recovery would) while the playbook runs."""

    def __init__(self, path: str):
        from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

        self.path = path
        self.store = open_store("sqlite", {"path": path})

    def newest(self, after: set[str]) -> Optional[Any]:
        if not os.path.exists(self.path):
            return None
        for summary in self.store.list(APP, GROUP, limit=3):
            if summary.deployment_id not in after:
                return self.store.get(summary.deployment_id)
        return None


def _event(record: Any, name: str, status: str, batch: int) -> bool:
    batches = (record.extra.get("inplace") or {}).get("plan_preview") or []
    if len(batches) < batch:
        return False
    hosts = [record.host(h) for h in batches[batch - 1]]
    return any(h is not None and h.event(name) is not None and h.event(name).status == status for h in hosts)


def _batch_done(record: Any, batch: int) -> bool:
    batches = (record.extra.get("inplace") or {}).get("plan_preview") or []
    return len(batches) >= batch and all(record.host(h).status == "Succeeded" for h in batches[batch - 1])


def _batch_out(record: Any, out: Callable[[], set[str]], batch: int) -> bool:
    """Some host of the batch is really out of its target groups now (the load balancer's view, asked only
    here: two describe calls per look would slow the watch loop down)."""
    batches = (record.extra.get("inplace") or {}).get("plan_preview") or []
    if len(batches) < batch:
        return False
    now_out = out()
    return any(record.host(h) is not None and record.host(h).instance_id in now_out for h in batches[batch - 1])


# (name, predicate on the record and a call giving the instances out of the load balancer now, extra delay
# before the kill, the batch whose hosts must be out of the load balancer when the kill lands, or None: not pinned)
KILL_POINTS: list[tuple[str, Callable[[Any, Callable[[], set[str]]], bool], float, Optional[int]]] = [
    ("right after start", lambda r, out: r.status == "InProgress", 0.0, None),
    # On hosts without a previous revision there is no BeforeBlockTraffic call: the event is recorded
    # (Skipped) as BlockTraffic starts, so the kill lands between the two.
    ("BeforeBlockTraffic of batch 1", lambda r, out: _event(r, "BeforeBlockTraffic", "InProgress", 1) or (
        _event(r, "BeforeBlockTraffic", "Skipped", 1) and not _event(r, "BlockTraffic", "Succeeded", 1)), 0.2, None),
    ("draining batch 1", lambda r, out: _event(r, "BlockTraffic", "InProgress", 1) and _batch_out(r, out, 1), 0.3, 1),
    ("BeforeInstall hook (sleeping) of batch 1", lambda r, out: _event(r, "ApplicationStop", "InProgress", 1), 1.2, 1),
    ("AllowTraffic of batch 1", lambda r, out: _event(r, "AllowTraffic", "InProgress", 1), 0.2, None),
    ("AfterAllowTraffic of batch 1", lambda r, out: _event(r, "AllowTraffic", "Succeeded", 1), 0.0, None),
    ("between batches", lambda r, out: _batch_done(r, 1), 0.0, None),
    ("draining batch 2", lambda r, out: _event(r, "BlockTraffic", "InProgress", 2) and _batch_out(r, out, 2), 0.3, 2),
    ("BeforeInstall hook (sleeping) of batch 2", lambda r, out: _event(r, "ApplicationStop", "InProgress", 2), 1.2, 2),
    ("AllowTraffic of batch 2", lambda r, out: _event(r, "AllowTraffic", "InProgress", 2), 0.2, None),
]


def test_kill_ansible_playbook_at_ten_points_then_recover(world: Any, target_groups: list[str], aws: Any,
                                                          tmp_path: Path) -> None:
    records = str(tmp_path / "records.sqlite3")
    watch = Watch(records)
    before = membership(world, target_groups)
    assert sum(len(v) for v in before.values()) == 6
    common = {"rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_deployment_config":
              "CodeDeployDefault.HalfAtATime", "rollwright_target_group_arns": ",".join(target_groups),
              "rollwright_record_sqlite_path": records, "rollwright_healthy_timeout": 60}
    env = ansible_env(aws.env, str(world.control_path_dir), {"ANSIBLE_STDOUT_CALLBACK": "default"})
    seen: set[str] = set()
    results = []
    t_all = time.monotonic()
    only = {int(x) for x in os.environ.get("ROLLWRIGHT_KILL_POINTS", "").split(",") if x.strip()}
    names = {h.instance_id: h.name for h in world.hosts}

    def out_now() -> set[str]:
        """Instances not in every target group they were in before (draining counts as out)."""
        now = membership(world, target_groups)
        return {i for i, groups in before.items() if now.get(i) != groups}

    def attempt(index: int, try_no: int, point: str, predicate: Callable[..., bool], delay: float,
                out_batch: Optional[int]) -> dict[str, Any]:
        """One deployment killed at `point`, then recovered; `missed` says why the kill did not land there."""
        t0 = time.monotonic()
        run = f"{index}.{try_no}"
        bundle = build_bundle(f"kill{index}-{try_no}", tmp_path / "bundles", extra_files={"scripts/slow.sh": SLOW_HOOK},
                              edit_appspec=_slow_appspec)
        extra = dict(common, rollwright_revision=str(bundle))
        vars_file = tmp_path / f"vars{run}.json"
        vars_file.write_text(json.dumps(extra))
        log_path = tmp_path / f"run{run}.log"
        log = open(log_path, "w")  # pylint: disable=consider-using-with
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(world.inventory),
                                 str(ROOT / "playbooks" / "inplace.yml"), "-e", f"@{vars_file}"],
                                cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        observed = None
        deadline = time.monotonic() + 180  # the start play (host states, staging) is slow on a loaded machine
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                record = watch.newest(seen)
                if record is not None and predicate(record, out_now):
                    observed = record
                    break
                time.sleep(0.03)
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):  # it ended by itself: a missed window, told below
                os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
            log.close()
        if observed is None:
            ended = watch.newest(seen)
            # a deployment that succeeded before the point was seen missed the window (a loaded machine); one
            # still running at the deadline, or one that failed, never reached it
            assert ended is not None and ended.status == "Succeeded", \
                f"run {run} ({point}): the kill point was never reached; see run{run}.log:\n" + log_path.read_text()[-3000:]
            seen.add(ended.deployment_id)
            return {"run": index, "point": point, "attempt": try_no,
                    "missed": "the deployment succeeded before the kill point was seen"}
        deployment_id = observed.deployment_id
        seen.add(deployment_id)
        at_kill = watch.store.get(deployment_id)
        if at_kill.status == "Succeeded":  # it ended between the point and the kill: nothing to recover
            return {"run": index, "point": point, "attempt": try_no,
                    "missed": "the deployment succeeded before the kill"}
        # where the kill landed: the hosts out of their target groups once the controller is dead
        out_lb_at_kill = sorted(names[i] for i in out_now())
        batches = (at_kill.extra.get("inplace") or {}).get("plan_preview") or []
        # The lease keeper notices the dead controller and marks the record Stopped (headroom for a loaded machine).
        for _attempt in range(400):
            if watch.store.get(deployment_id).status == "Stopped":
                break
            time.sleep(0.05)
        marked = watch.store.get(deployment_id)
        out_at_kill = sorted(h.name for h in at_kill.hosts if h.lb_membership and not h.lb_restored)
        recovered = run_playbook(str(ROOT / "playbooks" / "recover.yml"), world.inventory,
                                 extra_vars={"rollwright_application": APP, "rollwright_deployment_group": GROUP,
                                             "rollwright_record_sqlite_path": records},
                                 aws_env=aws.env, control_path_dir=str(world.control_path_dir), timeout=120)
        after = membership(world, target_groups)
        came_back = all(after[i] == before[i] for i, n in names.items() if n in out_lb_at_kill)
        final = watch.store.get(deployment_id)
        lock = watch.store.get_lock(APP, GROUP)
        clean = (recovered.rc == 0 and after == before and final.status == "Stopped" and lock is None
                 and all(not h.lb_membership or h.lb_restored for h in final.hosts))
        second_changed = None
        second = None
        if index in (1, 5, 10) or only:  # a second recover changes nothing
            again = run_playbook(str(ROOT / "playbooks" / "recover.yml"), world.inventory,
                                 extra_vars={"rollwright_application": APP, "rollwright_deployment_group": GROUP,
                                             "rollwright_deployment_id": deployment_id,
                                             "rollwright_record_sqlite_path": records},
                                 aws_env=aws.env, control_path_dir=str(world.control_path_dir), timeout=120)
            second = again.task("Recover the deployment and release the group's lock")["localhost"]
            second_changed = again.rc != 0 or bool(second.get("changed"))
            second = {k: second.get(k) for k in ("msg", "message", "plan")}
            clean = clean and not second_changed
        landed = out_batch is None or (bool(out_lb_at_kill) and len(batches) >= out_batch
                                       and set(out_lb_at_kill) <= set(batches[out_batch - 1]))
        return {"run": index, "point": point, "attempt": try_no, "deployment_id": deployment_id, "clean": clean,
                "missed": None if landed else f"batch {out_batch} was not out of the load balancer at the kill",
                "marked_stopped_by_keeper": marked.status == "Stopped", "out_at_kill": out_at_kill,
                "out_of_lb_at_kill": out_lb_at_kill, "landed_as_intended": landed, "out_hosts_came_back": came_back,
                "recover_rc": recovered.rc, "status": final.status, "lock_free": lock is None,
                "second_recover_changed": second_changed, "second_recover": second,
                "recover_message": (recovered.task("Recover the deployment and release the group's lock")
                                    .get("localhost") or {}).get("message") if recovered.data else recovered.stderr[-500:],
                "seconds": round(time.monotonic() - t0, 1),
                "diff": {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}}

    for index, (point, predicate, delay, out_batch) in enumerate(KILL_POINTS, start=1):
        if only and index not in only:
            continue
        # A window missed on a loaded machine (the playbook got past the point before the kill) is retried
        # with a fresh deployment, at most KILL_ATTEMPTS times; the last attempt counts, landed or not.
        for try_no in range(1, KILL_ATTEMPTS + 1):
            result = attempt(index, try_no, point, predicate, delay, out_batch)
            if not result["missed"]:
                break
            print(f"run {index} ({point}), attempt {try_no}: missed: {result['missed']}")
        results.append(result)
    total = round(time.monotonic() - t_all, 1)
    clean_count = sum(1 for r in results if r.get("clean"))
    print(f"\nkill/recover: {clean_count}/{len(results)} runs ended clean in {total} s")
    for r in results:
        print(json.dumps(r))
    report = Path(tempfile.gettempdir()) / "rollwright-kill-recover.json"
    report.write_text(json.dumps({"clean": clean_count, "runs": results, "seconds": total}, indent=2))
    # every kill point was hit (within its attempts) where it was meant to land
    assert not [r for r in results if r["missed"]], json.dumps(results, indent=2)
    assert clean_count == len(results) == (len(only) if only else 10), json.dumps(results, indent=2)
    # the lease keeper marked every interrupted deployment Stopped before recovery ran
    assert all(r["marked_stopped_by_keeper"] for r in results), json.dumps(results, indent=2)
    # every kill meant to land with a batch out of the load balancer did, the record knew those hosts
    # were out (recovery works from it), and every host that was out is back in its groups
    assert all(r["landed_as_intended"] for r in results), json.dumps(results, indent=2)
    assert all(set(r["out_of_lb_at_kill"]) <= set(r["out_at_kill"]) for r in results), json.dumps(results, indent=2)
    assert all(r["out_hosts_came_back"] for r in results), json.dumps(results, indent=2)
    pinned = [r for r in results if KILL_POINTS[r["run"] - 1][3] is not None]
    assert all(r["out_of_lb_at_kill"] for r in pinned), json.dumps(results, indent=2)


@pytest.mark.hostile
@pytest.mark.parametrize("one_task", [False, True], ids=["task-per-batch", "batches-in-one-task"])
def test_sigkill_14s_into_a_halfatatime_rollout_then_recover_one_second_later(
        world: Any, target_groups: list[str], aws: Any, tmp_path: Path, one_task: bool) -> None:
    """Issue 12, as a user would do it: SIGKILL of the ansible-playbook process alone (its workers are
    orphaned, still running) 14 s into the rollout, ``rollwright.deploy.recover`` 1 s later, no force.

    The lease keeper marks the deployment Stopped within 2 s of the kill (and takes the lock over, so
    an orphaned step is fenced off); recover on this machine checks the recorded controller process
    itself. The end state is every host in exactly its target groups, the record Stopped, the lock free.
    With every batch in one task the orphaned worker runs the whole rollout's loop: it must stop there too."""
    group = "fleet14-one" if one_task else "fleet14"
    records = str(tmp_path / "records.sqlite3")
    watch = Watch(records)
    before = membership(world, target_groups)
    bundle = build_bundle("kill14", tmp_path / "bundles", extra_files={"scripts/slow.sh": "#!/bin/sh\nsleep 6\n"},
                          edit_appspec=_slow_appspec)
    extra = {"rollwright_hosts": "fleet", "rollwright_application": APP, "rollwright_deployment_group": group,
             "rollwright_deployment_config": "CodeDeployDefault.HalfAtATime", "rollwright_healthy_timeout": 60,
             "rollwright_batches_in_one_task": one_task,
             "rollwright_target_group_arns": ",".join(target_groups), "rollwright_record_sqlite_path": records,
             "rollwright_revision": str(bundle), "rollwright_file_exists_behavior": "OVERWRITE"}  # the module world ran other deployments
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = ansible_env(aws.env, str(world.control_path_dir), {"ANSIBLE_STDOUT_CALLBACK": "default"})
    log = open(tmp_path / "run.log", "w")  # pylint: disable=consider-using-with
    started = time.monotonic()
    proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(world.inventory),  # pylint: disable=consider-using-with
                             str(ROOT / "playbooks" / "inplace.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                            cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        summary = None
        while summary is None and proc.poll() is None and time.monotonic() - started < 120:
            found = watch.store.list(APP, group, limit=1) if os.path.exists(records) else []
            summary = found[0] if found and found[0].status == "InProgress" else None
            time.sleep(0.05)
        assert summary is not None, (tmp_path / "run.log").read_text()[-3000:]
        rollout = time.monotonic()
        time.sleep(14.0)  # 14 s into the rollout (two batches of >= 6 s hooks: still running)
        assert watch.store.get(summary.deployment_id).status == "InProgress" and proc.poll() is None, \
            (tmp_path / "run.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # ansible-playbook only
        killed = time.monotonic()
        proc.wait()
        at_kill = watch.store.get(summary.deployment_id)
        while watch.store.get(summary.deployment_id).status != "Stopped" and time.monotonic() - killed < 10:
            time.sleep(0.05)
        noticed = round(time.monotonic() - killed, 2)
        time.sleep(max(0.0, killed + 1.0 - time.monotonic()))
        recovered = run_playbook(str(ROOT / "playbooks" / "recover.yml"), world.inventory,
                                 extra_vars={"rollwright_application": APP, "rollwright_deployment_group": group,
                                             "rollwright_record_sqlite_path": records},
                                 aws_env=aws.env, control_path_dir=str(world.control_path_dir), timeout=120)
    finally:
        log.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned workers, once the test is done with them
        except ProcessLookupError:
            pass
    final = watch.store.get(summary.deployment_id)
    out_at_kill = sorted(h.name for h in at_kill.hosts if h.lb_membership and not h.lb_restored)
    result = recovered.task("Recover the deployment and release the group's lock").get("localhost") or {}
    print(f"\nkill {round(killed - rollout, 1)} s into the rollout: hosts out at the kill {out_at_kill}; Stopped by "
          f"the lease keeper {noticed} s after the kill; recover rc {recovered.rc}: {result.get('message') or result.get('msg')}")
    assert noticed < 2.0, noticed
    assert recovered.rc == 0, result.get("msg") or recovered.stderr[-2000:]
    assert membership(world, target_groups) == before
    assert final.status == "Stopped" and watch.store.get_lock(APP, group) is None
    assert all(not h.lb_membership or h.lb_restored for h in final.hosts)
