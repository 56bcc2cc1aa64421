# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lambda blue/green against the emulator, in real time.

A watcher thread polls get_alias every 20 ms and records each change of the alias, so the tests
check what a caller of the function would have seen: the sequence of weights, that none took effect
early, and that each (and an alarm's rollback) came within a few seconds of its time. How close to the
plan they really are is measured by ``make bench-timing`` (benchmarks/lambda_timing.py).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.lambda_deploy import (
    LambdaDeployment,
    execute,
    request_from_options,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# Seconds a step or a rollback may come late on a loaded machine. Correctness (order, weights, final
# state, never early) is asserted here; the tight figures are measured by benchmarks/lambda_timing.py.
SLACK = 3.0


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("index.py", text)
    return buf.getvalue()


class Watcher:
    """Polls the alias from a thread; ``changes`` is [(monotonic time, version, weights)]."""

    def __init__(self, lam, function: str, alias: str, period: float = 0.02):
        self.lam, self.function, self.alias, self.period = lam, function, alias, period
        self.changes: list[tuple[float, str, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        conf = self.lam.get_alias(FunctionName=self.function, Name=self.alias)
        weights = (conf.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        return conf["FunctionVersion"], {k: float(v) for k, v in weights.items()}

    def _run(self):
        last = None
        while not self._stop.is_set():
            state = self._read()
            if state != last:
                self.changes.append((time.monotonic(), state[0], state[1]))
                last = state
            time.sleep(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def states(self):
        return [(v, w) for _when, v, w in self.changes]


class LambdaWorld:
    """One function with versions 1..n, an alias on version 1, hook functions and an alarm."""

    def __init__(self, aws, versions: int = 3):
        self.aws = aws
        self.lam = aws.client("lambda")
        self.cw = aws.client("cloudwatch")
        suffix = uuid.uuid4().hex[:8]
        self.name = f"app-{suffix}"
        self.pre = f"pre-{suffix}"
        self.post = f"post-{suffix}"
        self.alarm = f"errors-{suffix}"
        iam = aws.client("iam")
        try:
            role = iam.get_role(RoleName="rollwright-lambda-test")["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            role = iam.create_role(RoleName="rollwright-lambda-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        self.role = role
        self._function(self.name, versions)
        self.lam.create_alias(FunctionName=self.name, Name="live", FunctionVersion="1")
        self._function(self.pre, 1)
        self._function(self.post, 1)
        self.cw.put_metric_alarm(AlarmName=self.alarm, MetricName="Errors", Namespace="AWS/Lambda", Statistic="Sum",
                                 Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")

    def _function(self, name: str, versions: int) -> None:
        self.lam.create_function(FunctionName=name, Runtime="python3.11", Role=self.role, Handler="index.handler",
                                 Code={"ZipFile": _zip(f"# {name} v1")})
        self.lam.publish_version(FunctionName=name)
        for n in range(2, versions + 1):
            self.lam.update_function_code(FunctionName=name, ZipFile=_zip(f"# {name} v{n}"))
            self.lam.publish_version(FunctionName=name)

    def alias(self):
        conf = self.lam.get_alias(FunctionName=self.name, Name="live")
        weights = (conf.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        return conf["FunctionVersion"], dict(weights)

    def versions(self) -> list[str]:
        return [v["Version"] for v in self.lam.list_versions_by_function(FunctionName=self.name)["Versions"]]

    def client(self, service: str):
        return {"lambda": self.lam, "cloudwatch": self.cw}.get(service) or self.aws.client(service)

    def options(self, **kw):
        base = {"function_name": self.name, "alias": "live", "target_version": "2"}
        base.update(kw)
        return base

    def run(self, check_mode=False, progress=None, **kw):
        return execute(self.options(**kw), self.client, check_mode=check_mode, progress=progress)


@pytest.fixture
def world(aws):
    return LambdaWorld(aws)


def test_linear_weights_and_schedule(world):
    with Watcher(world.lam, world.name, "live") as watcher:
        result = world.run(deployment_config={"type": "linear", "percentage": 25, "interval": "2s"})
        time.sleep(0.1)
    assert result["status"] == "Succeeded", result
    assert watcher.states() == [("1", {}), ("1", {"2": 0.25}), ("1", {"2": 0.5}), ("1", {"2": 0.75}), ("2", {})]
    # Correctness with headroom for a loaded 2-core machine: no step before its time, none far after it.
    # (How close to the plan the steps really are is measured by `make bench-timing`.)
    first = watcher.changes[1][0]
    for (seen, _version, _weights), planned in zip(watcher.changes[1:], [0.0, 2.0, 4.0, 6.0]):
        assert planned - 1.0 < seen - first < planned + SLACK, (planned, seen - first)
    assert [(s["planned_seconds"], s["weight"]) for s in result["steps"]] == [(0.0, 0.25), (2.0, 0.5), (4.0, 0.75), (6.0, 1.0)]
    assert all(s["planned_seconds"] - 0.05 <= s["actual_seconds"] < s["planned_seconds"] + SLACK for s in result["steps"])
    assert result["final_alias"] == {"function_version": "2", "additional_version_weights": {}}


def test_canary_then_promote_with_hooks_and_progress(world):
    events = []
    with Watcher(world.lam, world.name, "live") as watcher:
        result = world.run(deployment_config={"type": "canary", "percentage": 10, "interval": "3s"},
                           before_allow_traffic_hook=world.pre, after_allow_traffic_hook=world.post,
                           alarms=[world.alarm], poll_interval=0.5, progress=events.append)
        time.sleep(0.1)
    assert result["status"] == "Succeeded", result
    assert watcher.states() == [("1", {}), ("1", {"2": 0.1}), ("2", {})]
    assert 2.0 < watcher.changes[2][0] - watcher.changes[1][0] < 3.0 + SLACK  # promoted after the 3 s interval
    assert [(h["lifecycle_event"], h["status"]) for h in result["hooks"]] == [
        ("BeforeAllowTraffic", "Succeeded"), ("AfterAllowTraffic", "Succeeded")]
    invocations = [i for i in world.aws.lambda_invocations() if i["function_name"] in (world.pre, world.post)]
    assert [i["function_name"] for i in invocations] == [world.pre, world.post]
    sent = json.loads(invocations[0]["payload"])
    assert sent["DeploymentId"] == result["deployment_id"] and sent["LifecycleEvent"] == "BeforeAllowTraffic"
    assert (sent["CurrentVersion"], sent["TargetVersion"], sent["Alias"]) == ("1", "2", "live")
    step_lines = [e["message"] for e in events if e["event"] == "step"]
    assert len(step_lines) == 2 and "10% on version 2" in step_lines[0] and "alarms: OK" in step_lines[0]
    assert "promoted" in step_lines[1]


@pytest.mark.parametrize("bad", [
    {"payload": json.dumps({"errorMessage": "boom", "errorType": "Exception"}), "function_error": "Unhandled"},
    {"payload": json.dumps({"status": "Failed", "reason": "smoke test failed"}), "function_error": None},
], ids=["function-error", "status-failed"])
def test_before_hook_failure_moves_no_traffic(world, bad):
    world.aws.queue_lambda_results([bad])
    with Watcher(world.lam, world.name, "live") as watcher:
        result = world.run(deployment_config={"type": "canary", "percentage": 10, "interval": "2s"},
                           before_allow_traffic_hook=world.pre)
        time.sleep(0.1)
    assert result["failed"] and result["status"] == "Failed"
    assert watcher.states() == [("1", {})]
    hook = result["hooks"][0]
    assert hook["status"] == "Failed" and hook["function_error"] == bad["function_error"]
    assert "BeforeAllowTraffic hook" in result["msg"] and "no traffic was moved" in result["msg"]


def test_after_hook_failure_rolls_back(world):
    world.aws.queue_lambda_results([{"payload": json.dumps({"status": "Succeeded"}), "function_error": None},
                                    {"payload": json.dumps({"errorMessage": "x"}), "function_error": "Unhandled"}])
    with Watcher(world.lam, world.name, "live") as watcher:
        result = world.run(deployment_config={"type": "canary", "percentage": 50, "interval": "1s"},
                           before_allow_traffic_hook=world.pre, after_allow_traffic_hook=world.post)
        time.sleep(0.1)
    assert result["status"] == "Failed" and result["rolled_back"]
    assert [s["weight"] for s in result["steps"]] == [0.5, 1.0]
    # the promoted state lasts only as long as the AfterAllowTraffic invocation: the 20 ms watcher
    # may miss it, but it never sees anything else, and the alias ends on the current version
    states = watcher.states()
    assert states[:2] == [("1", {}), ("1", {"2": 0.5})] and states[-1] == ("1", {})
    assert set(map(repr, states)) <= {repr(("1", {})), repr(("1", {"2": 0.5})), repr(("2", {}))}
    assert result["final_alias"] == {"function_version": "1", "additional_version_weights": {}}


def test_alarm_mid_shift_rolls_back_fast(world):
    fired = {}

    def fire():
        fired["at"] = time.monotonic()
        world.cw.set_alarm_state(AlarmName=world.alarm, StateValue="ALARM", StateReason="Errors > 1 for 1 datapoint")

    timer = threading.Timer(2.5, fire)
    poll = 0.5
    with Watcher(world.lam, world.name, "live") as watcher:
        timer.start()
        result = world.run(deployment_config={"type": "linear", "percentage": 20, "interval": "2s"},
                           alarms=[world.alarm], poll_interval=poll)
        time.sleep(0.1)
    timer.join()
    assert result["status"] == "Stopped" and result["rolled_back"] and result["failed"]
    assert watcher.states() == [("1", {}), ("1", {"2": 0.2}), ("1", {"2": 0.4}), ("1", {})]
    back = watcher.changes[-1][0]
    assert back - fired["at"] <= poll + SLACK  # the rollback came at the next alarm read, before the next step
    event = [e for e in result["alarm_events"] if e.get("alarm") == world.alarm][0]
    assert event["state"] == "ALARM" and event["reason"] == "Errors > 1 for 1 datapoint" and event["time"]
    assert world.alarm in result["msg"] and "rolled back to version 1" in result["msg"]
    assert result["rollback"]["version"] == "1"


def test_alarm_in_alarm_before_start_refuses(world):
    world.cw.set_alarm_state(AlarmName=world.alarm, StateValue="ALARM", StateReason="already bad")
    result = world.run(alarms=[world.alarm])
    assert result["failed"] and "already in ALARM; deployment refused" in result["msg"]
    assert world.alias() == ("1", {})


def test_alarm_deleted_mid_shift_stops_unless_ignored(world):
    timer = threading.Timer(1.0, lambda: world.cw.delete_alarms(AlarmNames=[world.alarm]))
    timer.start()
    result = world.run(deployment_config={"type": "canary", "percentage": 10, "interval": "3s"},
                       alarms=[world.alarm], poll_interval=0.5)
    timer.join()
    assert result["status"] == "Stopped" and result["rolled_back"]
    assert "cannot read the alarms' state" in result["msg"] and world.alarm in result["alarm_events"][-1]["error"]
    assert world.alias() == ("1", {})


def test_unreachable_cloudwatch(world):
    """A CloudWatch endpoint nobody listens on: a real connection failure on every read."""
    import socket

    import botocore.config

    # Bound but never listening: every connection is refused at once, and no other process can take
    # the port while the test holds it (a closed socket's port may be reused and answer slowly).
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # One attempt per read (standard retry mode counts attempts, legacy mode counts retries with a
    # random backoff of up to a second): each failed read returns at once, as a refused connection does.
    broken = world.aws.session().client("cloudwatch", endpoint_url=dead, config=botocore.config.Config(
        retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=0.5, read_timeout=0.5))
    # without ignore_poll_alarm_failure: refused before anything changes
    refused = execute(world.options(alarms=[world.alarm]),
                      lambda s: broken if s == "cloudwatch" else world.client(s))
    assert refused["failed"] and "cannot read the alarms' state before starting" in refused["msg"]
    assert world.alias() == ("1", {})
    # with it: the deployment goes on and records every failed read
    engine = LambdaDeployment(world.lam, broken)
    result = engine.run(request_from_options(world.options(
        deployment_config={"type": "canary", "percentage": 10, "interval": "2s"}, alarms=[world.alarm],
        poll_interval=0.5, ignore_poll_alarm_failure=True)))
    assert result["status"] == "Succeeded"
    assert len(result["alarm_events"]) >= 3 and all(e["ignored"] and e["error"] for e in result["alarm_events"])
    assert all(s["planned_seconds"] - 0.05 <= s["actual_seconds"] < s["planned_seconds"] + SLACK
               for s in result["steps"]), result["steps"]
    assert world.alias() == ("2", {})
    sock.close()


@pytest.mark.parametrize("options,match", [
    ({"function_name": "no-such-function"}, "function_name: function 'no-such-function' not found"),
    ({"alias": "no-such-alias"}, "alias: alias 'no-such-alias' of function"),
    ({"target_version": "1", "current_version": "1"}, "current_version and target_version are both 1"),
    ({"target_version": "$LATEST"}, r"target_version: \$LATEST cannot be a weighted alias version"),
    ({"target_version": "99"}, "target_version: version 99 of function"),
    ({"deployment_config": {"type": "linear", "percentage": 0, "interval": "1s"}}, r"deployment_config\.percentage: the percentage must be from 1 to 99"),
    ({"deployment_config": {"type": "canary", "percentage": 100, "interval": "1s"}}, r"deployment_config\.percentage"),
    ({"deployment_config": "CodeDeployDefault.LambdaCanary50Percent1Minute"}, "deployment_config: unknown deployment configuration"),
    ({"before_allow_traffic_hook": "no-such-hook"}, "before_allow_traffic_hook: hook function 'no-such-hook' not found"),
], ids=["function", "alias", "target-equals-current", "latest", "missing-version", "pct0", "pct100", "name", "hook"])
def test_bad_input_is_a_clear_error_and_changes_nothing(world, options, match):
    import re

    before_versions = world.versions()
    result = world.run(**options)
    assert result["failed"] and re.search(match, result["msg"]), result["msg"]
    assert world.alias() == ("1", {}) and world.versions() == before_versions


def test_latest_as_current_cannot_be_weighted(world):
    world.lam.update_alias(FunctionName=world.name, Name="live", FunctionVersion="$LATEST")
    result = world.run(deployment_config="CodeDeployDefault.LambdaLinear10PercentEvery1Minute")
    assert result["failed"] and "points at $LATEST" in result["msg"]
    assert world.alias() == ("$LATEST", {})


def test_idempotent_and_check_mode(world):
    planned = world.run(check_mode=True, deployment_config="CodeDeployDefault.LambdaLinear10PercentEvery10Minutes",
                        before_allow_traffic_hook=world.pre)
    assert planned["changed"] and planned["status"] == "Planned"
    assert [(s["planned_seconds"], s["weight"]) for s in planned["steps"]][:2] == [(0.0, 0.1), (600.0, 0.2)]
    assert planned["steps"][-1] == {"planned_seconds": 5400.0, "weight": 1.0, "promote": True, "actual_seconds": None}
    assert world.alias() == ("1", {}) and world.aws.lambda_invocations() == [
        i for i in world.aws.lambda_invocations() if i["function_name"] != world.pre]
    first = world.run()
    assert first["changed"] and first["status"] == "Succeeded"
    second = world.run()
    assert second["changed"] is False and second["status"] == "Unchanged" and not second["failed"]
    assert world.run(check_mode=True)["changed"] is False


def test_publish_with_code_then_idempotent(world, tmp_path):
    data = _zip("# brand new")
    path = tmp_path / "app.zip"
    path.write_bytes(data)
    opts = {"target_version": None, "publish": True, "code": {"zip_file": str(path)},
            "deployment_config": {"type": "linear", "percentage": 50, "interval": 1}}
    result = world.run(**opts)
    assert result["status"] == "Succeeded" and result["published_version"] == "4" and world.alias() == ("4", {})
    again = world.run(**opts)
    assert again["changed"] is False and world.versions() == ["$LATEST", "1", "2", "3", "4"]


def test_take_over_and_recover(world):
    world.lam.update_alias(FunctionName=world.name, Name="live", FunctionVersion="1",
                           RoutingConfig={"AdditionalVersionWeights": {"2": 0.4}})
    refused = world.run()
    assert refused["failed"] and "already splits traffic" in refused["msg"] and "recover: true" in refused["msg"]
    assert world.alias() == ("1", {"2": 0.4})
    checked = world.run(check_mode=True, recover=True)
    assert checked["changed"] and world.alias() == ("1", {"2": 0.4})
    recovered = world.run(recover=True)
    assert recovered["changed"] and recovered["status"] == "Recovered" and world.alias() == ("1", {})
    assert world.run(recover=True)["changed"] is False
    world.lam.update_alias(FunctionName=world.name, Name="live", FunctionVersion="1",
                           RoutingConfig={"AdditionalVersionWeights": {"2": 0.4}})
    taken = world.run(take_over=True, target_version="3")
    assert taken["status"] == "Succeeded" and world.alias() == ("3", {})


def test_module_file_runs_standalone(world, tmp_path):
    """The module itself (used when the task is delegated to another host), run as Ansible runs it."""
    args = {"ANSIBLE_MODULE_ARGS": {**world.options(deployment_config={"type": "canary", "percentage": 50, "interval": 1}),
                                    "endpoint_url": world.aws.endpoint, "region": world.aws.region,
                                    "access_key": world.aws.env["AWS_ACCESS_KEY_ID"],
                                    "secret_key": world.aws.env["AWS_SECRET_ACCESS_KEY"]}}
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(args))
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'build'}:{ROOT / '.venv/lib/python3.11/site-packages'}")
    env.pop("AWS_ENDPOINT_URL", None)
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.rollwright.deploy.plugins.modules.lambda_deploy",
                           str(args_file)], capture_output=True, text=True, env=env, timeout=60, cwd=str(tmp_path), check=False)
    out = json.loads(proc.stdout)
    assert out.get("status") == "Succeeded", proc.stdout + proc.stderr
    assert [s["weight"] for s in out["steps"]] == [0.5, 1.0]
    assert world.alias() == ("2", {})


def test_through_ansible_playbook_action_plugin(world, ansible_run, tmp_path):
    inventory = tmp_path / "hosts"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")
    common = {"function_name": world.name, "alias": "live"}
    plays = [{
        "name": "lambda",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"name": "plan", "check_mode": True,
             "rollwright.deploy.lambda_deploy": {**common, "target_version": "2",
                                                 "deployment_config": "CodeDeployDefault.LambdaCanary10Percent5Minutes"}},
            {"name": "shift", "rollwright.deploy.lambda_deploy": {
                **common, "target_version": "2", "before_allow_traffic_hook": world.pre, "alarms": [world.alarm],
                "poll_interval": 0.5, "deployment_config": {"type": "linear", "percentage": 50, "interval": "1s"}}},
            {"name": "again", "rollwright.deploy.lambda_deploy": {**common, "target_version": "2"}},
            {"name": "recover", "rollwright.deploy.lambda_deploy": {**common, "recover": True}},
        ],
    }]
    run = ansible_run(plays, inventory, timeout=120)
    assert run.rc == 0, run
    plan = run.task("plan")["localhost"]
    assert plan["changed"] and plan["status"] == "Planned" and [s["weight"] for s in plan["steps"]] == [0.1, 1.0]
    shift = run.task("shift")["localhost"]
    assert shift["changed"] and shift["status"] == "Succeeded" and [s["weight"] for s in shift["steps"]] == [0.5, 1.0]
    assert shift["deployment_id"].startswith("d-") and len(shift["deployment_id"]) == 11
    assert run.task("again")["localhost"]["changed"] is False
    assert run.task("recover")["localhost"]["changed"] is False
    # live progress printed by the action plugin while the task ran
    assert f"lambda_deploy {world.name}:live" in run.stdout
    assert "step 1/2" in run.stdout and "50% on version 2" in run.stdout and "alarms: OK" in run.stdout
    assert world.alias() == ("2", {})


def test_role_playbook(world, ansible_run, tmp_path):
    inventory = tmp_path / "hosts"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")
    extra = {"rollwright_lambda_function_name": world.name, "rollwright_lambda_alias": "live",
             "rollwright_lambda_target_version": "3", "rollwright_auto_rollback_alarms": f"{world.alarm}, ",
             "rollwright_lambda_poll_interval": 0.5,
             "rollwright_deployment_config": {"type": "canary", "percentage": 20, "interval": "1s"}}
    run = ansible_run("rollwright.deploy.lambda", inventory, extra_vars=extra, timeout=120)
    assert run.rc == 0, [h.get("msg") for t in run.tasks() for h in t["hosts"].values()]
    shift = run.task("rollwright.deploy.lambda_shift : Shift the alias to the new version")["localhost"]
    assert shift["status"] == "Succeeded" and [s["weight"] for s in shift["steps"]] == [0.2, 1.0]
    assert world.alias() == ("3", {})
    world.lam.update_alias(FunctionName=world.name, Name="live", FunctionVersion="3",
                           RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    run = ansible_run("rollwright.deploy.lambda", inventory, timeout=120, extra_vars={
        "rollwright_lambda_function_name": world.name, "rollwright_lambda_alias": "live", "rollwright_lambda_recover": True})
    assert run.rc == 0, run
    assert world.alias() == ("3", {})
