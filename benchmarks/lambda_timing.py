# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tight timing figures the tests only bound loosely, measured.  (``make bench-timing``)

    python -m benchmarks.lambda_timing [--repeat 3] [--json FILE]

Against the AWS emulator (a moto server over HTTP on loopback, started here):

* Lambda linear steps (25 % every 2 s): each step's lateness against its plan, as the engine
  reports it and as a caller sees it (a thread polls get_alias every 20 ms);
* Lambda canary (10 %, then promote after 3 s): the promote's lateness as a caller sees it;
* alarm to rollback: a CloudWatch alarm set to ALARM mid-shift (alarm reads every 0.5 s), seconds until
  the alias is back on the current version;

and on this machine, no emulator needed:

* lease keeper reaction: the detached lease keeper of a deployment (a SQLite record and lock) whose
  controller process is killed: seconds until the record is Stopped;
* hook timeout: a hook script with a 1 s timeout that ignores SIGTERM (killed after a 1 s grace),
  and one that obeys SIGTERM with a 2 s timeout: seconds until the event returns.

Prints one table row per figure (min, median, max over the repetitions, and the target) and exits 1
when a figure's worst case misses its target. The integration tests assert the same behaviour with a
few seconds of headroom; this is where the tight figures are kept honest.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("index.py", text)
    return buf.getvalue()


class AliasWatcher:
    """Polls an alias every 20 ms from a thread; ``changes`` = [(monotonic time, version, weights)]."""

    def __init__(self, lam: Any, function: str, alias: str = "live") -> None:
        self.lam, self.function, self.alias = lam, function, alias
        self.changes: list[tuple[float, str, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = None
        while not self._stop.is_set():
            conf = self.lam.get_alias(FunctionName=self.function, Name=self.alias)
            state = (conf["FunctionVersion"], (conf.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {})
            if state != last:
                self.changes.append((time.monotonic(), state[0], dict(state[1])))
                last = state
            time.sleep(0.02)

    def __enter__(self) -> "AliasWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)


class LambdaBench:
    """A fresh function (versions 1 and 2, alias `live` on 1) and an alarm per run."""

    def __init__(self, endpoint: str, env: dict[str, str], region: str) -> None:
        import boto3

        self.session = boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                     aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=region)
        self.endpoint = endpoint
        self.lam = self.client("lambda")
        self.cw = self.client("cloudwatch")
        iam = self.client("iam")
        try:
            self.role = iam.get_role(RoleName="rollwright-bench")["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            self.role = iam.create_role(RoleName="rollwright-bench", AssumeRolePolicyDocument="{}")["Role"]["Arn"]

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint)

    def fresh(self) -> tuple[str, str]:
        name, alarm = f"bench-{uuid.uuid4().hex[:8]}", f"bench-errors-{uuid.uuid4().hex[:8]}"
        self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=self.role, Handler="index.handler",
                                 Code={"ZipFile": _zip("# v1")})
        self.lam.publish_version(FunctionName=name)
        self.lam.update_function_code(FunctionName=name, ZipFile=_zip("# v2"))
        self.lam.publish_version(FunctionName=name)
        self.lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
        self.cw.put_metric_alarm(AlarmName=alarm, MetricName="Errors", Namespace="AWS/Lambda", Statistic="Sum",
                                 Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
        return name, alarm

    def shift(self, name: str, config: dict, **options: Any) -> dict:
        from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.lambda_deploy import execute

        clients = {"lambda": self.lam, "cloudwatch": self.cw}
        opts = {"function_name": name, "alias": "live", "target_version": "2", "deployment_config": config, **options}
        return execute(opts, lambda service: clients.get(service) or self.client(service))


def linear_steps(bench: LambdaBench) -> tuple[list[float], list[float]]:
    """Lateness of each step after the first: (engine-reported, caller-observed), seconds."""
    name, _alarm = bench.fresh()
    with AliasWatcher(bench.lam, name) as watcher:
        result = bench.shift(name, {"type": "linear", "percentage": 25, "interval": "2s"})
        time.sleep(0.1)
    if result.get("status") != "Succeeded":
        raise RuntimeError(f"linear shift did not succeed: {result.get('msg')}")
    engine = [s["actual_seconds"] - s["planned_seconds"] for s in result["steps"][1:]]
    first = watcher.changes[1][0]
    seen = [(when - first) - planned for (when, _v, _w), planned in zip(watcher.changes[2:], [2.0, 4.0, 6.0])]
    return engine, seen


def canary_promote(bench: LambdaBench) -> float:
    name, _alarm = bench.fresh()
    with AliasWatcher(bench.lam, name) as watcher:
        result = bench.shift(name, {"type": "canary", "percentage": 10, "interval": "3s"})
        time.sleep(0.1)
    if result.get("status") != "Succeeded" or len(watcher.changes) != 3:
        raise RuntimeError(f"canary shift: {result.get('msg')} {watcher.changes}")
    return watcher.changes[2][0] - watcher.changes[1][0] - 3.0


def alarm_to_rollback(bench: LambdaBench) -> float:
    name, alarm = bench.fresh()
    fired: dict[str, float] = {}

    def fire() -> None:
        fired["at"] = time.monotonic()
        bench.cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="benchmark")

    timer = threading.Timer(2.5, fire)
    with AliasWatcher(bench.lam, name) as watcher:
        timer.start()
        result = bench.shift(name, {"type": "linear", "percentage": 20, "interval": "2s"}, alarms=[alarm], poll_interval=0.5)
        time.sleep(0.1)
    timer.join()
    if not result.get("rolled_back") or watcher.changes[-1][1:] != ("1", {}):
        raise RuntimeError(f"the alarm did not roll back: {result.get('msg')}")
    return watcher.changes[-1][0] - fired["at"]


def lease_keeper_reaction(work: Path) -> float:
    """Seconds from the controller's death to the record marked Stopped by the real, detached lease keeper."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import lease
    from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
    from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import DeploymentRecord

    path = work / f"keeper-{uuid.uuid4().hex[:6]}.sqlite3"
    store = open_store("sqlite", {"path": str(path)})
    record = store.create(DeploymentRecord(application="bench", deployment_group="g"))
    store.update_status(record.deployment_id, "InProgress")
    lock = store.acquire_lock("bench", "g", record.deployment_id, ttl=60)
    controller = subprocess.Popen(["sleep", "600"], start_new_session=True)  # stands for ansible-playbook
    keeper = lease.spawn_lease_keeper({"backend": "sqlite", "path": str(path)}, {}, lock.to_dict(),
                                      (controller.pid, lease.process_start(controller.pid)), interval=5.0,
                                      work_dir=str(work / "keeper"), log_path=str(work / "keeper.log"))
    try:
        time.sleep(1.0)  # the keeper is up and beating
        os.kill(controller.pid, signal.SIGKILL)
        killed = time.monotonic()
        controller.wait()
        while store.get(record.deployment_id).status != "Stopped":
            if time.monotonic() - killed > 60:
                raise RuntimeError("the lease keeper did not mark the deployment Stopped within 60 s")
            time.sleep(0.01)
        return time.monotonic() - killed
    finally:
        lease.stop_lease_keeper(keeper)


def hook_timeout(work: Path, obey_term: bool) -> float:
    """Seconds run_event takes for a script that overruns its timeout (1 s + 1 s grace, or 2 s obeying TERM)."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.host import hooks as hr

    root = work / f"hook-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)
    os.chmod(work, 0o755)
    os.chmod(root, 0o755)
    # `exec`: one process that obeys SIGTERM. (A shell's orphaned child stays a zombie here when PID 1 does
    # not reap, as in some containers, and then counts as alive until the grace ends; hosts have an init.)
    body = "#!/bin/sh\nexec sleep 30\n" if obey_term else "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.1; done\n"
    script = root / "hang.sh"
    script.write_text(body)
    script.chmod(0o755)
    ctx = hr.HookContext(deployment_id="d-BENCH0001", application="bench", deployment_group="g",
                         deployment_group_id="g-id", revision={"source": "local"})
    timeout = 2 if obey_term else 1
    start = time.monotonic()
    result = hr.run_event("ApplicationStop", [{"location": "hang.sh", "timeout": timeout}], str(root), ctx,
                          str(root / "scripts.log"), grace=1)
    took = time.monotonic() - start
    if result.status != "Failed" or not result.scripts[0].timed_out:
        raise RuntimeError(f"the hook did not time out: {result.message}")
    return took


def _row(name: str, values: list[float], target: str, limit: float, floor: float | None = None) -> dict[str, Any]:
    """One table row; ok when the worst case is within the limit (and, with a floor, none is below it)."""
    ok = max(values) <= limit and (floor is None or min(values) >= floor)
    return {"figure": name, "n": len(values), "min": min(values), "median": statistics.median(values),
            "max": max(values), "target": target, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lambda_timing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        print("--repeat: at least 1", file=sys.stderr)
        return 2
    sys.path[:0] = [str(ROOT / "build"), str(ROOT)]
    from tests.harness import emulator as emu

    work = Path(tempfile.mkdtemp(prefix="rw-bench-timing-"))
    handle = emu.start_emulator(work / "emulator")
    rows = []
    try:
        bench = LambdaBench(handle.endpoint, emu.aws_env(handle.endpoint, emu.REGION), emu.REGION)
        engine: list[float] = []
        seen: list[float] = []
        measures: dict[str, list[float]] = {"canary": [], "alarm": [], "keeper": [], "hook_kill": [], "hook_term": []}
        jobs: list[tuple[str, Callable[[], Any]]] = [
            ("linear", lambda: linear_steps(bench)),
            ("canary", lambda: canary_promote(bench)),
            ("alarm", lambda: alarm_to_rollback(bench)),
            ("keeper", lambda: lease_keeper_reaction(work)),
            ("hook_kill", lambda: hook_timeout(work, obey_term=False)),
            ("hook_term", lambda: hook_timeout(work, obey_term=True)),
        ]
        for run in range(1, args.repeat + 1):
            for key, job in jobs:
                print(f"run {run}/{args.repeat}: {key} ...", flush=True)
                value = job()
                if key == "linear":
                    engine += value[0]
                    seen += value[1]
                else:
                    measures[key].append(value)
        rows = [
            _row("Lambda linear step lateness, engine (s)", engine, "< 1.0", 1.0),
            _row("Lambda linear step lateness, caller's view (s)", seen, "< 1.0", 1.0),
            _row("Lambda canary promote lateness, caller's view (s)", measures["canary"], "< 1.0", 1.0),
            _row("alarm to alias rolled back (s), alarm reads every 0.5 s", measures["alarm"], "<= 1.5", 1.5),
            _row("lease keeper: controller killed to record Stopped (s)", measures["keeper"], "< 5.0", 5.0),
            _row("hook timeout 1 s + 1 s grace, SIGTERM ignored (s)", measures["hook_kill"], "2 .. 3", 3.0, 2.0),
            _row("hook timeout 2 s, SIGTERM obeyed (s)", measures["hook_term"], "2 .. 3", 3.0, 2.0),
        ]
    finally:
        emu.stop_emulator(handle)
    print()
    print(f"Timing on this machine ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}), "
          f"{args.repeat} run(s) of each measurement")
    header = f"{'figure':58} {'n':>3} {'min':>7} {'median':>7} {'max':>7}  {'target':8} ok"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['figure']:58} {r['n']:>3} {r['min']:>7.3f} {r['median']:>7.3f} {r['max']:>7.3f}  {r['target']:8} "
              f"{'yes' if r['ok'] else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
