# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11 (trust at the edges) for in-place deployments, through the collection's playbooks.

One 3-host world on the session's emulator. Each test has its own application, target group and
SQLite record file. What a dry run leaves alone is measured from outside rollwright: target health
sampled every 100 ms, a listing of every file (path, size, mtime, mode) under the app and state
directories and the hooks' own event log on each host (through nsenter), and the record history.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store
from tests.harness.emulator import clear_faults, inject_fault
from tests.integration import inplace_helpers as H
from tests.integration.test_inplace import bundles  # noqa: F401  # pylint: disable=unused-import  # the v1/v2 bundles fixture

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

INPLACE = "rollwright.deploy.inplace"
ROLLBACK = "rollwright.deploy.rollback"
RECOVER = "rollwright.deploy.recover"
N_HOSTS = 3
SNAPSHOT = ("find /opt/app /var/lib/rollwright -printf '%p %s %T@ %m\\n' 2>/dev/null | sort; "
            "echo EVENTS; cat /var/log/rollwright/events.log 2>/dev/null")


@pytest.fixture(scope="module")
def world(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with H.fleet_world(aws, tmp_path_factory, N_HOSTS, "edges-world") as made:
        yield made


class Runner:
    def __init__(self, world: Any, aws: Any, ansible_run: Any, state_dir: Path, app: str) -> None:
        self.world, self.aws, self.ansible_run, self.state_dir, self.app = world, aws, ansible_run, state_dir, app
        self.hosts = [h.name for h in world.hosts]

    def vars(self, **extra: Any) -> dict[str, Any]:
        return {"rollwright_hosts": ":".join(self.hosts), "rollwright_application": self.app,
                "rollwright_deployment_group": "g", "rollwright_file_exists_behavior": "OVERWRITE",
                "rollwright_healthy_timeout": 30, **extra}

    def run(self, playbook: str = INPLACE, extra_vars: Any = None, env: Any = None, **kwargs: Any) -> Any:
        return self.ansible_run(playbook, self.world.inventory, extra_vars=self.vars(**(extra_vars or {})) if extra_vars
                                is not False else None, env={"XDG_STATE_HOME": str(self.state_dir), **(env or {})},
                                **kwargs)

    def store(self) -> Any:
        return open_store("sqlite", {"path": str(self.state_dir / "rollwright" / "deployments.sqlite3")})

    def history(self) -> list[dict]:
        path = self.state_dir / "rollwright" / "deployments.sqlite3"
        if not path.exists():
            return []
        return [self.store().get(r.deployment_id).to_dict() for r in self.store().list(self.app, limit=50)]

    def snapshot(self) -> dict[str, str]:
        return {n: self.world.fleet.exec(n, ["sh", "-c", SNAPSHOT], check=False).stdout for n in self.hosts}

    def ids(self) -> list[str]:
        return [h.instance_id for h in self.world.hosts]


@pytest.fixture
def runner(world: Any, aws: Any, ansible_run: Any, tmp_path: Path, request: Any) -> Runner:
    for h in world.hosts:
        if not world.fleet.sshd_pids(h.name):
            world.fleet.start_sshd(h.name)
    H.reset_hosts(world)
    clear_faults(aws.endpoint)
    app = "edge-" + request.node.name.split("[")[0].replace("test_", "")[:18].replace("_", "-")
    return Runner(world, aws, ansible_run, tmp_path, app)


def messages(result: Any) -> list[str]:
    return [str(res.get("msg")) for task in result.tasks() for res in task["hosts"].values()
            if isinstance(res, dict) and res.get("failed")]


def output(result: Any) -> str:
    """Everything a person reads: progress lines and the task results (summary lines included)."""
    lines = [result.stdout]
    for task in result.tasks():
        for res in task["hosts"].values():
            if isinstance(res, dict) and isinstance(res.get("msg"), list):
                lines += [str(m) for m in res["msg"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# the dry run
# ----------------------------------------------------------------------------------------------

def test_dry_run_changes_nothing_and_lists_every_batch(runner: Runner, bundles: dict) -> None:
    r = runner
    arn = H.create_target_group(r.world, r.ids())
    first = r.run(extra_vars={"rollwright_revision": str(bundles["v1"]), "rollwright_target_group_arns": arn})
    assert first.rc == 0, first
    before_history, before_files = r.history(), r.snapshot()
    assert len(before_history) == 1 and all("ApplicationStart" in f for f in before_files.values())

    with H.HealthMonitor(r.world, target_group_arn=arn, interval=0.1) as mon:
        dry = r.run(extra_vars={"rollwright_revision": str(bundles["v2"]), "rollwright_target_group_arns": arn,
                                "rollwright_deployment_config": "CodeDeployDefault.OneAtATime"},
                    check=True, extra_args=["--diff"])
    assert dry.rc == 0, dry
    # no target ever left healthy while --check ran
    assert not mon.errors and len(mon.samples) >= 10, (mon.errors, len(mon.samples))
    assert mon.minimum == N_HOSTS, mon.samples
    # no hook ran, no file changed on any host, the history is the same (no record, no lock)
    assert r.snapshot() == before_files
    assert r.history() == before_history
    assert r.store().get_lock(r.app, "g") is None
    text = output(dry)
    assert "DRY RUN - nothing was changed" in text
    for number, host in enumerate(r.hosts, 1):  # OneAtATime: one batch per host, in order
        assert f"batch {number}: {host}" in text, text
    assert f"BlockTraffic: deregister {r.ids()[0]} from target group {arn}" in text
    previous = before_history[0]["deployment_id"]
    assert f"ApplicationStop: scripts/record_event.sh (of {previous}), scripts/stop_server.sh (of {previous})" in text
    assert "on failure: the deployment stops" in text
    # every host reported its own events, read on the host
    for host in r.hosts:
        assert f"  {host}:" in text


def test_dry_run_diff_lists_each_hosts_file_changes(runner: Runner, bundles: dict) -> None:
    """--diff: the files the install would create, overwrite or remove, as each host's host_lifecycle plan says."""
    r = runner
    first = r.run(extra_vars={"rollwright_revision": str(bundles["v1"]), "rollwright_hosts": r.hosts[0]})
    assert first.rc == 0, first
    files = r.snapshot()
    dry = r.run(extra_vars={"rollwright_revision": str(bundles["v2"]), "rollwright_hosts": r.hosts[0]},
                check=True, extra_args=["--diff"])
    assert dry.rc == 0, dry
    text = output(dry)  # the start step asked the host itself, in check mode
    assert any(line.strip().split(" ", 1)[0] in ("create", "overwrite") and "/opt/app/sample/index.html" in line
               for line in text.splitlines()), text
    assert r.snapshot() == files


def test_rollback_dry_run_says_what_it_would_restore(runner: Runner, bundles: dict) -> None:
    r = runner
    arn = H.create_target_group(r.world, r.ids())
    for version in ("v1", "v2"):
        res = r.run(extra_vars={"rollwright_revision": str(bundles[version]), "rollwright_target_group_arns": arn})
        assert res.rc == 0, res
    history, files = r.history(), r.snapshot()
    dry = r.run(ROLLBACK, extra_vars={"rollwright_target_group_arns": arn}, check=True)
    assert dry.rc == 0, dry
    text = output(dry)
    v1, v2 = sorted(history, key=lambda d: d["start_time"])
    assert f"rolls back {v2['deployment_id']} to the revision of {v1['deployment_id']}" in text, text
    assert r.history() == history and r.snapshot() == files
    assert {H.served(h.address) for h in r.world.hosts} == {"sample-app v2"}


def test_recover_dry_run_restores_nothing(runner: Runner, tmp_path: Path) -> None:
    """A controller killed while host1 is out of its target group; recover --check only says what it would do."""
    from tests.harness.ansible_run import ROOT, VENV_BIN, ansible_env
    from tests.integration.test_rollback_recover import bundle as make_bundle

    r = runner
    arn = H.create_target_group(r.world, r.ids())
    slow = make_bundle("v3", tmp_path / "bundles", slow=True)  # BeforeInstall sleeps 4 s: host1 stays out meanwhile
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(r.vars(rollwright_revision=str(slow), rollwright_target_group_arns=arn)))
    env = ansible_env(r.aws.env, extra={"XDG_STATE_HOME": str(r.state_dir)})
    with open(tmp_path / "run.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", str(r.world.inventory),
                                 str(ROOT / "playbooks" / "inplace.yml"), "-e", f"@{vars_file}"], cwd=str(ROOT), env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            H.wait_until(lambda: r.ids()[0] not in {i for (i, _p) in H.tg_states(r.world, arn)}, 60,
                         what="host1 out of its target group")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    (record,) = r.history()
    dry = r.run(RECOVER, extra_vars={"rollwright_force_recover": True}, check=True)
    assert dry.rc == 0, dry
    message = dry.task("Show what was recovered")["localhost"]["msg"]
    assert message.startswith(f"DRY RUN - {record['deployment_id']}"), message
    assert f"would restore {r.hosts[0]} into 1 recorded membership(s)" in message, message
    assert r.ids()[0] not in {i for (i, _p) in H.tg_states(r.world, arn)}  # still out: nothing was done
    assert r.history()[0]["status"] == record["status"] or r.history()[0]["status"] == "Stopped"  # the keeper may stop it
    real = r.run(RECOVER, extra_vars={"rollwright_force_recover": True})
    assert real.rc == 0, real
    assert r.ids()[0] in {i for (i, _p) in H.tg_states(r.world, arn)}


# ----------------------------------------------------------------------------------------------
# refused inputs and safe defaults
# ----------------------------------------------------------------------------------------------

def test_misspelt_variable_is_refused_with_the_closest_name(runner: Runner, bundles: dict) -> None:
    r = runner
    arn = H.create_target_group(r.world, r.ids())
    files = r.snapshot()
    res = r.run(extra_vars={"rollwright_revision": str(bundles["v1"]), "rollwright_target_group_arn": arn,
                            "rollwright_deployment_cofnig": "CodeDeployDefault.AllAtOnce"})
    assert res.rc != 0
    (msg,) = messages(res)
    assert "rollwright_target_group_arn (did you mean rollwright_target_group_arns?)" in msg, msg
    assert "rollwright_deployment_cofnig (did you mean rollwright_deployment_config?)" in msg, msg
    assert r.history() == [] and r.snapshot() == files
    assert not res.stats.get(r.hosts[0])  # refused before any play on the hosts


def test_playbooks_have_no_all_default(runner: Runner, bundles: dict) -> None:
    r = runner
    files = r.snapshot()
    for playbook in (INPLACE, ROLLBACK):
        res = r.ansible_run(playbook, r.world.inventory, extra_vars={"rollwright_application": r.app,
                                                                     "rollwright_revision": str(bundles["v1"])},
                            env={"XDG_STATE_HOME": str(r.state_dir)})
        assert res.rc != 0
        assert any(m.startswith("rollwright_hosts: expected the hosts to deploy to") for m in messages(res)), res
        assert set(res.stats) == {"localhost"}, res.stats
    assert r.snapshot() == files and r.history() == []


def test_required_application_has_no_empty_default(runner: Runner, bundles: dict) -> None:
    r = runner
    variables = r.vars(rollwright_revision=str(bundles["v1"]))
    del variables["rollwright_application"]
    res = r.ansible_run(INPLACE, r.world.inventory, extra_vars=variables, env={"XDG_STATE_HOME": str(r.state_dir)})
    assert res.rc != 0
    assert any("rollwright_application" in m and "required" in m for m in messages(res)), messages(res)


def test_no_load_balancer_is_said_in_the_plan_and_the_summary(runner: Runner, bundles: dict) -> None:
    r = runner
    warning = "no load balancer: hosts stay in service while they are deployed"
    dry = r.run(extra_vars={"rollwright_revision": str(bundles["v1"])}, check=True)
    assert dry.rc == 0, dry
    assert f"WARNING {warning}" in output(dry)
    res = r.run(extra_vars={"rollwright_revision": str(bundles["v1"])})
    assert res.rc == 0, res
    summary = H.summary_lines(res)
    assert f"  WARNING {warning}" in summary, summary
    assert f"WARNING {warning}" in res.stdout  # said at the start too


# ----------------------------------------------------------------------------------------------
# options that do what they say
# ----------------------------------------------------------------------------------------------

def test_step_plugins_refuse_unknown_and_mistyped_options(runner: Runner) -> None:
    r = runner
    plays = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "typo", "rollwright.deploy.deployment_recover": {"application": r.app, "forse": True},
         "ignore_errors": True, "register": "typo"},
        {"name": "mistyped",
         "rollwright.deploy.inplace_step": {"step": "start", "hosts": r.hosts, "lock_ttl": "a minute"},
         "ignore_errors": True},
        {"name": "bad step", "rollwright.deploy.bluegreen_step": {"step": "deploy"}, "ignore_errors": True},
    ]}, {"hosts": r.hosts[0], "gather_facts": False, "tasks": [
        {"name": "host typo", "rollwright.deploy.host_lifecycle": {
            "application": r.app, "deployment_group": "g", "deployment_id": "d-EDGES0002", "events": ["ApplicationStop"],
            "srcc": "/tmp/bundle.zip"}, "ignore_errors": True},
    ]}]
    res = r.run(plays, extra_vars=False)
    typo = res.task("typo")["localhost"]
    assert typo.get("failed") and "forse" in typo["msg"] and "Unsupported parameters" in typo["msg"], typo
    mistyped = res.task("mistyped")["localhost"]
    assert mistyped.get("failed") and "lock_ttl" in mistyped["msg"], mistyped
    bad = res.task("bad step")["localhost"]
    assert bad.get("failed") and "step" in bad["msg"] and "start" in bad["msg"], bad
    host = res.task("host typo")[r.hosts[0]]  # refused on the controller, before any transfer
    assert host.get("failed") and "srcc" in host["msg"] and "Unsupported parameters" in host["msg"], host


def test_module_defaults_group_and_task_environment_reach_modules_and_step_plugins(runner: Runner) -> None:
    r = runner
    table = H.unique("rw-edges")
    no_aws = {"AWS_ENDPOINT_URL": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "", "AWS_ACCESS_KEY_ID": "",
              "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
              "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}
    plays = [{"hosts": "localhost", "gather_facts": False,
              "module_defaults": {"group/rollwright.deploy.aws": {"region": r.aws.region, "endpoint_url": r.aws.endpoint}},
              "environment": {"AWS_ACCESS_KEY_ID": r.aws.env["AWS_ACCESS_KEY_ID"],
                              "AWS_SECRET_ACCESS_KEY": r.aws.env["AWS_SECRET_ACCESS_KEY"]},
              "tasks": [
                  {"name": "module", "rollwright.deploy.deployment_record": {
                      "backend": "dynamodb", "dynamodb_table": table, "create_table": True, "state": "lock",
                      "application": r.app, "deployment_group": "g", "deployment_id": "d-EDGES0001"},
                   "register": "group_lock"},
                  {"name": "unlock", "rollwright.deploy.deployment_record": {
                      "backend": "dynamodb", "dynamodb_table": table, "state": "unlock",
                      "application": r.app, "deployment_group": "g", "deployment_id": "d-EDGES0001",
                      "lock_token": "{{ group_lock.lock.token }}"}},
                  {"name": "step plugin", "rollwright.deploy.deployment_recover": {
                      "backend": "dynamodb", "dynamodb_table": table, "application": r.app}},
              ]}]
    res = r.run(plays, extra_vars=False, env=no_aws)
    assert res.rc == 0, messages(res) or res
    assert "nothing to recover" in res.task("step plugin")["localhost"]["message"]
    tables = r.world.client("dynamodb").list_tables()["TableNames"]
    assert table in tables


def test_s3_revision_url_round_trip(runner: Runner, bundles: dict) -> None:
    r = runner
    s3 = r.world.client("s3")
    bucket = H.unique("rw-edges").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    key = "releases/sample app+1 100%.zip"
    version = s3.put_object(Bucket=bucket, Key=key, Body=bundles["v1"].read_bytes())["VersionId"]
    url = f"s3://{bucket}/{quote(key)}?versionId={quote(version, safe='')}&bundleType=zip"
    res = r.run(extra_vars={"rollwright_revision": url, "rollwright_hosts": r.hosts[0]})
    assert res.rc == 0, messages(res) or res
    (record,) = r.history()
    assert record["revision"]["key"] == key and record["revision"]["version"] == version
    assert H.served(r.world.hosts[0].address) == "sample-app v1"
    refused = r.run(extra_vars={"rollwright_revision": f"s3://{bucket}/releases/app#1.zip",
                                "rollwright_hosts": r.hosts[0]})
    assert refused.rc != 0
    assert any("a '#' in an s3:// URL" in m and "%23" in m for m in messages(refused)), messages(refused)


# ----------------------------------------------------------------------------------------------
# AWS errors with a hint
# ----------------------------------------------------------------------------------------------

def test_missing_credentials_names_the_step_and_the_settings(runner: Runner, bundles: dict) -> None:
    r = runner
    arn = H.create_target_group(r.world, r.ids())
    res = r.run(extra_vars={"rollwright_revision": str(bundles["v1"]), "rollwright_target_group_arns": arn},
                env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                     "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}, timeout=120)
    assert res.rc != 0
    msg = "\n".join(messages(res))
    assert "inplace_step step=start: no usable AWS credentials" in msg, msg
    assert "AWS_ACCESS_KEY_ID" in msg and "rollwright_aws_profile" in msg and "Traceback" not in res.stdout
    assert r.history() == []


def test_unreachable_endpoint_fails_in_seconds_with_a_hint(runner: Runner, bundles: dict) -> None:
    r = runner
    arn = H.create_target_group(r.world, r.ids())
    with socket.socket() as sock:  # a port nothing listens on (bound, never listening: refused)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        started = time.monotonic()
        res = r.run(extra_vars={"rollwright_revision": str(bundles["v1"]), "rollwright_target_group_arns": arn,
                                "rollwright_aws_endpoint_url": f"http://127.0.0.1:{port}"}, timeout=120)
        took = time.monotonic() - started
    assert res.rc != 0
    msg = "\n".join(messages(res))
    assert "the AWS endpoint cannot be reached" in msg and "rollwright_aws_endpoint_url" in msg, msg
    assert "endpoint unreachable" in res.stdout and "retrying" in res.stdout  # the retry was announced
    assert took < 60, took
    assert r.history() == []


def test_access_denied_names_the_iam_action(runner: Runner, bundles: dict) -> None:
    r = runner
    arn = H.create_target_group(r.world, r.ids())
    inject_fault(r.aws.endpoint, "DescribeTargetHealth", code="AccessDenied", status=403, count=-1,
                 message="User: arn:aws:iam::123456789012:user/ci is not authorized to perform: "
                         "elasticloadbalancing:DescribeTargetHealth because no identity-based policy allows it")
    try:
        res = r.run(extra_vars={"rollwright_revision": str(bundles["v1"]), "rollwright_target_group_arns": arn},
                    timeout=120)
    finally:
        clear_faults(r.aws.endpoint)
    assert res.rc != 0
    msg = "\n".join(messages(res))
    assert "inplace_step step=start: access denied by AWS (AccessDenied" in msg, msg
    assert "needs the IAM action elasticloadbalancing:DescribeTargetHealth" in msg, msg
    assert r.history() == []
