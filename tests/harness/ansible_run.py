# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run ansible-playbook against a world and parse the ansible.posix.json callback's output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


@dataclass(repr=False)
class AnsibleResult:
    """rc, stdout, stderr, and the parsed json callback output (``data``; None if unparsable)."""

    rc: int
    stdout: str
    stderr: str
    data: dict[str, Any] | None
    seconds: float = 0.0
    timed_out: bool = False
    cmd: list[str] = field(default_factory=list)

    @property
    def plays(self) -> list[dict[str, Any]]:
        return list((self.data or {}).get("plays", []))

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return dict((self.data or {}).get("stats", {}))

    def tasks(self) -> list[dict[str, Any]]:
        """Every task of every play: ``{"play": name, "name": task name, "hosts": {host: result}}``."""
        return [{"play": p.get("play", {}).get("name"), "name": t.get("task", {}).get("name"), "hosts": t.get("hosts", {})}
                for p in self.plays for t in p.get("tasks", [])]

    def task(self, name: str) -> dict[str, dict[str, Any]]:
        """Per-host results of the last task called `name` (KeyError if none ran)."""
        found = [t for t in self.tasks() if t["name"] == name]
        if not found:
            raise KeyError(f"no task named {name!r} ran; tasks: {[t['name'] for t in self.tasks()]}")
        return found[-1]["hosts"]

    def task_seconds(self, name: str) -> float:
        """Wall time of the last task called `name`, from the json callback's task duration."""
        found = [t for p in self.plays for t in p.get("tasks", []) if t.get("task", {}).get("name") == name]
        assert found, f"no task {name!r}"
        duration = found[-1]["task"]["duration"]
        start, end = (datetime.fromisoformat(duration[k].replace("Z", "+00:00")) for k in ("start", "end"))
        return (end - start).total_seconds()

    def failed_hosts(self) -> set[str]:
        return {h for h, s in self.stats.items() if s.get("failures")}

    def unreachable_hosts(self) -> set[str]:
        return {h for h, s in self.stats.items() if s.get("unreachable")}

    def ok_hosts(self) -> set[str]:
        return {h for h, s in self.stats.items() if not s.get("failures") and not s.get("unreachable")}

    def __repr__(self) -> str:  # what a failing assert shows
        return f"ansible-playbook rc={self.rc} in {self.seconds:.1f}s\nSTDERR:\n{self.stderr[-3000:]}\nSTDOUT:\n{self.stdout[-6000:]}"


def ansible_env(aws_env: dict[str, str] | None = None, control_path_dir: str | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment our test runs use: collections from build/, json output, many forks."""
    env = dict(os.environ)
    env.update(aws_env or {})
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_FORKS": "50",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
    })
    if control_path_dir:
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = control_path_dir
    env.update(extra or {})
    return env


def _parse(stdout: str) -> dict[str, Any] | None:
    start = stdout.find("{")
    while start != -1:
        try:
            return json.loads(stdout[start:])
        except ValueError:
            start = stdout.find("\n{", start + 1)
            start = start + 1 if start != -1 else -1
    return None


def run_playbook(playbook: str | os.PathLike | list[dict[str, Any]], inventory: str | os.PathLike,
                 extra_vars: dict[str, Any] | None = None, env: dict[str, str] | None = None, check: bool = False,
                 timeout: float = 300, limit: str | None = None, aws_env: dict[str, str] | None = None,
                 control_path_dir: str | None = None, extra_args: list[str] | None = None) -> AnsibleResult:
    """Run a playbook (a path, or a list of plays written to a temp file) and return the parsed result.

    On timeout the whole ansible-playbook process group is killed and ``timed_out`` is set (rc -9).
    """
    with tempfile.TemporaryDirectory(prefix="rw-play-") as tmp:
        if isinstance(playbook, (list, tuple)):
            import yaml

            path = Path(tmp) / "playbook.yml"
            path.write_text(yaml.safe_dump(list(playbook), sort_keys=False))
            playbook = path
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)]
        if extra_vars:
            vars_file = Path(tmp) / "extra_vars.json"
            vars_file.write_text(json.dumps(extra_vars))
            cmd += ["-e", f"@{vars_file}"]
        if check:
            cmd.append("--check")
        if limit:
            cmd += ["--limit", limit]
        cmd += list(extra_args or [])
        full_env = ansible_env(aws_env, control_path_dir or str(Path(tmp) / "cp"), env)
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=str(ROOT), env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
        return AnsibleResult(proc.returncode, out, err, _parse(out), time.monotonic() - start, timed_out, cmd)
