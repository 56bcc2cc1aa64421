# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Process helpers: run commands, and identify/kill processes by PID safely (PID + start time)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any


class HarnessError(RuntimeError):
    """The test world could not be built or torn down; the message says what and why."""


def run(cmd: list[str], check: bool = True, timeout: float = 30, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command, capture its output; on failure raise HarnessError naming the command and stderr."""
    if "input" not in kwargs:
        kwargs["stdin"] = subprocess.DEVNULL
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except FileNotFoundError as exc:
        raise HarnessError(f"command not found: {cmd[0]} (is it installed? `make setup` installs the test world's packages)") from exc
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"command timed out after {timeout}s: {' '.join(cmd)}") from exc
    if check and proc.returncode != 0:
        raise HarnessError(f"command failed (rc={proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
    return proc


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = data[data.rfind(")") + 2:].split()
    try:
        if fields[0] == "Z":
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ProcRef:
    """A process identified by PID and start time, so a recycled PID is never mistaken for it."""

    pid: int
    start: int | None

    @classmethod
    def of(cls, pid: int) -> "ProcRef":
        return cls(pid, start_time(pid))

    def alive(self) -> bool:
        now = start_time(self.pid)
        return now is not None and (self.start is None or now == self.start)

    def signal(self, sig: int) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ProcRef":
        return cls(int(data["pid"]), data.get("start"))


def reap(pid: int) -> None:
    """Collect the exit status of our own child, if it is one (avoids zombies in long-lived callers)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(refs: list[ProcRef], grace: float = 2.0) -> None:
    """SIGTERM every live process, wait up to `grace` seconds, SIGKILL what remains; wait until gone."""
    live = [r for r in refs if r.signal(signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        for r in live:
            reap(r.pid)
        live = [r for r in live if r.alive()]
        if live:
            time.sleep(0.02)
    for r in live:
        r.signal(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while live and time.monotonic() < deadline:
        for r in live:
            reap(r.pid)
        live = [r for r in live if r.alive()]
        if live:
            time.sleep(0.02)
