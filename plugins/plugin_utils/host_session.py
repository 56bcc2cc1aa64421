# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's side of host sessions: a batch's host calls as one run of the host engine per host.

``BatchSessions.start`` runs ``host_lifecycle`` with ``session`` on every host of the batch (each in a thread of
its own, as a task of its own would run it). The engine runs the first event group, then waits at a gate before
each next one. ``results`` says ``run`` at a gate and reads the group's result; ``finish`` says ``run`` at the last
gate and takes the module's own result; ``close`` aborts whatever still waits. Saying and reading is one shell
command per host and group (``ansible.builtin.raw`` through the host's own connection and become), with no Python
start on the host; see plugins/module_utils/host/session.py for the files it reads and writes.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from concurrent.futures import Future
from typing import Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.host.session import (
    ALIVE, KEEPALIVE_EVERY, gate_name, result_name,
)
from ansible_collections.rollwright.deploy.plugins.plugin_utils.host_calls import HostCaller

RAW = "ansible.builtin.raw"
RESULT_MARK = "RWS-RESULT:"
# What the command prints when there is no result to read: the engine stopped (done, or its process is gone), or
# it never started (no pid within START_LIMIT seconds of the command).
ENDED, GONE, NO_START, SENT = "RWS-ENDED", "RWS-GONE", "RWS-NOSTART", "RWS-SENT"
START_LIMIT = 60
PROGRESS_EVERY = 10.0


def handled_failure(result: dict, host: str, display: Optional[Callable[[str], None]] = None) -> dict:
    """A failed lifecycle event the deployment handles (records it, keeps the host out, judges the minimum) is a
    result with ``lifecycle_failed``, not a failed task."""
    if result.get("failed") and result.get("events"):
        result = dict(result, failed=False, lifecycle_failed=True)
        if display is not None:
            display(f"{host}: {result.get('msg')} - handled by the deployment")
    return result


def gate_command(path: str, index: int, word: Optional[str], wait: bool, start_limit: int = START_LIMIT) -> str:
    """A POSIX shell command: wait until the session has started, say ``word`` at gate ``index`` (when given),
    then (with ``wait``) wait for group ``index``'s result and print it after RESULT_MARK, on one line."""
    d = shlex.quote(path)
    result = f'"$d"/{result_name(index)}'
    lines = [
        f"d={d}",
        "t0=$(date +%s)",
        # the engine may still be starting: its pid file says it is in the session
        'while [ ! -f "$d/pid" ]; do',
        f'  [ -f "$d/done" ] && {{ echo {ENDED}; exit 0; }}',
        f'  [ $(( $(date +%s) - t0 )) -ge {int(start_limit)} ] && {{ echo {NO_START}; exit 0; }}',
        "  sleep 0.02",
        "done",
    ]
    if word is not None:
        tmp = f'"$d"/.{gate_name(index)}.tmp'
        lines.append(f"printf '%s\\n' {shlex.quote(word)} > {tmp} && mv -f {tmp} \"$d\"/{gate_name(index)} || exit 3")
    if not wait:
        lines.append(f"echo {SENT}")
        return "\n".join(lines) + "\n"
    lines += [
        "i=0",
        f"while [ ! -f {result} ]; do",
        f'  if [ -f "$d/done" ]; then [ -f {result} ] && break; echo {ENDED}; exit 0; fi',
        f'  kill -0 "$(cat "$d/pid")" 2>/dev/null || {{ [ -f {result} ] && break; echo {GONE}; exit 0; }}',
        "  i=$((i + 1))",
        # quick polls while a group usually ends (a few seconds), then gentle ones
        '  if [ "$i" -lt 250 ]; then sleep 0.02; else sleep 0.2; fi',
        "done",
        f"printf '%s' {RESULT_MARK}; tr -d '\\n' < {result}; echo",
    ]
    return "\n".join(lines) + "\n"


def read_gate_output(result: Optional[dict]) -> tuple[str, Optional[dict]]:
    """(what the command said, the group's result when it printed one) from the raw call's result."""
    result = result or {}
    if result.get("unreachable"):
        return "unreachable", {"unreachable": True, "msg": result.get("msg") or "unreachable"}
    out = str(result.get("stdout") or "")
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(RESULT_MARK):
            try:
                data = json.loads(line[len(RESULT_MARK):])
            except ValueError as exc:
                return "error", {"failed": True, "msg": f"session: the group's result is not JSON: {exc}"}
            return "result", data if isinstance(data, dict) else {"failed": True, "msg": "session: result not a dict"}
        for mark in (ENDED, GONE, NO_START, SENT):
            if line == mark:
                return mark, None
    if result.get("failed") or result.get("rc"):
        tail = (out or str(result.get("stderr") or "") or str(result.get("msg") or "")).strip()[-500:]
        return "error", {"failed": True, "msg": f"session: the gate command failed (rc {result.get('rc')}): {tail}"}
    return "error", {"failed": True, "msg": "session: the gate command printed nothing recognisable"}


class BatchSessions:
    """One host session per host of a batch (see the module docstring)."""

    def __init__(self, caller: HostCaller, module: str, args_by_host: dict[str, dict], paths: dict[str, str],
                 handled: bool = True, progress: Optional[Callable[[str], None]] = None) -> None:
        self.caller = caller
        self.module = module
        self.args_by_host = args_by_host
        self.paths = paths
        self.handled = handled
        self.progress = progress
        self.futures: dict[str, Future] = {}
        self.next_gate: dict[str, int] = {h: 1 for h in args_by_host}
        self.finals: dict[str, Optional[dict]] = {}

    @property
    def hosts(self) -> list[str]:
        return list(self.args_by_host)

    def start(self) -> None:
        """Start every host's session (in the background: this returns at once), and the keepalive."""
        self.futures = self.caller.submit(self.module, self.args_by_host)
        self._stop_keepalive = threading.Event()
        self._keepalive = threading.Thread(target=self._keep_alive, daemon=True)
        self._keepalive.start()

    def _keep_alive(self) -> None:
        """Touch ``alive`` in every running session now and then, so a gate does not expire while this controller
        works (a long drain, another host's long hook); a controller that died stops touching it."""
        while not self._stop_keepalive.wait(KEEPALIVE_EVERY):
            running = [h for h, f in self.futures.items() if not f.done()]
            if running:
                self.caller.call(RAW, {h: {"_raw_params": f"touch {shlex.quote(self.paths[h] + '/' + ALIVE)} 2>/dev/null; :"}
                                       for h in running})

    def _final(self, host: str, timeout: Optional[float] = None) -> Optional[dict]:
        """The module's own result of ``host``'s session (waits for its end)."""
        if host not in self.finals:
            future = self.futures.get(host)
            if future is None:
                return None
            result = future.result(timeout=timeout)
            self.finals[host] = handled_failure(result or {}, host) if self.handled else result
        return self.finals[host]

    def _ended_without(self, host: str, index: int, said: str) -> dict:
        """Group ``index``'s result of a session that stopped without leaving one: what the module said."""
        final = self._final(host) or {}
        if final.get("unreachable") or final.get("failed") or final.get("lifecycle_failed"):
            return final
        return {"failed": True, "msg": f"session: the host engine stopped before event group {index} ({said}): "
                                       f"{final.get('msg') or 'no result'}"}

    def _gate(self, index: int, hosts: list[str], word: Optional[str], wait: bool, label: str) -> dict[str, dict]:
        commands = {h: {"_raw_params": gate_command(self.paths[h], index, word, wait)} for h in hosts}
        with self._ticker(hosts, label):
            raw = self.caller.call(RAW, commands)
        out = {}
        for host in hosts:
            said, data = read_gate_output(raw.get(host))
            if word is not None and said in ("result", SENT):
                self.next_gate[host] = index + 1  # the word reached the gate; an abort goes to the next one
            if said == "result":
                out[host] = handled_failure(data, host, self.progress) if self.handled else data
            elif said in (ENDED, GONE, NO_START):
                out[host] = self._ended_without(host, index, said)
            elif said == SENT:
                out[host] = {}
            else:
                out[host] = data or {"failed": True, "msg": "session: no result"}
        return out

    def results(self, index: int, hosts: list[str], label: str = "") -> dict[str, dict]:
        """Say ``run`` at gate ``index`` (none before group 0) and return each host's result of group ``index``."""
        return self._gate(index, hosts, "run" if index else None, True, label)

    def finish(self, index: int, hosts: list[str], label: str = "") -> dict[str, dict]:
        """Say ``run`` at the last gate and return each host's result of the session (its last group's)."""
        sent = self._gate(index, hosts, "run", False, label)
        out = {}
        with self._ticker(hosts, label):
            for host in hosts:
                out[host] = sent[host] if sent[host] else (self._final(host) or {"failed": True, "msg": "no result"})
        return out

    def close(self, reason: str) -> None:
        """Abort the sessions still waiting at a gate (they run nothing more) and wait for every session's end."""
        if getattr(self, "_stop_keepalive", None) is not None:
            self._stop_keepalive.set()
        waiting = [h for h, f in self.futures.items() if not f.done()]
        by_gate: dict[int, list[str]] = {}
        for host in waiting:
            by_gate.setdefault(self.next_gate[host], []).append(host)
        word = "abort " + " ".join(str(reason).split())[:300]
        for index, hosts in by_gate.items():
            self._gate(index, hosts, word, False, "")
        for host in self.futures:
            try:
                self._final(host, timeout=120)
            except Exception:  # pylint: disable=broad-except  # a session that does not end is the host's, not the batch's
                self.finals.setdefault(host, {"failed": True, "msg": "session: did not end after the abort"})

    def _ticker(self, hosts: list[str], label: str):
        return _Ticker(self.progress, hosts, label)


class _Ticker:
    """Prints ``host(s): <label> running (N s)`` every PROGRESS_EVERY seconds while a gate waits."""

    def __init__(self, progress: Optional[Callable[[str], None]], hosts: list[str], label: str) -> None:
        self.progress, self.hosts, self.label = progress, hosts, label
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> "_Ticker":
        if self.progress is not None and self.label:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()

    def _run(self) -> None:
        while not self.done.wait(PROGRESS_EVERY):
            shown = ", ".join(self.hosts[:5]) + (f" and {len(self.hosts) - 5} more" if len(self.hosts) > 5 else "")
            self.progress(f"{shown}: {self.label} running ({int(time.monotonic() - self.started)} s)")
