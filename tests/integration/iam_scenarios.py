# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deployments run as an IAM user holding exactly a rendered policy, on an emulator enforcing IAM.

Used by tests/integration/test_iam_enforced.py (each scenario with its full policy, and a few
one-action-removed runs) and by the full matrix (tests/iam_matrix, ``make iam-matrix``).

Enforcement is global to a moto server, so the scenarios run on an emulator of their own
(:func:`enforced_emulator`), never the session's. The harness's own key stays the account's
administrator there (tests/harness/_moto_iam.py): it sets the world up and checks the outcome.
"""

from __future__ import annotations

import itertools
import json
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.iam_policy import PolicyInputs, render_policy
from ansible_collections.rollwright.deploy.plugins.module_utils.records.dynamodb import table_definition
from tests.conftest import AWS
from tests.harness import emulator as emu
from tests.harness.ansible_run import AnsibleResult, run_playbook
from tests.integration import inplace_helpers as H
from tests.integration.test_rollback_recover import bundle as rollback_bundle
from tests.bundles import build_bundle

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
_users = itertools.count()


def enable_enforcement(endpoint: str) -> None:
    req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "ok"


def enforced_emulator(state_dir: Path) -> tuple[AWS, Callable[[], None]]:
    handle = emu.start_emulator(state_dir)
    enable_enforcement(handle.endpoint)
    return AWS(handle.endpoint, emu.REGION, emu.aws_env(handle.endpoint), handle), lambda: emu.stop_emulator(handle)


def user_env(aws: AWS, *policies: dict[str, Any]) -> dict[str, str]:
    """A new IAM user holding exactly these policies (inline); the AWS env of its keys."""
    iam = aws.client("iam")
    name = f"deployer-{next(_users)}"
    iam.create_user(UserName=name)
    for i, policy in enumerate(policies):
        iam.put_user_policy(UserName=name, PolicyName=f"p{i}", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return dict(aws.env, AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])


def output(result: AnsibleResult) -> str:
    return result.stdout + result.stderr


def failures(result: AnsibleResult) -> list[str]:
    """The messages of every failed task result (ignored ones included), in order."""
    return [f"{task['name']}: {host_result.get('msg')}" for task in result.tasks()
            for host_result in task["hosts"].values() if isinstance(host_result, dict) and host_result.get("failed")]


def records_table_and_bucket(aws: AWS, name: str, bucket_suffix: str) -> tuple[str, str]:
    """A records table and a versioned bucket of the scenario (made by the administrator)."""
    table, bucket = f"{name}-records", f"{name}-{bucket_suffix}"
    aws.client("dynamodb").create_table(**table_definition(table))
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return table, bucket


class InplaceScenario:
    """Two hosts behind a target group and a classic ELB; revision in a versioned S3 bucket; an alarm;
    automatic rollback on failure and on alarm; records in DynamoDB."""

    kind = "inplace"

    def __init__(self, aws: AWS, world: Any, work: Path, name: str):
        self.aws, self.world, self.work, self.name = aws, world, work, name
        ids = [h.instance_id for h in world.hosts]
        self.tg = H.create_target_group(world, ids, port=H.APP_PORT, name=f"{name}-tg")
        self.clb = H.create_classic_elb(world, ids, name=f"{name}-clb")
        self.alarm = f"{name}-5xx"
        aws.client("cloudwatch").put_metric_alarm(
            AlarmName=self.alarm, MetricName="HTTPCode_Target_5XX_Count", Namespace="AWS/ApplicationELB", Statistic="Sum",
            Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
        self.table, self.bucket = records_table_and_bucket(aws, name, "releases")
        # v2 fails ValidateService on a host with /srv/fail-validate, v1 never (so a rollback succeeds)
        self.bundles = {v: rollback_bundle(v, work / "bundles", fail_on_marker=v == "v2") for v in ("v1", "v2")}

    def revision(self, version: str) -> str:
        """A new S3 object version of the bundle: the controller has not cached it, so S3 is read."""
        path = self.bundles[version]
        put = self.aws.client("s3").put_object(Bucket=self.bucket, Key=f"app/{path.name}", Body=path.read_bytes())
        return f"s3://{self.bucket}/app/{path.name}?versionId={put['VersionId']}"

    def policies(self) -> list[dict[str, Any]]:
        inputs = dict(account_id=ACCOUNT, region=self.aws.region, revision_bucket=self.bucket, revision_key_prefix="app/",
                      target_group_arns=[self.tg], classic_elb_names=[self.clb], alarm_names=[self.alarm], table=self.table)
        return [render_policy("inplace", PolicyInputs(**inputs)), render_policy("records", PolicyInputs(**inputs))]

    def deploy(self, env: dict[str, str], version: str = "v2", **extra: Any) -> AnsibleResult:
        extra_vars = {
            "rollwright_hosts": "fleet", "rollwright_application": self.name, "rollwright_deployment_group": "g",
            "rollwright_revision": self.revision(version), "rollwright_deployment_config": "CodeDeployDefault.OneAtATime",
            "rollwright_target_group_arns": self.tg, "rollwright_classic_elb_names": self.clb,
            "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30,
            "rollwright_record_backend": "dynamodb", "rollwright_record_dynamodb_table": self.table,
            "rollwright_auto_rollback": {"on_failure": True, "on_alarm": True, "alarms": [self.alarm]},
            **extra,
        }
        return run_playbook(str(ROOT / "playbooks" / "inplace.yml"), self.world.inventory, extra_vars=extra_vars,
                            aws_env=env, control_path_dir=str(self.world.control_path_dir), timeout=240)

    def deploy_killed_mid_batch(self, env: dict[str, str]) -> None:
        """Start a deployment and kill -9 its ansible-playbook once a host is out of a load balancer."""
        import os
        import signal
        import subprocess

        from tests.harness.ansible_run import VENV_BIN, ansible_env

        vars_file = self.work / "killed-vars.json"
        vars_file.write_text(json.dumps({
            "rollwright_hosts": "fleet", "rollwright_application": self.name, "rollwright_deployment_group": "g",
            "rollwright_revision": self.revision("v2"), "rollwright_deployment_config": "CodeDeployDefault.OneAtATime",
            "rollwright_target_group_arns": self.tg, "rollwright_classic_elb_names": self.clb,
            "rollwright_file_exists_behavior": "OVERWRITE", "rollwright_record_backend": "dynamodb",
            "rollwright_record_dynamodb_table": self.table}))
        log = open(self.work / "killed.log", "w")  # pylint: disable=consider-using-with
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(self.world.inventory),
                                 str(ROOT / "playbooks" / "inplace.yml"), "-e", f"@{vars_file}"],
                                env=ansible_env(env, str(self.world.control_path_dir)), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            H.wait_until(self.out_of_service, timeout=120, interval=0.05, what="a host out of its load balancers")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            log.close()

    def recover(self, env: dict[str, str]) -> AnsibleResult:
        extra_vars = {"rollwright_application": self.name, "rollwright_deployment_group": "g", "rollwright_force_recover": True,
                      "rollwright_record_backend": "dynamodb", "rollwright_record_dynamodb_table": self.table,
                      "rollwright_healthy_timeout": 30}
        return run_playbook(str(ROOT / "playbooks" / "recover.yml"), self.world.inventory, extra_vars=extra_vars,
                            aws_env=env, control_path_dir=str(self.world.control_path_dir), timeout=120)

    def out_of_service(self) -> list[str]:
        """Hosts not healthy in the target group or not InService in the classic ELB (admin's view)."""
        tg = H.tg_states(self.world, self.tg)
        clb = H.clb_states(self.world, self.clb)
        bad = []
        for h in self.world.hosts:
            if tg.get((h.instance_id, H.APP_PORT)) not in ("healthy", "initial"):
                bad.append(f"{h.name} in {self.tg}: {tg.get((h.instance_id, H.APP_PORT), 'not registered')}")
            if clb.get(h.instance_id) != "InService":
                bad.append(f"{h.name} in {self.clb}: {clb.get(h.instance_id, 'not registered')}")
        return bad

    def records(self) -> list[Any]:
        from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

        store = open_store("dynamodb", {"table": self.table}, client_factory=self.aws.client)
        return [store.get(r.deployment_id) for r in store.list(self.name, "g", limit=20)]


def inplace_world(tmp_path_factory: pytest.TempPathFactory, aws: AWS, hosts: int = 2) -> Any:
    from tests.harness.world import up

    return up(tmp_path_factory.mktemp("iam-world"), hosts, emulator_handle=aws.handle.to_json(), region=aws.region)


class LambdaScenario:
    """A function with an alias on version 1; new code from a versioned S3 object, published and shifted
    (linear, 1 s steps) with BeforeAllowTraffic / AfterAllowTraffic hooks and an alarm; DynamoDB records."""

    kind = "lambda"
    OK = {"payload": json.dumps({"status": "Succeeded"}), "function_error": None}

    def __init__(self, aws: AWS, work: Path, name: str):
        from tests.integration.test_lambda_deploy import LambdaWorld, _zip

        self.aws, self.work, self.name = aws, work, name
        self.fn = LambdaWorld(aws, versions=1)
        self.table, self.bucket = records_table_and_bucket(aws, name, "code")
        self.code_version = aws.client("s3").put_object(Bucket=self.bucket, Key="fn/code.zip", Body=_zip(f"# {name} v2"))["VersionId"]
        self.inventory = work / "hosts"
        self.inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")

    def policies(self) -> list[dict[str, Any]]:
        inputs = PolicyInputs(account_id=ACCOUNT, region=self.aws.region, function_names=[self.fn.name],
                              hook_function_names=[self.fn.pre, self.fn.post], code_bucket=self.bucket, code_key_prefix="fn/",
                              alarm_names=[self.fn.alarm], table=self.table)
        return [render_policy("lambda", inputs), render_policy("records", inputs)]

    def deploy(self, env: dict[str, str]) -> AnsibleResult:
        """Shift the alias from version 1 (put back first, as the administrator) to the published new code."""
        self.aws.client("lambda").update_alias(FunctionName=self.fn.name, Name="live", FunctionVersion="1",
                                               RoutingConfig={"AdditionalVersionWeights": {}})
        self.aws.queue_lambda_results([self.OK, self.OK])
        extra_vars = {
            "rollwright_lambda_function_name": self.fn.name, "rollwright_lambda_alias": "live",
            "rollwright_lambda_publish": True, "rollwright_lambda_s3_bucket": self.bucket,
            "rollwright_lambda_s3_key": "fn/code.zip", "rollwright_lambda_s3_object_version": self.code_version,
            "rollwright_lambda_deployment_config": {"type": "linear", "percentage": 50, "interval": "1s"},
            "rollwright_lambda_before_allow_traffic_hook": self.fn.pre, "rollwright_lambda_after_allow_traffic_hook": self.fn.post,
            "rollwright_lambda_alarms": [self.fn.alarm], "rollwright_lambda_poll_interval": 0.5,
            "rollwright_record_backend": "dynamodb", "rollwright_record_dynamodb_table": self.table,
        }
        result = run_playbook("rollwright.deploy.lambda", self.inventory, extra_vars=extra_vars, aws_env=env, timeout=120)
        return result

    def alias(self) -> tuple[str, dict[str, float]]:
        return self.fn.alias()


class BlueGreenScenario:
    """Copy of a 3-instance Auto Scaling group behind an ALB listener; the listener is rerouted to the
    replacement target group and the original group scaled to zero (tests/integration/test_bluegreen_ec2.py's
    fleet, on this emulator)."""

    kind = "bluegreen"

    def __init__(self, aws: AWS, world: Any, work: Path, name: str):
        from tests.integration.test_bluegreen_ec2 import Env, _alb

        self.aws, self.world, self.work, self.name = aws, world, work, name
        self.user_env: dict[str, str] = {}

        def ansible_run(playbook: Any, inventory: Any, extra_vars: Any = None, timeout: float = 240, env: Any = None) -> AnsibleResult:
            return run_playbook(playbook, inventory, extra_vars=extra_vars, env=env, aws_env=self.user_env,
                                control_path_dir=str(world.control_path_dir), timeout=timeout)

        self.env = Env(world, ansible_run, work, name)
        self.blue_asg = self.env.blue_asg()
        self.green_tg = H.create_target_group(world, [], name=f"{name}-green", wait=False)
        self.alb = _alb(self.env, self.env.tg)
        self.bundle = build_bundle("v2", work / "bundles")

    def policies(self) -> list[dict[str, Any]]:
        inputs = PolicyInputs(account_id=ACCOUNT, region=self.aws.region, target_group_arns=[self.env.tg, self.green_tg],
                              listener_arns=[self.alb["listener"]], auto_scaling_group_names=[self.blue_asg])
        return [render_policy("bluegreen", inputs)]

    def deploy(self, env: dict[str, str]) -> AnsibleResult:
        self.user_env = env
        return self.env.run(self.bundle, rollwright_target_group_arns=f"{self.env.tg},{self.green_tg}",
                            bluegreen_ec2_copy_auto_scaling_group=self.blue_asg, bluegreen_ec2_reroute_mode="listener",
                            bluegreen_ec2_listener_arn=self.alb["listener"], bluegreen_ec2_original_action="terminate",
                            rollwright_deployment_config="CodeDeployDefault.AllAtOnce")

    def serving_target_group(self) -> str:
        listener = self.env.elbv2.describe_listeners(ListenerArns=[self.alb["listener"]])["Listeners"][0]
        return listener["DefaultActions"][0]["TargetGroupArn"]
