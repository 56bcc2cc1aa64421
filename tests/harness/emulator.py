# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start, stop and script the AWS emulator (a patched moto server in its own daemon process)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.proc import HarnessError, ProcRef, stop

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCESS_KEY = "rollwright-test-access-key"
SECRET_KEY = "rollwright-test-secret-key"
EMULATOR_REGISTRY = Path("/run/rollwright/emulators")


@dataclass
class EmulatorHandle:
    """A running emulator: its endpoint URL and process (PID + start time, see ProcRef)."""

    endpoint: str
    pid: int
    start: int | None = None
    log: str = ""

    @property
    def proc(self) -> ProcRef:
        return ProcRef(self.pid, self.start)

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "pid": self.pid, "start": self.start, "log": self.log}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EmulatorHandle":
        return cls(data["endpoint"], int(data["pid"]), data.get("start"), data.get("log", ""))


def aws_env(endpoint: str, region: str = REGION) -> dict[str, str]:
    """The AWS_* environment that points boto3, the AWS CLI and amazon.aws at the emulator."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def start_emulator(state_dir: str | os.PathLike, timeout: float = 60.0) -> EmulatorHandle:
    """Start the emulator in a new session (it outlives the caller), wait until it answers.

    Writes ``emulator.log`` and ``emulator.json`` (the handle) into state_dir.
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    ready = state / "emulator.ready"
    ready.unlink(missing_ok=True)
    log_path = state / "emulator.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "build")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(var, None)
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            [_python(), "-m", "tests.harness.emulator_server", "--ready-file", str(ready)],
            cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle: EmulatorHandle | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            break
        if ready.exists():
            info = json.loads(ready.read_text())
            handle = EmulatorHandle(f"http://127.0.0.1:{info['port']}", child.pid, ProcRef.of(child.pid).start, str(log_path))
            break
        time.sleep(0.02)
    if handle is None:
        rc = child.poll()
        if rc is None:
            stop([ProcRef.of(child.pid)])
            child.wait()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise HarnessError(f"AWS emulator did not come up within {timeout}s (exit code {rc}); log {log_path}:\n{tail}")
    (state / "emulator.json").write_text(json.dumps(handle.to_json(), indent=2))
    with contextlib.suppress(OSError):
        EMULATOR_REGISTRY.mkdir(parents=True, exist_ok=True)
        (EMULATOR_REGISTRY / f"{handle.pid}.json").write_text(json.dumps(handle.to_json()))
    # The child must not become a zombie of a long-lived caller (pytest): let a thread reap it.
    import threading

    threading.Thread(target=child.wait, daemon=True).start()
    _wait_health(handle.endpoint, deadline)
    return handle


def _wait_health(endpoint: str, deadline: float) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint}/_rollwright/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.02)
    raise HarnessError(f"AWS emulator at {endpoint} does not answer: {last}")


def stop_emulator(handle: EmulatorHandle | dict[str, Any] | str | os.PathLike) -> None:
    """Stop an emulator by its handle (or handle JSON, or its state dir). Safe if already gone."""
    if isinstance(handle, (str, os.PathLike)):
        path = Path(handle) / "emulator.json"
        if not path.exists():
            return
        handle = EmulatorHandle.from_json(json.loads(path.read_text()))
    elif isinstance(handle, dict):
        handle = EmulatorHandle.from_json(handle)
    stop([handle.proc])
    with contextlib.suppress(OSError):
        (EMULATOR_REGISTRY / f"{handle.pid}.json").unlink(missing_ok=True)


def stop_all_emulators() -> list[str]:
    """Stop every emulator this machine's harness started (registered under /run/rollwright)."""
    stopped = []
    for path in sorted(EMULATOR_REGISTRY.glob("*.json")) if EMULATOR_REGISTRY.exists() else []:
        try:
            handle = EmulatorHandle.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, OSError):
            path.unlink(missing_ok=True)
            continue
        if handle.proc.alive():
            stopped.append(f"emulator {handle.endpoint} (pid {handle.pid})")
        stop_emulator(handle)
    return stopped


def _post(endpoint: str, path: str, body: dict[str, Any], method: str = "POST") -> dict[str, Any]:
    req = urllib.request.Request(f"{endpoint}{path}", data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise HarnessError(f"emulator {method} {path} failed: {exc.code} {exc.read().decode(errors='replace')}") from exc


def queue_lambda_results(endpoint: str, results: list[dict[str, Any] | str], region: str = REGION) -> int:
    """Queue the next Lambda invoke results, FIFO (one queue per region, shared by all functions).

    Each result is ``{"payload": "<string>", "function_error": "Unhandled" | None}`` (a bare string
    means a payload without error). Returns the queue depth. With the queue empty, invoke echoes
    its payload (moto's simple backend).
    """
    return int(_post(endpoint, "/_rollwright/lambda/invoke-results", {"results": results, "region": region})["depth"])


def lambda_invocations(endpoint: str, region: str = REGION) -> list[dict[str, Any]]:
    """Every Lambda invocation the emulator served in that region, oldest first
    (function_name, qualifier, version, payload, invocation_type, time)."""
    with urllib.request.urlopen(f"{endpoint}/_rollwright/lambda/invocations?region={region}", timeout=10) as resp:
        return list(json.loads(resp.read())["invocations"])


def clear_lambda_invocations(endpoint: str, region: str = REGION) -> None:
    _post(endpoint, f"/_rollwright/lambda/invocations?region={region}", {}, method="DELETE")


def inject_fault(endpoint: str, action: str, code: str = "Throttling", status: int = 400,
                 message: str = "Rate exceeded", count: int = 1) -> None:
    """Make the next `count` requests of an API action (e.g. ``DescribeTargetHealth``) fail with an AWS error
    (`count` < 0: every one). Requests of that action are counted from now on (:func:`fault_requests`)."""
    _post(endpoint, "/_rollwright/faults", {"action": action, "code": code, "status": status, "message": message,
                                            "count": count})


def fault_requests(endpoint: str) -> dict[str, int]:
    """action -> requests seen since its fault was injected (failed and passed through)."""
    with urllib.request.urlopen(f"{endpoint}/_rollwright/faults", timeout=10) as resp:
        return dict(json.loads(resp.read())["seen"])


def clear_faults(endpoint: str) -> None:
    _post(endpoint, "/_rollwright/faults", {}, method="DELETE")
