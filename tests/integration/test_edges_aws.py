# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one client path against the emulator: retries that retry, errors that do not, fast failure on an
unreachable endpoint; and the Lambda dry run through ``rollwright.deploy.lambda --check``.

Throttling and access-denied errors are injected by the emulator itself (tests/harness/emulator_server.py
answers the next requests of an action with an AWS error and counts every request of it), so the
requests counted are the ones botocore really sent.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.aws import client as aws_session
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import explain_aws_error
from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.harness.emulator import clear_faults, fault_requests, inject_fault

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clients(aws):
    clear_faults(aws.endpoint)
    lines: list[str] = []
    aws_session.set_retry_reporter(lines.append)
    factory = aws_session.aws_client_factory({"endpoint_url": aws.endpoint, "region": aws.region}, environ=aws.env)
    yield factory, lines
    aws_session.set_retry_reporter(None)
    clear_faults(aws.endpoint)


def test_a_throttled_call_is_retried(aws, clients):
    factory, lines = clients
    inject_fault(aws.endpoint, "DescribeLoadBalancers", code="Throttling", count=2)
    started = time.monotonic()
    found = factory.client("elbv2").describe_load_balancers()
    assert "LoadBalancers" in found
    assert fault_requests(aws.endpoint)["DescribeLoadBalancers"] == 3  # two throttled, the third answered
    assert len(lines) == 2 and all("throttled (Throttling); retrying" in line for line in lines), lines
    assert time.monotonic() - started < 15


def test_a_json_protocol_throttle_is_retried_too(aws, clients):
    factory, lines = clients
    inject_fault(aws.endpoint, "ListTables", code="ProvisionedThroughputExceededException", count=1)
    factory.client("dynamodb").list_tables()
    assert fault_requests(aws.endpoint)["ListTables"] == 2 and len(lines) == 1


def test_a_non_retryable_error_is_not_retried(aws, clients):
    factory, lines = clients
    inject_fault(aws.endpoint, "DescribeTargetGroups", code="AccessDenied", status=403, count=-1,
                 message="User: arn:aws:iam::123456789012:user/ci is not authorized to perform: "
                         "elasticloadbalancing:DescribeTargetGroups")
    with pytest.raises(Exception) as caught:
        factory.client("elbv2").describe_target_groups()
    assert fault_requests(aws.endpoint)["DescribeTargetGroups"] == 1 and lines == []
    explained = str(explain_aws_error(caught.value, "a step"))
    assert explained.startswith("a step: access denied by AWS (AccessDenied")
    assert "needs the IAM action elasticloadbalancing:DescribeTargetGroups" in explained


def test_an_unreachable_endpoint_fails_after_one_announced_retry(aws):
    lines: list[str] = []
    aws_session.set_retry_reporter(lines.append)
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            factory = aws_session.aws_client_factory({"endpoint_url": f"http://127.0.0.1:{port}", "region": aws.region},
                                                     environ=aws.env)
            started = time.monotonic()
            with pytest.raises(Exception) as caught:
                factory.client("elbv2").describe_load_balancers()
            took = time.monotonic() - started
    finally:
        aws_session.set_retry_reporter(None)
    assert type(caught.value).__name__ == "EndpointConnectionError"
    assert took < 10, took
    assert len(lines) == 1 and "endpoint unreachable" in lines[0], lines
    assert "cannot be reached" in str(explain_aws_error(caught.value))


@pytest.mark.slow
def test_a_module_retries_a_throttled_call(aws, ansible_run, tmp_path):
    """The modules' clients (RollwrightAWSModule.aws_client) retry too: deployment_record against DynamoDB."""
    clear_faults(aws.endpoint)
    inventory = tmp_path / "hosts"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")
    table = f"rw-retry-{int(time.time() * 1000)}"
    inject_fault(aws.endpoint, "DescribeTable", code="ThrottlingException", count=2)
    try:
        run = ansible_run([{"hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "lock", "rollwright.deploy.deployment_record": {
                "backend": "dynamodb", "dynamodb_table": table, "create_table": True, "state": "lock",
                "application": "retry", "deployment_group": "g", "deployment_id": "d-RETRY0001"}}]}], inventory, timeout=120)
        seen = fault_requests(aws.endpoint)["DescribeTable"]
    finally:
        clear_faults(aws.endpoint)
    assert run.rc == 0, run
    assert seen >= 3  # two throttled answers, then the call that went through (and later describes)


def test_clients_are_cached_per_process_options_and_region(aws):
    options = {"endpoint_url": aws.endpoint, "region": aws.region}
    one = aws_session.aws_client_factory(options, environ=aws.env).client("elbv2")
    two = aws_session.aws_client_factory(dict(options), environ=aws.env).client("elbv2")
    other = aws_session.aws_client_factory(dict(options, region="eu-west-3"), environ=aws.env).client("elbv2")
    assert one is two and other is not one and other.meta.region_name == "eu-west-3"
    config = one.meta.config
    assert config.retries["mode"] == "standard" and config.retries["total_max_attempts"] == aws_session.MAX_ATTEMPTS
    assert aws_session.COLLECTION_USER_AGENT in config.user_agent_extra


@pytest.mark.slow
def test_lambda_dry_run_prints_the_planned_weights_and_times(aws, ansible_run, tmp_path):
    from tests.integration.test_lambda_deploy import LambdaWorld

    world = LambdaWorld(aws)
    inventory = tmp_path / "hosts"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={ROOT / '.venv/bin/python'}\n")
    db = tmp_path / "records.sqlite3"
    invocations = len(aws.lambda_invocations())
    run = ansible_run("rollwright.deploy.lambda", inventory, timeout=120, check=True, extra_vars={
        "rollwright_lambda_function_name": world.name, "rollwright_lambda_alias": "live",
        "rollwright_lambda_target_version": "2", "rollwright_record_sqlite_path": str(db),
        "rollwright_deployment_config": {"type": "linear", "percentage": 40, "interval": "1s"},
        "rollwright_lambda_before_allow_traffic_hook": world.pre})
    assert run.rc == 0, run
    shown = run.task("rollwright.deploy.lambda_shift : Show the dry run (check mode - no version published, "
                     "no alias moved, no record, no lock, no hook)")["localhost"]["msg"]
    assert shown[0].startswith("DRY RUN - nothing was changed")
    assert f"alias {world.name}:live from version 1 to 2" in shown[1]
    assert "at +0 s: 40% on version 2, 60% on version 1" in shown
    assert "at +1 s: 80% on version 2, 20% on version 1" in shown
    assert "at +2 s: promote - 100% on version 2" in shown
    assert world.alias() == ("1", {})  # nothing moved
    assert len(aws.lambda_invocations()) == invocations  # no hook ran
    assert not db.exists() or open_store("sqlite", {"path": str(db)}).list(world.name, limit=5) == []
