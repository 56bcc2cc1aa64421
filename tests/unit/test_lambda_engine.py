# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Lambda deployment engine against in-process moto, driven by a virtual clock.

Time is virtual (the engine's clock and sleep are injected), so these tests check the exact step
schedule, the alarm polling cadence and the rollback moment without waiting.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile

import boto3
import pytest
from moto import mock_aws

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.lambda_deploy import (
    LambdaDeployError,
    LambdaDeployment,
    new_deployment_id,
    request_from_options,
)

REGION = "us-east-1"


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("index.py", text)
    return buf.getvalue()


class VirtualTime:
    """A monotonic clock that moves only when the engine sleeps; callbacks fire at given times."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.at: list[tuple[float, object]] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds
        for due, fn in list(self.at):
            if self.now >= due:
                self.at.remove((due, fn))
                fn()


@pytest.fixture
def world(monkeypatch):
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    with mock_aws(config={"lambda": {"use_docker": False}}):
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam = boto3.client("lambda", region_name=REGION)
        cw = boto3.client("cloudwatch", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)

        def make_function(name: str, versions: int = 2) -> None:
            lam.create_function(FunctionName=name, Runtime="python3.11", Role=role, Handler="index.handler",
                                Code={"ZipFile": _zip(f"# {name} v1")})
            lam.publish_version(FunctionName=name)
            for n in range(2, versions + 1):
                lam.update_function_code(FunctionName=name, ZipFile=_zip(f"# {name} v{n}"))
                lam.publish_version(FunctionName=name)

        make_function("app", 3)
        lam.create_alias(FunctionName="app", Name="live", FunctionVersion="1")
        make_function("pre-hook", 1)
        make_function("post-hook", 1)
        cw.put_metric_alarm(AlarmName="errors", MetricName="Errors", Namespace="AWS/Lambda", Statistic="Sum",
                            Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
        vt = VirtualTime()
        events: list[dict] = []
        observed: list[tuple[float, str, dict]] = []

        def progress(event):
            events.append(event)
            if event["event"] == "step":
                conf = lam.get_alias(FunctionName="app", Name="live")
                weights = (conf.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
                observed.append((vt.now, conf["FunctionVersion"], dict(weights)))

        engine = LambdaDeployment(lam, cw, s3, clock=vt.clock, sleep=vt.sleep, wall_clock=vt.wall, progress=progress)

        class World:
            pass

        w = World()
        w.lam, w.cw, w.s3, w.vt, w.engine, w.events, w.observed = lam, cw, s3, vt, engine, events, observed
        w.role = role

        def alias():
            conf = lam.get_alias(FunctionName="app", Name="live")
            return conf["FunctionVersion"], (conf.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}

        w.alias = alias
        yield w


def req(**kw):
    base = {"function_name": "app", "alias": "live", "target_version": "2"}
    base.update(kw)
    return request_from_options(base)


def test_linear_schedule_exact_on_virtual_clock(world):
    result = world.engine.run(req(deployment_config={"type": "linear", "percentage": 25, "interval": "2s"}))
    assert result["status"] == "Succeeded" and result["changed"] and not result["failed"]
    assert [(s["planned_seconds"], s["weight"]) for s in result["steps"]] == [(0.0, 0.25), (2.0, 0.5), (4.0, 0.75), (6.0, 1.0)]
    assert all(abs(s["drift_seconds"]) < 1e-6 for s in result["steps"])
    start = world.observed[0][0]
    assert [(t - start, v, w) for t, v, w in world.observed] == [
        (0.0, "1", {"2": 0.25}), (2.0, "1", {"2": 0.5}), (4.0, "1", {"2": 0.75}), (6.0, "2", {}),
    ]
    assert world.alias() == ("2", {})
    assert result["final_alias"] == {"function_version": "2", "additional_version_weights": {}}
    assert result["current_version"] == "1" and result["target_version"] == "2"
    assert [e["event"] for e in world.events].count("step") == 4


def test_predefined_linear_every_minute_takes_nine_minutes_and_polls_alarms(world):
    result = world.engine.run(req(deployment_config="CodeDeployDefault.LambdaLinear10PercentEvery1Minute",
                                  alarms=["errors"], poll_interval=5))
    assert result["status"] == "Succeeded"
    assert [s["planned_seconds"] for s in result["steps"]] == [60.0 * k for k in range(10)]
    assert [s["weight"] for s in result["steps"]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    # the engine never sleeps longer than the poll interval (nor 1 s) while alarms are watched
    assert max(world.vt.sleeps) <= 1.0


def test_idempotent_second_run(world):
    first = world.engine.run(req())
    assert first["changed"] and first["status"] == "Succeeded"
    second = world.engine.run(req())
    assert second["changed"] is False and second["status"] == "Unchanged" and second["steps"] == []


def test_check_mode_plans_and_touches_nothing(world):
    result = world.engine.run(req(deployment_config="CodeDeployDefault.LambdaCanary10Percent5Minutes",
                                  before_allow_traffic_hook="pre-hook"), check_mode=True)
    assert result["changed"] and result["status"] == "Planned"
    assert [(s["planned_seconds"], s["weight"]) for s in result["steps"]] == [(0.0, 0.1), (300.0, 1.0)]
    assert result["hooks"] == [] and world.vt.sleeps == []
    assert world.alias() == ("1", {})


def test_alarm_mid_shift_rolls_back_within_poll_interval(world):
    def fire():
        world.cw.set_alarm_state(AlarmName="errors", StateValue="ALARM", StateReason="errors > 1")

    t_start = world.vt.now
    world.vt.at.append((t_start + 7.0, fire))
    result = world.engine.run(req(deployment_config={"type": "linear", "percentage": 10, "interval": "5s"},
                                  alarms=["errors"], poll_interval=2))
    assert result["status"] == "Stopped" and result["failed"] and result["rolled_back"]
    assert world.alias() == ("1", {})
    event = [e for e in result["alarm_events"] if e.get("alarm") == "errors"][0]
    assert event["state"] == "ALARM" and event["reason"] == "errors > 1"
    assert 7.0 <= event["at_seconds"] <= 7.0 + 2.0
    assert [s["weight"] for s in result["steps"]] == [0.1, 0.2]
    assert "errors" in result["msg"] and "rolled back to version 1" in result["msg"]


def test_alarm_already_firing_refuses(world):
    world.cw.set_alarm_state(AlarmName="errors", StateValue="ALARM", StateReason="already")
    with pytest.raises(LambdaDeployError, match="errors already in ALARM; deployment refused"):
        world.engine.run(req(alarms=["errors"]))
    assert world.alias() == ("1", {})


def test_alarm_deleted_mid_shift_is_a_read_failure(world):
    world.vt.at.append((world.vt.now + 3.0, lambda: world.cw.delete_alarms(AlarmNames=["errors"])))
    result = world.engine.run(req(deployment_config={"type": "canary", "percentage": 10, "interval": "10s"},
                                  alarms=["errors"], poll_interval=2))
    assert result["status"] == "Stopped" and result["rolled_back"]
    assert "not found" in result["alarm_events"][-1]["error"]
    assert world.alias() == ("1", {})


def test_alarm_read_failure_ignored(world):
    world.vt.at.append((world.vt.now + 3.0, lambda: world.cw.delete_alarms(AlarmNames=["errors"])))
    result = world.engine.run(req(deployment_config={"type": "canary", "percentage": 10, "interval": "10s"},
                                  alarms=["errors"], poll_interval=2, ignore_poll_alarm_failure=True))
    assert result["status"] == "Succeeded"
    assert result["alarm_events"] and all(e["ignored"] for e in result["alarm_events"])
    assert world.alias() == ("2", {})


def test_before_hook_failed_status_moves_no_traffic(world):
    from moto.awslambda_simple.models import lambda_simple_backends

    lambda_simple_backends["123456789012"][REGION].lambda_simple_results_queue.append(json.dumps({"status": "Failed"}))
    result = world.engine.run(req(before_allow_traffic_hook="pre-hook",
                                  deployment_config={"type": "canary", "percentage": 10, "interval": "5s"}))
    assert result["status"] == "Failed" and result["failed"]
    assert result["steps"] == [] and world.observed == []
    assert result["hooks"][0]["status"] == "Failed" and result["hooks"][0]["lifecycle_event"] == "BeforeAllowTraffic"
    assert world.alias() == ("1", {})


def test_hooks_get_the_event_and_succeed(world):
    result = world.engine.run(req(before_allow_traffic_hook="pre-hook", after_allow_traffic_hook="post-hook"))
    assert result["status"] == "Succeeded"
    hooks = result["hooks"]
    assert [h["lifecycle_event"] for h in hooks] == ["BeforeAllowTraffic", "AfterAllowTraffic"]
    # moto's simple backend echoes the event: it is what the hook received
    event = json.loads(hooks[0]["payload"])
    assert event["DeploymentId"] == result["deployment_id"]
    assert (event["FunctionName"], event["Alias"], event["CurrentVersion"], event["TargetVersion"]) == ("app", "live", "1", "2")
    assert event["LifecycleEvent"] == "BeforeAllowTraffic"


def test_after_hook_failure_rolls_back(world):
    from moto.awslambda_simple.models import lambda_simple_backends

    queue = lambda_simple_backends["123456789012"][REGION].lambda_simple_results_queue
    queue.extend([json.dumps({"status": "Succeeded"}), json.dumps({"Status": "FAILED", "reason": "smoke test"})])
    result = world.engine.run(req(before_allow_traffic_hook="pre-hook", after_allow_traffic_hook="post-hook"))
    assert result["status"] == "Failed" and result["rolled_back"]
    assert [s["weight"] for s in result["steps"]] == [1.0]
    assert world.alias() == ("1", {})


@pytest.mark.parametrize(
    "options,match",
    [
        ({"function_name": "nope"}, "function_name: function 'nope' not found"),
        ({"alias": "gone"}, "alias: alias 'gone' of function 'app' not found"),
        ({"target_version": "9"}, "target_version: version 9 of function 'app' does not exist"),
        ({"before_allow_traffic_hook": "missing"}, "before_allow_traffic_hook: hook function 'missing' not found"),
        ({"alarms": ["no-such-alarm"]}, "alarms: cannot read.*no-such-alarm"),
        ({"current_version": "3"}, "current_version: 3 given but alias 'live' points at version 1"),
    ],
)
def test_bad_input_touches_nothing(world, options, match):
    with pytest.raises(LambdaDeployError, match=match):
        world.engine.run(req(**options))
    assert world.alias() == ("1", {})


@pytest.mark.parametrize(
    "options,match",
    [
        ({"target_version": "$LATEST"}, r"target_version: \$LATEST cannot be a weighted"),
        ({"target_version": "1", "current_version": "1"}, "both 1"),
        ({"target_version": None}, "target_version: required unless publish"),
        ({"publish": True}, "mutually exclusive"),
        ({"deployment_config": {"type": "linear", "percentage": 0, "interval": 1}}, r"deployment_config\.percentage"),
        ({"deployment_config": "CodeDeployDefault.LambdaFast"}, "unknown deployment configuration"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"deployment_id": "d-lower"}, "deployment_id"),
        ({"function_name": None}, "function_name: required"),
    ],
)
def test_request_validation(options, match):
    with pytest.raises(LambdaDeployError, match=match):
        req(**options)


def test_existing_split_needs_take_over_or_recover(world):
    world.lam.update_alias(FunctionName="app", Name="live", FunctionVersion="1",
                           RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}})
    with pytest.raises(LambdaDeployError, match="already splits traffic.*recover: true.*take_over: true"):
        world.engine.run(req())
    assert world.alias() == ("1", {"2": 0.3})
    result = world.engine.run(req(take_over=True, target_version="3"))
    assert result["status"] == "Succeeded" and world.alias() == ("3", {})


def test_recover(world):
    world.lam.update_alias(FunctionName="app", Name="live", FunctionVersion="1",
                           RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}})
    planned = world.engine.recover("app", "live", check_mode=True)
    assert planned["changed"] and world.alias() == ("1", {"2": 0.3})
    done = world.engine.recover("app", "live")
    assert done["changed"] and world.alias() == ("1", {})
    assert world.engine.recover("app", "live")["changed"] is False
    assert world.engine.recover("app", "live", version="2")["changed"] and world.alias() == ("2", {})
    with pytest.raises(LambdaDeployError, match="version 7 of function 'app' does not exist"):
        world.engine.recover("app", "live", version="7")


def test_latest_current_refuses_gradual_but_allows_all_at_once(world):
    world.lam.update_alias(FunctionName="app", Name="live", FunctionVersion="$LATEST")
    with pytest.raises(LambdaDeployError, match=r"points at \$LATEST"):
        world.engine.run(req(deployment_config="CodeDeployDefault.LambdaCanary10Percent5Minutes"))
    assert world.engine.run(req())["status"] == "Succeeded"
    assert world.alias() == ("2", {})


def test_publish_zip_with_sha256_and_idempotence(world, tmp_path):
    data = _zip("# app v4")
    path = tmp_path / "app.zip"
    path.write_bytes(data)
    sha_hex = hashlib.sha256(data).hexdigest()
    opts = {"target_version": None, "publish": True, "code": {"zip_file": str(path), "sha256": sha_hex}}
    planned = world.engine.run(req(**opts), check_mode=True)
    assert planned["changed"] and planned["target_version"] is None
    assert world.lam.get_function_configuration(FunctionName="app")["CodeSha256"] != base64.b64encode(hashlib.sha256(data).digest()).decode()
    result = world.engine.run(req(**opts))
    assert result["status"] == "Succeeded" and result["published_version"] == "4"
    assert result["code_sha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert world.alias() == ("4", {})
    again = world.engine.run(req(**opts))
    assert again["changed"] is False
    assert world.engine.run(req(**opts), check_mode=True)["changed"] is False


def test_publish_wrong_sha256_changes_nothing(world, tmp_path):
    path = tmp_path / "app.zip"
    path.write_bytes(_zip("# app v5"))
    with pytest.raises(LambdaDeployError, match="code.sha256: the code's SHA256 is"):
        world.engine.run(req(target_version=None, publish=True, code={"zip_file": str(path), "sha256": "0" * 64}))
    assert len(world.lam.list_versions_by_function(FunctionName="app")["Versions"]) == 4  # $LATEST + 3
    assert world.alias() == ("1", {})


def test_publish_from_s3_object_version(world):
    world.s3.create_bucket(Bucket="artifacts")
    world.s3.put_bucket_versioning(Bucket="artifacts", VersioningConfiguration={"Status": "Enabled"})
    data = _zip("# from s3")
    version = world.s3.put_object(Bucket="artifacts", Key="app.zip", Body=data)["VersionId"]
    result = world.engine.run(req(target_version=None, publish=True,
                                  code={"s3_bucket": "artifacts", "s3_key": "app.zip", "s3_object_version": version}))
    assert result["status"] == "Succeeded" and result["published_version"] == "4"
    assert result["code_sha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_s3_code_that_lambda_took_differs_is_caught(world):
    # moto's UpdateFunctionCode ignores S3ObjectVersion and takes the newest object, which is what
    # a racing re-upload does to a deployment that does not pin and verify the version: the
    # SHA256 check must notice and publish nothing.
    world.s3.create_bucket(Bucket="artifacts")
    world.s3.put_bucket_versioning(Bucket="artifacts", VersioningConfiguration={"Status": "Enabled"})
    version = world.s3.put_object(Bucket="artifacts", Key="app.zip", Body=_zip("# wanted"))["VersionId"]
    world.s3.put_object(Bucket="artifacts", Key="app.zip", Body=_zip("# newer upload"))
    with pytest.raises(LambdaDeployError, match="Lambda reports CodeSha256 .* nothing was published"):
        world.engine.run(req(target_version=None, publish=True,
                             code={"s3_bucket": "artifacts", "s3_key": "app.zip", "s3_object_version": version}))
    assert len(world.lam.list_versions_by_function(FunctionName="app")["Versions"]) == 4
    assert world.alias() == ("1", {})


def test_deployment_id_format():
    import re

    ids = {new_deployment_id() for _i in range(200)}
    assert len(ids) == 200 and all(re.fullmatch(r"d-[A-Z0-9]{9}", i) for i in ids)


def test_minimal_appspec_input(world):
    spec = {
        "version": 0.0,
        "Resources": [{"app": {"Type": "AWS::Lambda::Function",
                               "Properties": {"Name": "app", "Alias": "live", "CurrentVersion": "1", "TargetVersion": "3"}}}],
        "Hooks": [{"BeforeAllowTraffic": "pre-hook"}],
    }
    request = request_from_options({"appspec": spec})
    assert (request.function_name, request.alias, request.current_version, request.target_version) == ("app", "live", "1", "3")
    assert request.before_allow_traffic_hook == "pre-hook"
    assert world.engine.run(request)["status"] == "Succeeded" and world.alias() == ("3", {})
    with pytest.raises(LambdaDeployError, match="conflicts with the appspec"):
        request_from_options({"appspec": spec, "target_version": "2"})


def test_interruption_mid_shift_puts_the_alias_back(world):
    def interrupt():
        raise KeyboardInterrupt

    world.vt.at.append((world.vt.now + 3.0, interrupt))
    with pytest.raises(KeyboardInterrupt):
        world.engine.run(req(deployment_config={"type": "linear", "percentage": 25, "interval": "2s"}))
    assert [w for _when, _version, w in world.observed] == [{"2": 0.25}, {"2": 0.5}]
    assert world.alias() == ("1", {})
    assert any(e["event"] == "rollback" and "interrupted" in e["message"] for e in world.events)


def test_heartbeat_while_waiting(world):
    world.engine.heartbeat_seconds = 30
    world.engine.run(req(deployment_config="CodeDeployDefault.LambdaCanary10Percent5Minutes"))
    beats = [e for e in world.events if e["event"] == "wait"]
    assert 8 <= len(beats) <= 10 and "waiting for step 2/2 at +300s" in beats[0]["message"]


@pytest.mark.hostile
def test_hook_payload_is_redacted_before_it_is_kept(world):
    """A hook that echoes a secret: the payload kept in the result (and so in the record) is masked."""
    from moto.awslambda_simple.models import lambda_simple_backends

    queue = lambda_simple_backends["123456789012"][REGION].lambda_simple_results_queue
    queue.append(json.dumps({"status": "Succeeded", "db_password": "hunter2", "log": "API_TOKEN=abc123 key AKIAIOSFODNN7EXAMPLE"}))
    result = world.engine.run(req(before_allow_traffic_hook="pre-hook"))
    assert result["status"] == "Succeeded"
    payload = result["hooks"][0]["payload"]
    for secret in ("hunter2", "abc123", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in payload
    assert json.loads(payload)["status"] == "Succeeded"


def test_pause_between_steps_holds_renewing_the_lock_and_resume_keeps_the_intervals(world, tmp_path):
    """Control requests on the virtual clock: a pause seen after step 2 holds (lock renewed every second),
    a resume 10 s later goes on, and the remaining steps keep their 2 s intervals."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests as cr
    from ansible_collections.rollwright.deploy.plugins.module_utils.records import DeploymentRecord, open_store

    store = open_store("sqlite", {"path": str(tmp_path / "records.sqlite3")})
    did = store.create(DeploymentRecord(application="app", deployment_group="app:live", deployment_type="lambda")).deployment_id
    store.update_status(did, "InProgress")
    beats, lines = [], []
    vt = world.vt
    world.engine.control = cr.SafePoint(store, did, cr.APPLICABLE["lambda"], heartbeat=lambda: beats.append(vt.now),
                                        progress=lines.append, clock=vt.clock, sleep=vt.sleep)
    start = vt.now
    vt.at.append((start + 2.5, lambda: cr.submit(store, did, "pause", max_pause=60)))
    vt.at.append((start + 12.5, lambda: cr.submit(store, did, "resume")))
    result = world.engine.run(req(deployment_config={"type": "linear", "percentage": 25, "interval": "2s"}))
    assert result["status"] == "Succeeded" and world.alias() == ("2", {})
    times = [t - start for t, _v, _w in world.observed]
    assert times[:2] == [0.0, 2.0] and 12.5 <= times[2] <= 14.5 and times[3] - times[2] == pytest.approx(2.0)
    assert [w for _t, _v, w in world.observed] == [{"2": 0.25}, {"2": 0.5}, {"2": 0.75}, {}]
    assert len([b for b in beats if start + 2.5 <= b <= start + 12.5]) >= 8  # renewed every second while paused
    assert [(r.action, r.state) for r in store.list_requests(did)] == [("pause", "Done"), ("resume", "Done")]
    assert any("paused" in line for line in lines) and any("resumed" in line for line in lines)


def test_promote_and_stop_requests_on_the_virtual_clock(world, tmp_path):
    from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import control_requests as cr
    from ansible_collections.rollwright.deploy.plugins.module_utils.records import DeploymentRecord, open_store

    store = open_store("sqlite", {"path": str(tmp_path / "records.sqlite3")})
    vt = world.vt
    for action, expected in (("promote", ("2", {})), ("stop", ("1", {}))):
        did = store.create(DeploymentRecord(application="app", deployment_group="app:live",
                                            deployment_type="lambda")).deployment_id
        store.update_status(did, "InProgress")
        world.engine.control = cr.SafePoint(store, did, cr.APPLICABLE["lambda"], heartbeat=lambda: None,
                                            clock=vt.clock, sleep=vt.sleep)
        world.lam.update_alias(FunctionName="app", Name="live", FunctionVersion="1", RoutingConfig={})
        vt.at.append((vt.now + 3.0, lambda d=did, a=action: cr.submit(store, d, a)))
        result = world.engine.run(req(deployment_config={"type": "linear", "percentage": 10, "interval": "2s"}))
        assert world.alias() == expected
        assert result["status"] == ("Succeeded" if action == "promote" else "Stopped")
        assert len(result["steps"]) == (3 if action == "promote" else 2), result["steps"]
        assert store.list_requests(did)[0].state == "Done"
