# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the real ansible-rulebook (with this collection's sources and rulebooks) against a world.

``Rulebook(name, inventory, variables, log_dir, aws_env).start()`` runs
``ansible-rulebook -r rollwright.deploy.<name> -i INVENTORY --vars VARS`` in its own session, with
the collection from build/, the venv's ansible-playbook on PATH and the emulator's AWS environment;
its output goes to ``<log_dir>/rulebook-<name>.log``. ``stop()`` ends its process group (every
playbook it started included) by PID, never by name.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.ansible_run import VENV_BIN, ansible_env
from tests.harness.proc import ProcRef, stop


def _descendants(pid: int) -> list[int]:
    """Every process below pid (ansible-runner starts playbooks in sessions of their own)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


class Rulebook:
    def __init__(self, name: str, inventory: str | os.PathLike, variables: dict[str, Any], log_dir: str | os.PathLike,
                 aws_env: dict[str, str], extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.inventory = str(inventory)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.vars_file = self.log_dir / f"rulebook-{name}-vars.yml"
        self.vars_file.write_text(yaml.safe_dump(dict(variables)))
        self.log_path = self.log_dir / f"rulebook-{name}.log"
        self.env = ansible_env(aws_env, str(self.log_dir / "cp"), extra_env)
        # The playbooks' own output is what matters in the log: the default callback, not json.
        self.env.pop("ANSIBLE_STDOUT_CALLBACK", None)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Rulebook":
        cmd = [str(VENV_BIN / "ansible-rulebook"), "-r", f"rollwright.deploy.{self.name}", "-i", self.inventory,
               "--vars", str(self.vars_file), "--print-events", "-v"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=str(self.log_dir), env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace: float = 5.0) -> None:
        """End ansible-rulebook and everything it started (by PID)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        refs = [ProcRef.of(pid) for pid in [self.proc.pid] + _descendants(self.proc.pid)]
        stop(refs, grace=grace)
        self.proc.wait(timeout=10)

    def __enter__(self) -> "Rulebook":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
