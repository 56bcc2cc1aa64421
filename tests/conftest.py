# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pytest fixtures: the AWS emulator (``aws``), SSH fleets (``fleet``) and ``ansible_run``.

See docs/testing.md. Fleet tests need root; they skip (with the reason) otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.harness import emulator as emu
from tests.harness.ansible_run import AnsibleResult, run_playbook

ROOT = Path(__file__).resolve().parent.parent
# The processes the tests start (ansible-playbook, the emulator) cache bytecode outside the source
# tree, as under `make`: never a __pycache__ beside the collection's files.
os.environ.setdefault("PYTHONPYCACHEPREFIX", str(ROOT / "build" / "pycache"))
# Python looks only in the prefix, the standard library included: without writing there every
# ansible-playbook and local module run would compile it all again (about 1.3 s of CPU each).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the SSH fleet needs root (network, mount and PID namespaces); run the tests as root")


@dataclass
class AWS:
    """The session's AWS emulator."""

    endpoint: str
    region: str
    env: dict[str, str]
    handle: emu.EmulatorHandle

    def session(self) -> Any:
        import boto3

        return boto3.Session(aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                             aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"], region_name=self.region)

    def client(self, name: str, **kwargs: Any) -> Any:
        return self.session().client(name, endpoint_url=self.endpoint, **kwargs)

    def queue_lambda_results(self, results: list[dict[str, Any] | str]) -> int:
        """Queue the next Lambda invoke results: ``[{"payload": str, "function_error": "Unhandled" | None}]``."""
        return emu.queue_lambda_results(self.endpoint, results, self.region)

    def lambda_invocations(self) -> list[dict[str, Any]]:
        return emu.lambda_invocations(self.endpoint, self.region)


@pytest.fixture(scope="session")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Session-scoped AWS emulator (patched moto server in its own process)."""
    handle = emu.start_emulator(tmp_path_factory.mktemp("emulator"))
    try:
        yield AWS(handle.endpoint, emu.REGION, emu.aws_env(handle.endpoint, emu.REGION), handle)
    finally:
        emu.stop_emulator(handle)


@pytest.fixture
def fleet(aws: AWS, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Factory: ``fleet(n, subnet=None) -> World`` (tests.harness.world.World) on the session's emulator.

    Every world made is torn down when the test ends.
    """
    _require_root()
    from tests.harness.world import down, up

    made = []

    def make(n: int, subnet: str | None = None) -> Any:
        world = up(tmp_path_factory.mktemp("world"), n, subnet=subnet, emulator_handle=aws.handle.to_json(), region=aws.region)
        made.append(world)
        return world

    yield make
    errors = []
    for world in made:
        try:
            down(world.dir)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(f"{world.dir}: {exc}")
    if errors:
        pytest.fail("world tear-down failed:\n" + "\n".join(errors))


@pytest.fixture
def ec2_world(aws: AWS, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A world whose hosts are the emulator's instances in its subnet (its EC2 sync), for blue/green."""
    _require_root()
    from tests.integration.inplace_helpers import ec2_synced_world

    with ec2_synced_world(aws, tmp_path_factory.mktemp("ec2-world")) as made:
        yield made


@pytest.fixture(scope="session")
def _control_path_dir() -> Any:
    path = Path(f"/run/rollwright/cp-pytest-{os.getpid()}") if os.geteuid() == 0 else None
    if path is None:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="rw-cp-"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    yield str(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ansible_run(aws: AWS, _control_path_dir: str) -> Callable[..., AnsibleResult]:
    """``ansible_run(playbook, inventory, extra_vars=None, env=None, check=False, timeout=300, limit=None)``.

    `playbook` is a path or a list of plays (dicts). Runs with the emulator's AWS env, collections
    from build/, the ansible.posix.json callback (parsed into the result), 50 forks.
    """

    def _run(playbook: Any, inventory: Any, extra_vars: dict[str, Any] | None = None, env: dict[str, str] | None = None,
             check: bool = False, timeout: float = 300, limit: str | None = None, extra_args: list[str] | None = None) -> AnsibleResult:
        return run_playbook(playbook, inventory, extra_vars=extra_vars, env=env, check=check, timeout=timeout, limit=limit,
                            aws_env=aws.env, control_path_dir=_control_path_dir, extra_args=extra_args)

    return _run


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the hostile-input cases that ran: one line per test marked ``hostile`` whose body ran (passed or
    failed), appended to the file named by ROLLWRIGHT_HOSTILE_LOG (tests/run_suites.py sets it). With xdist,
    only the controlling process writes (it receives every worker's reports)."""
    path = os.environ.get("ROLLWRIGHT_HOSTILE_LOG")
    if not path or os.environ.get("PYTEST_XDIST_WORKER") or report.when != "call" or report.skipped \
            or "hostile" not in report.keywords:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{report.outcome} {report.nodeid}\n")


# ----------------------------------------------------------------------------------------------
# how many tests ran a collection playbook end to end on a test world (tests/run_suites.py prints it)

TALLY_CALLBACK_DIR = ROOT / "tests" / "harness" / "callback_plugins"
COLLECTION_PLAYBOOKS = ROOT / "playbooks"


def fleet_playbook_runs(lines: list[dict[str, Any]]) -> int:
    """Finished runs of a collection playbook, or of a play with a collection role, that ran a
    rollwright.deploy module on a test world's SSH host."""
    def collection_run(line: dict[str, Any]) -> bool:
        playbook = Path(str(line.get("playbook") or "")).resolve()
        ours = playbook.parent == COLLECTION_PLAYBOOKS.resolve()
        return bool(line.get("fleet_hosts")) and (ours or any(str(r).startswith("rollwright.deploy.") for r in line.get("roles", [])))

    return sum(1 for line in lines if collection_run(line))


@pytest.fixture(autouse=True)
def _fleet_playbook_tally(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
                          monkeypatch: pytest.MonkeyPatch) -> Any:
    """Enable the tally callback for every ansible-playbook the test starts (they inherit the environment)."""
    tally = tmp_path_factory.mktemp("tally") / "runs.jsonl"
    monkeypatch.setenv("ROLLWRIGHT_FLEET_TALLY", str(tally))
    paths = [str(TALLY_CALLBACK_DIR)] + [p for p in os.environ.get("ANSIBLE_CALLBACK_PLUGINS", "").split(":") if p]
    monkeypatch.setenv("ANSIBLE_CALLBACK_PLUGINS", ":".join(paths))
    enabled = [c for c in os.environ.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",") if c]
    monkeypatch.setenv("ANSIBLE_CALLBACKS_ENABLED", ",".join(enabled + ["rollwright_fleet_tally"]))
    yield
    lines = [json.loads(line) for line in tally.read_text().splitlines() if line.strip()] if tally.exists() else []
    runs = fleet_playbook_runs(lines)
    if runs:
        request.node.user_properties.append(("fleet_playbook_runs", runs))  # junit XML <property>


# ----------------------------------------------------------------------------------------------
# integration files, longest first: the workers take whole files (`--dist loadfile`) in collection
# order, so the long ones start first and the short ones fill in at the end (no long tail on one
# worker). Seconds on a 2-core machine; an ordering hint only, a file not listed counts as short.
INTEGRATION_FILE_SECONDS = {
    "test_inplace.py": 470, "test_bluegreen_ec2.py": 400, "test_edges_inplace.py": 380, "test_kill_recover.py": 350,
    "test_records_contract.py": 345, "test_haproxy.py": 335, "test_awx.py": 245, "test_rollback_recover.py": 240,
    "test_event_driven.py": 235, "test_records_hostile.py": 215, "test_malformed_inputs.py": 185,
    "test_host_engine_fleet.py": 160, "test_lambda_deploy.py": 140, "test_control_inplace.py": 140,
}


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    def seconds(item: pytest.Item) -> int:
        path = Path(str(item.fspath))
        return INTEGRATION_FILE_SECONDS.get(path.name, 0) if path.parent.name == "integration" else 0

    items.sort(key=lambda item: -seconds(item))  # stable: the order within a file is kept
