# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 19: the collection as AWX / Automation Controller uses it.

- The tarball: ``ansible-galaxy collection build``, installed into an empty collections path, deploys
  in place on the fleet from that installed copy only (a marker task planted in the installed copy
  shows it ran; the checkout is on no collections path and not the working directory).
- ``ansible-builder create`` on extensions/awx/execution-environment.yml (no container runtime), and
  ``ansible-builder introspect`` on the installed collection (Python and system requirements, rpm
  and dpkg names).
- The sample AWX project's wrappers run through ``ansible-runner`` in a private data directory laid
  out as AWX lays it out (env/extravars with the job's awx_* variables and the survey answers as
  scalars, env/envvars with the AWS credential's variables, inventory/hosts as a script, project/,
  requirements_collections/ from the tarball), records in DynamoDB on the emulator: in-place, and
  blue/green waiting for an approval that the continue wrapper gives. The records' creator holds
  the AWX job id, template and user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.rollwright.deploy.plugins.module_utils.records.dynamodb import DynamoDBRecordStore
from tests.bundles import build_bundle
from tests.harness.ansible_run import VENV_BIN, ansible_env
from tests.integration import inplace_helpers as H
from tests.integration.test_bluegreen_ec2 import Env, world  # noqa: F401  # pylint: disable=unused-import  # its EC2-synced world fixture

ROOT = Path(__file__).resolve().parents[2]
AWX_DIR = ROOT / "extensions" / "awx"
SURVEYS = AWX_DIR / "controller" / "surveys"

pytestmark = [pytest.mark.slow]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _clean_env(aws_env: dict[str, str] | None = None, collections: Path | None = None) -> dict[str, str]:
    """Our usual ansible environment, minus anything that points at the checkout."""
    env = ansible_env(aws_env)
    env.pop("ANSIBLE_CONFIG", None)
    if collections is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    else:
        env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    return env


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = _run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(ROOT)], cwd=out)
    assert done.returncode == 0, done.stderr + done.stdout
    built = sorted(out.glob("rollwright-deploy-*.tar.gz"))
    assert len(built) == 1, list(out.iterdir())
    return built[0]


def install(tarball: Path, collections: Path) -> Path:
    """Install the tarball alone into an empty collections path (amazon.aws comes from the Python
    environment's ansible package, as in an execution environment)."""
    assert not collections.exists() or not any(collections.iterdir())
    done = _run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(collections), str(tarball)],
                cwd=collections.parent, env=_clean_env())
    assert done.returncode == 0, done.stderr + done.stdout
    installed = collections / "ansible_collections" / "rollwright" / "deploy"
    assert (installed / "MANIFEST.json").is_file() and not installed.is_symlink()
    return installed


def test_tarball_is_lean_and_its_readme_starts_with_installing(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        readme = tar.extractfile("README.md").read().decode()
    banned = ("tests/output", ".venv", "build/", ".git/", "benchmarks/", ".pytest_cache", "Makefile", "worlds/")
    assert not [n for n in names if any(n == b.rstrip("/") or n.startswith(b) or f"/{b}" in n for b in banned)], names
    assert "meta/execution-environment.yml" in names and "bindep.txt" in names and "requirements.txt" in names
    assert "extensions/awx/project/inplace.yml" in names and "docs/awx.md" in names
    first_section = readme.split("\n## ", 2)[1]
    assert first_section.startswith("Install") and "ansible-galaxy collection install rollwright.deploy" in first_section
    assert "make " not in readme.split("## Developing")[0]  # developer commands are not what a user sees first


def test_builder_create_and_introspect(tarball: Path, tmp_path: Path) -> None:
    context = tmp_path / "context"
    done = _run([str(VENV_BIN / "ansible-builder"), "create", "-f", str(AWX_DIR / "execution-environment.yml"),
                 "-c", str(context), "--output-filename", "Containerfile"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    containerfile = (context / "Containerfile").read_text()
    assert "community-ee-minimal" in containerfile and "ansible-galaxy collection install" in containerfile
    assert "introspect" in containerfile and "/usr/bin/dnf" in containerfile
    copied = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert {c["name"] for c in copied["collections"]} == {"rollwright.deploy", "amazon.aws"}

    collections = tmp_path / "collections"
    install(tarball, collections)
    done = _run([str(VENV_BIN / "ansible-builder"), "introspect", str(collections),
                 "--write-pip", str(tmp_path / "pip.txt"), "--write-bindep", str(tmp_path / "bindep.txt")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    data = yaml.safe_load(done.stdout)
    python = {line.split(">")[0].split("=")[0].strip() for line in data["python"]}
    assert {"boto3", "botocore"} <= python, data  # PyYAML is left out: ansible-core brings it
    system = [line.split("#")[0].strip() for line in data["system"]]
    assert "openssh-clients [platform:rpm]" in system and "openssh-client [platform:dpkg]" in system, data
    assert "openssh-clients" in (tmp_path / "bindep.txt").read_text()


@pytest.mark.fleet
@pytest.mark.slow
def test_installed_tarball_deploys_in_place(tarball: Path, fleet: Any, aws: Any, tmp_path: Path) -> None:
    world = fleet(2)
    collections = tmp_path / "collections"
    installed = install(tarball, collections)
    marker = uuid.uuid4().hex
    tasks = installed / "roles" / "inplace" / "tasks" / "start.yml"  # the playbook's first play runs it
    text = tasks.read_text()
    assert text.startswith("---\n")
    tasks.write_text("---\n- name: Installed copy marker\n  ansible.builtin.debug:\n    msg: " + marker + "\n  run_once: true\n\n"
                     + text[4:])
    env = _clean_env(aws.env, collections)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    assert str(ROOT) not in env["ANSIBLE_COLLECTIONS_PATH"]
    listed = _run([str(VENV_BIN / "ansible-galaxy"), "collection", "list", "rollwright.deploy", "--format", "json"],
                  cwd=tmp_path, env=env)
    assert listed.returncode == 0 and list(json.loads(listed.stdout)) == [str(collections / "ansible_collections")], listed.stdout

    bundle = build_bundle("v1", tmp_path / "bundles")
    extra = {"rollwright_hosts": "fleet", "rollwright_application": "tarball", "rollwright_deployment_group": "g",
             "rollwright_revision": str(bundle), "rollwright_deployment_config": "CodeDeployDefault.OneAtATime",
             "rollwright_file_exists_behavior": "OVERWRITE"}
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    done = _run([str(VENV_BIN / "ansible-playbook"), "-i", str(world.inventory), "rollwright.deploy.inplace",
                 "-e", f"@{tmp_path / 'vars.json'}"], cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.find("{"):])
    marks = [t for p in result["plays"] for t in p["tasks"] if t["task"]["name"].endswith("Installed copy marker")]
    assert marks and next(iter(marks[0]["hosts"].values()))["msg"] == marker
    for host in world.hosts:
        assert H.served(host.address) == "sample-app v1"


# ---- the sample AWX project through ansible-runner ---------------------------------------------

AWX_META = {"awx_job_launch_type": "manual", "awx_user_id": 3, "awx_user_name": "alice", "awx_inventory_id": 2,
            "awx_inventory_name": "web hosts", "awx_project_revision": "0f1e2d3c"}


def job_vars(job_id: int, template: str) -> dict[str, Any]:
    """The extra variables AWX adds to every job (each awx_ and tower_)."""
    meta = dict(AWX_META, awx_job_id=job_id, awx_job_template_id=job_id % 100, awx_job_template_name=template)
    return {**meta, **{"tower_" + k[len("awx_"):]: v for k, v in meta.items()}}


def survey_answers(survey: str, answers: dict[str, Any]) -> dict[str, Any]:
    """Answers checked against the survey file as AWX checks them: scalars, choices, lengths, required."""
    spec = json.loads((SURVEYS / survey).read_text())["spec"]
    by_var = {q["variable"]: q for q in spec}
    assert set(answers) <= set(by_var), set(answers) - set(by_var)
    out = {}
    for var, q in by_var.items():
        value = answers.get(var, q.get("default", ""))
        assert isinstance(value, (str, int, float)), (var, value)
        if q["required"]:
            assert value != "", f"{survey}: {var} is required"
        if q["type"] == "multiplechoice":
            assert value in q["choices"], (var, value)
        if q["type"] in ("text", "textarea") and value != "":
            assert q["min"] <= len(str(value)) <= q["max"], (var, value)
        if value != "" or var in answers:
            out[var] = value
    return out


class PrivateDataDir:
    """A private data directory as AWX writes it for one job, run with ansible-runner."""

    def __init__(self, base: Path, tarball: Path, world: Any, aws: Any, table: str) -> None:
        self.base, self.world, self.aws, self.table = base, world, aws, table
        self.collections = base / "requirements_collections"
        install(tarball, self.collections)  # AWX installs collections/requirements.yml here at project sync

    def job(self, job_id: int, template: str, survey: str, answers: dict[str, Any],
            template_vars: dict[str, Any] | None = None) -> Path:
        pdd = self.base / f"job_{job_id}"
        shutil.copytree(AWX_DIR / "project", pdd / "project")
        (pdd / "env").mkdir(parents=True)
        extravars = {"rollwright_record_backend": "dynamodb", "rollwright_record_dynamodb_table": self.table,
                     **(template_vars or {}), **survey_answers(survey, answers), **job_vars(job_id, template)}
        (pdd / "env" / "extravars").write_text(yaml.safe_dump(extravars))
        envvars = {**self.aws.env, "JOB_ID": str(job_id), "ANSIBLE_COLLECTIONS_PATH": str(self.collections),
                   "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_FORKS": "20", "ANSIBLE_NOCOLOR": "1",
                   "XDG_STATE_HOME": str(pdd / "state"), "PYTHONDONTWRITEBYTECODE": "1",
                   "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
        (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars))
        (pdd / "env" / "settings").write_text(yaml.safe_dump({"suppress_ansible_output": True, "job_timeout": 600}))
        # AWX hands the inventory over as an executable script that prints it as JSON
        listed = _run([str(VENV_BIN / "ansible-inventory"), "-i", str(self.world.inventory), "--list"], cwd=self.base,
                      env=_clean_env())
        assert listed.returncode == 0, listed.stderr
        (pdd / "inventory").mkdir()
        script = pdd / "inventory" / "hosts"
        script.write_text(f"#!{VENV_BIN / 'python'}\nimport sys\nsys.stdout.write({listed.stdout!r})\n")
        script.chmod(0o700)
        return pdd

    def run(self, pdd: Path, playbook: str) -> Any:
        import ansible_runner

        return ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, quiet=True)


def runner_failure(runner: Any) -> str:
    out = runner.stdout.read() if hasattr(runner.stdout, "read") else str(runner.stdout)
    return f"status={runner.status} rc={runner.rc}\n{out[-6000:]}"


@pytest.fixture
def records_table(aws: Any) -> Any:
    table = f"rw-awx-{uuid.uuid4().hex[:8]}"
    store = DynamoDBRecordStore(aws.client("dynamodb"), table)
    store.ensure_table(create=True)
    return table, store


@pytest.mark.fleet
@pytest.mark.slow
def test_awx_project_inplace_job_records_its_creator(tarball: Path, fleet: Any, aws: Any, records_table: Any,
                                                     tmp_path: Path) -> None:
    table, store = records_table
    world = fleet(2)
    bundle = build_bundle("v2", tmp_path / "bundles")
    awx = PrivateDataDir(tmp_path, tarball, world, aws, table)
    pdd = awx.job(4711, "web in-place", "inplace.json",
                  {"rollwright_hosts": "fleet", "rollwright_application": "awx-inplace", "rollwright_deployment_group": "prod",
                   "rollwright_revision": str(bundle), "rollwright_deployment_config": "CodeDeployDefault.HalfAtATime"},
                  template_vars={"rollwright_file_exists_behavior": "OVERWRITE"})
    runner = awx.run(pdd, "inplace.yml")
    assert runner.status == "successful" and runner.rc == 0, runner_failure(runner)
    found = store.list("awx-inplace", "prod")
    assert len(found) == 1
    record = store.get(found[0].deployment_id).to_dict()
    assert record["status"] == "Succeeded" and record["creator"] == "user"
    creator = record["creator_identity"]
    assert creator["kind"] == "awx" and creator["job_id"] == 4711
    assert creator["job_template_name"] == "web in-place" and creator["user_name"] == "alice"
    assert record["started_by"] == "AWX job 4711 (web in-place) by alice"
    for host in world.hosts:
        assert H.served(host.address) == "sample-app v2"
    assert not (pdd / "state" / "rollwright").exists()  # nothing went to a SQLite file


@pytest.mark.fleet
@pytest.mark.slow
def test_awx_project_refuses_sqlite(tarball: Path, fleet: Any, aws: Any, tmp_path: Path) -> None:
    world = fleet(1)
    awx = PrivateDataDir(tmp_path, tarball, world, aws, "unused")
    pdd = awx.job(4712, "web in-place", "inplace.json",
                  {"rollwright_hosts": "fleet", "rollwright_application": "awx-sqlite", "rollwright_revision": "/nonexistent.zip"},
                  template_vars={"rollwright_record_backend": "sqlite"})
    assert yaml.safe_load((pdd / "env" / "extravars").read_text())["rollwright_record_backend"] == "sqlite"
    runner = awx.run(pdd, "inplace.yml")
    out = runner.stdout.read()
    assert runner.status == "failed", out[-3000:]
    assert "sqlite is refused under AWX" in out and "rollwright_record_backend: dynamodb" in out, out[-3000:]
    assert not (pdd / "state" / "rollwright").exists()


@pytest.mark.fleet
@pytest.mark.slow
def test_awx_project_bluegreen_split_approval_deny_then_approve(tarball: Path, world: Any, aws: Any, records_table: Any,  # pylint: disable=redefined-outer-name
                                                                tmp_path: Path) -> None:
    """Issue 16, the split form of the approval workflow (extensions/awx/controller/configure.yml): the deploy
    job ends with the deployment Ready and its lock held by the record; then the approval node's edges.

    1. deny: a recovery meanwhile is refused (the deployment waits for approval, it is not dead); the deny
       job (bluegreen_deny.yml) stops it - green fleet gone, lock free, Stopped naming the AWX job.
    2. approve, with the continue job started before the deploy job took the lock: it waits for Ready, then
       takes the handed-over deployment and reroutes and finishes it; the blues serve until then."""
    table, store = records_table
    env = Env(world, None, tmp_path, "awx")
    try:
        blue_asg = env.blue_asg()
        blue = env.asg_ids(blue_asg)
        bundle = build_bundle("v2", tmp_path / "bundles")
        awx = PrivateDataDir(tmp_path, tarball, world, aws, table)
        app = f"awx-bg-{uuid.uuid4().hex[:6]}"
        group = {"rollwright_application": app, "rollwright_deployment_group": "prod"}
        split = {"bluegreen_ec2_ready_action": "stop", "bluegreen_ec2_ready_wait": "10m"}

        def deploy(job_id: int) -> Path:
            return awx.job(job_id, "web blue/green", "bluegreen_ec2.json",
                           {**group, "rollwright_revision": str(bundle), "rollwright_target_group_arns": env.tg,
                            "bluegreen_ec2_copy_auto_scaling_group": blue_asg, **split},
                           template_vars={"rollwright_file_exists_behavior": "OVERWRITE", "rollwright_healthy_timeout": 30,
                                          "bluegreen_ec2_original_wait": "0s", "bluegreen_ec2_connect_timeout": 60,
                                          "bluegreen_ec2_ready_split": True})

        # 1. deny
        runner = awx.run(deploy(5001), "bluegreen_ec2.yml")
        assert runner.status == "successful", runner_failure(runner)
        denied = store.get(store.list(app, "prod", limit=1)[0].deployment_id)
        assert denied.status == "Ready" and denied.extra["bluegreen"]["handover"]["window"] == 600
        lease = store.get_lock(app, "prod")
        assert lease.deployment_id == denied.deployment_id and lease.ttl == 600 and not lease.stale
        green = denied.extra["bluegreen"]["replacement_ids"]
        assert len(green) == 3 and set(env.states(green).values()) == {"running"}
        assert {i for i, st in env.members().items() if st != "draining"} == set(blue)
        refused = awx.run(awx.job(5002, "web recover", "recover.json", group), "recover.yml")
        out = refused.stdout.read()
        assert refused.status == "failed" and "waits for approval until" in out, out[-3000:]
        runner = awx.run(awx.job(5003, "web deny", "bluegreen_continue.json", group), "bluegreen_deny.yml")
        assert runner.status == "successful", runner_failure(runner)
        denied = store.get(denied.deployment_id)
        assert denied.status == "Stopped" and "AWX job 5003 (web deny) by alice" in denied.error, denied.error
        assert [(r.action, r.state, r.handled_by) for r in store.list_requests(denied.deployment_id)] == [
            ("stop", "Done", "recover")]
        assert not env.asg_exists(f"{blue_asg}-{denied.deployment_id}") and store.get_lock(app, "prod") is None
        assert set(env.states(green).values()) <= {"terminated", "shutting-down"}
        assert {i: st for i, st in env.members().items() if st != "draining"} == {i: "healthy" for i in blue}

        # 2. approve: the continue job starts first (before the deploy job takes the lock)
        continued: dict[str, Any] = {}
        approver = threading.Thread(target=lambda: continued.update(runner=awx.run(
            awx.job(5005, "web continue", "bluegreen_continue.json", group), "bluegreen_continue.yml")), daemon=True)
        approver.start()
        time.sleep(1)
        runner = awx.run(deploy(5004), "bluegreen_ec2.yml")
        assert runner.status == "successful", runner_failure(runner)
        handed = store.get(store.list(app, "prod", limit=1)[0].deployment_id)
        approver.join(180)
        assert continued.get("runner") is not None and continued["runner"].status == "successful", \
            runner_failure(continued["runner"]) if continued.get("runner") else continued
        record = store.get(handed.deployment_id).to_dict()
        assert record["status"] == "Succeeded" and record["deployment_type"] == "blue_green_ec2"
        assert record["creator_identity"]["job_id"] == 5004 and record["started_by"] == "AWX job 5004 (web blue/green) by alice"
        assert record["extra"]["bluegreen_continue"]["by"] == "AWX job 5005 (web continue) by alice"
        handover = record["extra"]["bluegreen"]["handover"]
        assert handover["resumed_by"] == "AWX job 5005 (web continue) by alice"
        assert handover["at"] <= record["extra"]["bluegreen_continue"]["at"]  # recorded only once Ready
        green = env.asg_ids(f"{blue_asg}-{record['deployment_id']}")
        assert len(green) == 3 and {i: st for i, st in env.members().items() if st != "draining"} == {i: "healthy" for i in green}
        assert store.get_lock(app, "prod") is None
    finally:
        env.cleanup()


def test_deployment_record_module_records_the_awx_job(ansible_run: Any, aws: Any, records_table: Any, tmp_path: Path) -> None:
    """The Lambda role records through deployment_record: its action plugin hands the AWX job to the module."""
    table, store = records_table
    plays = [{"name": "record", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Create", "rollwright.deploy.deployment_record": {
            "state": "create", "backend": "{{ backend }}", "dynamodb_table": table, "sqlite_path": str(tmp_path / "r.sqlite3"),
            "application": "awx-module", "deployment_group": "{{ group }}", "deployment_type": "lambda"}, "register": "made"},
        {"name": "Lock", "rollwright.deploy.deployment_record": {
            "state": "lock", "backend": "{{ backend }}", "dynamodb_table": table, "sqlite_path": str(tmp_path / "r.sqlite3"),
            "application": "awx-module", "deployment_group": "{{ group }}", "deployment_id": "{{ made.deployment_id }}"}}]}]
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python")}}}}))
    result = ansible_run(plays, inventory, extra_vars={"backend": "dynamodb", "group": "fn:live", **job_vars(6001, "fn lambda")})
    assert result.rc == 0, result
    record = store.get(result.task("Create")["localhost"]["deployment_id"]).to_dict()
    assert record["creator_identity"]["job_id"] == 6001 and record["creator_identity"]["job_template_name"] == "fn lambda"
    assert record["started_by"] == "AWX job 6001 (fn lambda) by alice"
    assert store.get_lock("awx-module", "fn:live").owner == record["started_by"]

    refused = ansible_run(plays, inventory, extra_vars={"backend": "sqlite", "group": "fn:live", **job_vars(6002, "fn lambda")})
    assert refused.rc != 0 and "sqlite is refused under AWX" in refused.task("Create")["localhost"]["msg"]
    assert not (tmp_path / "r.sqlite3").exists()
    allowed = ansible_run(plays, inventory, extra_vars={"backend": "sqlite", "group": "fn:live", "rollwright_record_allow_sqlite_under_awx": "true",
                                                        **job_vars(6003, "fn lambda")})
    assert allowed.rc == 0, [r.get("msg") for t in allowed.tasks() for r in t["hosts"].values()]
    local = ansible_run(plays, inventory, extra_vars={"backend": "sqlite", "group": "fn:local"})
    assert local.rc == 0, local
    made = local.task("Create")["localhost"]["deployment"]
    assert made["creator_identity"]["kind"] == "local" and made["started_by"].endswith(f"pid {made['creator_identity']['pid']}")
