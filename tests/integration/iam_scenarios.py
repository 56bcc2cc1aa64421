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

from ansible_collections.rollwright.deploy.plugins.module_utils.aws.iam_policy import PolicyInputs, render_policy
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


@pytest.fixture(scope="module")
def enforced(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The module's own IAM-enforcing emulator (import this fixture into the test module)."""
    aws, stop = enforced_emulator(tmp_path_factory.mktemp("iam-emulator"))
    try:
        yield aws
    finally:
        stop()


@pytest.fixture(scope="module")
def bluegreen_world(enforced: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:  # pylint: disable=redefined-outer-name
    """A world without hosts on the module's enforcing emulator: its instances become hosts as EC2 launches them."""
    needs_root()
    from tests.harness.world import down, up

    world = up(tmp_path_factory.mktemp("iam-bg-world"), 0, emulator_handle=enforced.handle.to_json(), region=enforced.region)
    world.start_ec2_sync()
    try:
        yield world
    finally:
        world.stop_ec2_sync()
        down(world.dir)


def needs_root() -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")


def without(policies: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    """The policies minus one action (a policy left empty is dropped: IAM refuses an empty one)."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.aws.iam_policy import without_action

    return [p for p in (without_action(p, action) for p in policies) if p["Statement"]]


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

    def revision(self, version: str, pinned: bool = True) -> str:
        """A new S3 object version of the bundle: the controller has not cached it, so S3 is read. Pinned by
        its versionId (s3:GetObjectVersion), or not (the latest version: s3:GetObject)."""
        path = self.bundles[version]
        put = self.aws.client("s3").put_object(Bucket=self.bucket, Key=f"app/{path.name}", Body=path.read_bytes())
        return f"s3://{self.bucket}/app/{path.name}" + (f"?versionId={put['VersionId']}" if pinned else "")

    def policies(self) -> list[dict[str, Any]]:
        inputs = dict(account_id=ACCOUNT, region=self.aws.region, revision_bucket=self.bucket, revision_key_prefix="app/",
                      target_group_arns=[self.tg], classic_elb_names=[self.clb], alarm_names=[self.alarm], table=self.table)
        return [render_policy("inplace", PolicyInputs(**inputs)), render_policy("records", PolicyInputs(**inputs))]

    def deploy(self, env: dict[str, str], version: str = "v2", pinned: bool = True, **extra: Any) -> AnsibleResult:
        extra_vars = {
            "rollwright_hosts": "fleet", "rollwright_application": self.name, "rollwright_deployment_group": "g",
            "rollwright_revision": self.revision(version, pinned), "rollwright_deployment_config": "CodeDeployDefault.OneAtATime",
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
        return self.policies_for(self.aws, self.fn.name, self.fn.pre, self.fn.post, self.bucket, self.fn.alarm, self.table)

    @staticmethod
    def policies_for(aws: AWS, function: str, pre: str, post: str, bucket: str, alarm: str, table: str) -> list[dict[str, Any]]:
        inputs = PolicyInputs(account_id=ACCOUNT, region=aws.region, function_names=[function], hook_function_names=[pre, post],
                              code_bucket=bucket, code_key_prefix="fn/", alarm_names=[alarm], table=table)
        return [render_policy("lambda", inputs), render_policy("records", inputs)]

    def deploy(self, env: dict[str, str], pinned: bool = True) -> AnsibleResult:
        """Shift the alias from version 1 (put back first, as the administrator) to the published new code
        (the S3 object pinned by its version, or not: its latest version)."""
        self.aws.client("lambda").update_alias(FunctionName=self.fn.name, Name="live", FunctionVersion="1",
                                               RoutingConfig={"AdditionalVersionWeights": {}})
        self.aws.queue_lambda_results([self.OK, self.OK])
        extra_vars = {
            "rollwright_lambda_function_name": self.fn.name, "rollwright_lambda_alias": "live",
            "rollwright_lambda_publish": True, "rollwright_lambda_s3_bucket": self.bucket,
            "rollwright_lambda_s3_key": "fn/code.zip", "rollwright_lambda_s3_object_version": self.code_version if pinned else "",
            "rollwright_deployment_config": {"type": "linear", "percentage": 50, "interval": "1s"},
            "rollwright_lambda_before_allow_traffic_hook": self.fn.pre, "rollwright_lambda_after_allow_traffic_hook": self.fn.post,
            "rollwright_auto_rollback_alarms": [self.fn.alarm], "rollwright_lambda_poll_interval": 0.5,
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
        self.instance_role = self._instance_profile_template()
        self.blue_asg = self.env.blue_asg()
        self.green_tg = H.create_target_group(world, [], name=f"{name}-green", wait=False)
        self.alb = _alb(self.env, self.env.tg)
        self.bundle = build_bundle("v2", work / "bundles")

    def _instance_profile_template(self) -> str:
        """The original group's launch template gives its instances a role (an instance profile): copying
        the group passes that role to EC2, so the policy needs iam:PassRole on it. Returns the role ARN."""
        from tests.integration.test_bluegreen_ec2 import AMI

        iam = self.aws.client("iam")
        role = iam.create_role(RoleName=f"{self.name}-app", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                    "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
        profile = iam.create_instance_profile(InstanceProfileName=f"{self.name}-app")["InstanceProfile"]
        iam.add_role_to_instance_profile(InstanceProfileName=f"{self.name}-app", RoleName=f"{self.name}-app")
        self.env.template = self.env.ec2.create_launch_template(
            LaunchTemplateName=H.unique(f"lt-{self.name}-role"),
            LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro", "IamInstanceProfile": {"Arn": profile["Arn"]}},
        )["LaunchTemplate"]["LaunchTemplateName"]
        return role

    def policies(self) -> list[dict[str, Any]]:
        inputs = PolicyInputs(account_id=ACCOUNT, region=self.aws.region, target_group_arns=[self.env.tg, self.green_tg],
                              listener_arns=[self.alb["listener"]], auto_scaling_group_names=[self.blue_asg],
                              instance_role_arns=[self.instance_role])
        return [render_policy("bluegreen", inputs)]

    def serving_whole(self, count: int) -> bool:
        """The listener's target group has `count` targets, all healthy: a fleet serves, whole."""
        states = self.env.members(self.serving_target_group())
        return len(states) == count and all(state == "healthy" for state in states.values())

    def deploy(self, env: dict[str, str]) -> AnsibleResult:
        self.user_env = env
        return self.env.run(self.bundle, rollwright_target_group_arns=f"{self.env.tg},{self.green_tg}",
                            bluegreen_ec2_copy_auto_scaling_group=self.blue_asg, bluegreen_ec2_reroute_mode="listener",
                            bluegreen_ec2_listener_arn=self.alb["listener"], bluegreen_ec2_original_action="terminate",
                            rollwright_deployment_config="CodeDeployDefault.AllAtOnce")

    def serving_target_group(self) -> str:
        listener = self.env.elbv2.describe_listeners(ListenerArns=[self.alb["listener"]])["Listeners"][0]
        return listener["DefaultActions"][0]["TargetGroupArn"]


class EventsScenario:
    """What event-driven deployments call besides the deployment they trigger, on localhost: a launching
    hook set up (notifying a queue, with a role Auto Scaling publishes with) and removed, a held instance
    completed, the pending uploads listed from S3 and the records, and the ``s3_revisions`` source reading
    an upload's notification from SQS (and deleting it)."""

    kind = "events"

    def __init__(self, aws: AWS, work: Path, name: str):
        from tests.integration.test_emulator_events import Group, _queue

        self.aws, self.work, self.name = aws, work, name
        self.table, self.bucket = records_table_and_bucket(aws, name, "uploads")
        self.queue_url, self.queue_arn = _queue(aws)
        aws.client("s3").put_bucket_notification_configuration(Bucket=self.bucket, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": self.queue_arn, "Events": ["s3:ObjectCreated:*"],
                                     "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "app/"}]}}}]})
        self.group = Group(aws)
        self.group.asg.delete_lifecycle_hook(AutoScalingGroupName=self.group.name, LifecycleHookName="hold")
        self.hook_queue_url, self.hook_queue_arn = _queue(aws)
        self.hook_role = aws.client("iam").create_role(RoleName=f"{name}-hook", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "autoscaling.amazonaws.com"},
                                                    "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
        self.inventory = work / "hosts"
        self.inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")
        for queue in (self.queue_url, self.hook_queue_url):  # the test messages AWS sends when set up
            drain_queue(aws, queue)

    def policies(self) -> list[dict[str, Any]]:
        inputs = PolicyInputs(account_id=ACCOUNT, region=self.aws.region, revision_bucket=self.bucket, revision_key_prefix="app/",
                              queue_arns=[self.queue_arn], auto_scaling_group_names=[self.group.name],
                              hook_role_arns=[self.hook_role], table=self.table)
        return [render_policy("events", inputs), render_policy("records", inputs)]

    def hook_hold_complete_list_unhook(self, env: dict[str, str]) -> AnsibleResult:
        """One play as the user: set the launching hook up (notifying a queue, with the role Auto Scaling
        publishes with: iam:PassRole); a scale-out (by the harness, as AWS would by itself) is held by
        it; complete the held instance (CONTINUE); list the pending uploads; remove the hook."""
        hook = {"group": self.group.name, "name": "rollwright-deploy"}
        return self._play(
            env,
            {"name": "hook", "rollwright.deploy.asg_lifecycle_hook": dict(
                hook, state="present", notification_target_arn=self.hook_queue_arn, role_arn=self.hook_role)},
            {"name": "scale out", "command": {"argv": [str(ROOT / ".venv/bin/python"), "-c", _SCALE_OUT, self.group.name]},
             "environment": dict(self.aws.env), "register": "held", "changed_when": True},
            {"name": "complete", "rollwright.deploy.asg_lifecycle_action": {
                "group": self.group.name, "hook": "rollwright-deploy", "result": "CONTINUE", "instance_id": "{{ held.stdout }}"}},
            {"name": "pending", "rollwright.deploy.pending_revision_info": {
                "backend": "dynamodb", "dynamodb_table": self.table, "application": self.name, "deployment_group": "g",
                "bucket": self.bucket, "prefix": "app/"}},
            {"name": "unhook", "rollwright.deploy.asg_lifecycle_hook": dict(hook, state="absent")})

    def _play(self, env: dict[str, str], *tasks: dict[str, Any]) -> AnsibleResult:
        return run_playbook([{"hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}], self.inventory,
                            aws_env=env, timeout=120)

    def run_source(self, env: dict[str, str], done: Callable[[list[dict[str, Any]], str], bool],
                   timeout: float = 60) -> list[dict[str, Any]]:
        """Run the s3_revisions source (SQS mode, as ansible-rulebook runs it) as the user until
        ``done(events, log)``; the events it emitted (its log in ``source_output``)."""
        import subprocess

        from tests.harness.ansible_run import ansible_env

        args = {"bucket": self.bucket, "prefix": "app/", "queue_url": self.queue_url, "interval": 1,
                "application": self.name, "deployment_group": "g", "record_backend": "dynamodb",
                "record_dynamodb_table": self.table}
        out, log = self.work / "events.jsonl", self.work / "source.log"
        with open(out, "w") as stdout, open(log, "w") as stderr:
            proc = subprocess.Popen([str(ROOT / ".venv/bin/python"), "-c", _RUN_SOURCE, json.dumps(args)],  # pylint: disable=consider-using-with
                                    cwd=ROOT, env=ansible_env(env, None), stdout=stdout, stderr=stderr)

        def events() -> list[dict[str, Any]]:
            return [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]

        try:
            H.wait_until(lambda: done(events(), log.read_text()) or proc.poll() is not None, timeout=timeout,
                         interval=0.2, what="the event source")
        finally:
            proc.kill()
            proc.wait(10)
        self.source_output = out.read_text() + log.read_text()
        return events()

    def queue_empty(self) -> bool:
        """No message left in the notification queue, in flight or not (the administrator's view)."""
        attributes = self.aws.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        return all(value == "0" for value in attributes["Attributes"].values())

    def upload(self) -> str:
        return self.aws.client("s3").put_object(Bucket=self.bucket, Key="app/v9.zip", Body=b"bundle")["VersionId"]

    def instance_states(self) -> dict[str, str]:
        return self.group.states()


def drain_queue(aws: AWS, url: str) -> list[dict[str, Any]]:
    from tests.integration.test_emulator_events import _drain

    return _drain(aws, url)


# The harness scales the group out by one (its own key, in the task's environment) and prints the held instance.
_SCALE_OUT = """
import sys, boto3
asg = boto3.client("autoscaling")
asg.set_desired_capacity(AutoScalingGroupName=sys.argv[1], DesiredCapacity=1)
group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[sys.argv[1]])["AutoScalingGroups"][0]
print(*[i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "Pending:Wait"])
"""
# The event source as ansible-rulebook runs it: each event queued is printed (one JSON a line) at once.
_RUN_SOURCE = """
import asyncio, importlib.util, json, logging, sys
logging.basicConfig(level=logging.WARNING)
spec = importlib.util.spec_from_file_location(
    "s3_revisions", "build/ansible_collections/rollwright/deploy/extensions/eda/plugins/event_source/s3_revisions.py")
source = importlib.util.module_from_spec(spec)
spec.loader.exec_module(source)

class Printed(asyncio.Queue):
    async def put(self, item):
        print(json.dumps(item), flush=True)

asyncio.run(source.main(Printed(), json.loads(sys.argv[1])))
"""
