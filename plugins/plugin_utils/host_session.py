# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's side of host sessions: a batch's host calls as one run of the host engine per host.

``BatchSessions.start`` runs ``host_lifecycle`` with a detached ``session`` on every host of the batch (each in a
thread of its own, as a task of its own would run it): the call returns once the engine waits at gate 0, and the
engine goes on without the connection. So a batch can start the next batch's sessions while it waits for its own
hosts to become healthy, and the next batch's task ``adopt``s them. ``results`` says ``run`` at a gate and reads the
group's result; ``close`` aborts whatever still waits, at every gate it has left. Saying and reading is one shell
command per host and group (``ansible.builtin.raw`` through the host's own connection and become), with no Python
start on the host, and waiting is blocking on the session's ``ready`` pipe, not polling; see
plugins/module_utils/host/session.py for the files it reads and writes.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import shlex
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.host.session import (
    ALIVE, FINAL, KEEPALIVE_EVERY, READY, WAKE, gate_name, result_name,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import DEFAULT_STATE_ROOT
from ansible_collections.rollwright.deploy.plugins.plugin_utils.host_calls import HostCaller

RAW = "ansible.builtin.raw"
RESULT_MARK = "RWS-RESULT:"
# What the command prints when there is no result to read: the engine stopped (done, or its process is gone), or
# it has not started yet (no pid within START_LIMIT seconds of the command: asked again while its call runs).
ENDED, GONE, NO_START, SENT = "RWS-ENDED", "RWS-GONE", "RWS-NOSTART", "RWS-SENT"
START_LIMIT = 60
PROGRESS_AFTER = 5.0  # a hook running longer than this gets a progress line (as host_lifecycle's progress_after)
PROGRESS_EVERY = 10.0
FINAL_WAIT = 60.0  # how long a start call may take, and how long a stopped engine may take to leave its own result
# Which connections keep a host's module run alive while other calls come and go on the same host: paramiko's
# close() after any call tears down the transport the session runs on.
SESSION_CONNECTIONS = frozenset({"ssh", "ansible.builtin.ssh", "local", "ansible.builtin.local"})
# The keepalive looks every KEEPALIVE_TICK seconds for the sessions whose last sign of life from this controller (their
# start or adoption, their word, their last result, their last touch) is KEEPALIVE_EVERY old, and touches at most a
# share of the batch per look, so sessions started together are touched over KEEPALIVE_SPREAD seconds, not in one
# burst of an SSH command per host: at 100 hosts half at a time that burst (50 commands at once, every 20 s) came
# in the middle of the second batch and held up the hosts then out of service. A session is so touched at most
# KEEPALIVE_EVERY + KEEPALIVE_SPREAD seconds after its last sign, far within its gate's timeout (120 s).
KEEPALIVE_TICK = 0.5
KEEPALIVE_SPREAD = 10.0


def handled_failure(result: dict, host: str, display: Optional[Callable[[str], None]] = None) -> dict:
    """A failed lifecycle event the deployment handles (records it, keeps the host out, judges the minimum) is a
    result with ``lifecycle_failed``, not a failed task."""
    if result.get("failed") and result.get("events"):
        result = dict(result, failed=False, lifecycle_failed=True)
        if display is not None:
            display(f"{host}: {result.get('msg')} - handled by the deployment")
    return result


def _functions(path: str) -> list[str]:
    """The session's directory and the shell functions the commands use: ``sealed`` (the directory is a real
    directory, not a link, 0700, owned by whoever runs this - root under become - so nobody else can have put
    anything there), ``alive`` (the engine's process, by pid and, where /proc has it, start time) and ``nap`` (a
    short sleep where the shell's sleep takes fractions, a second otherwise)."""
    return [
        "set -f",  # no globbing of what ls prints
        f"d={shlex.quote(path)}",
        'nap() { sleep "$1" 2>/dev/null || sleep 1; }',
        "sealed() {",
        '  [ -d "$d" ] && [ ! -h "$d" ] || return 1',
        '  set -- $(ls -nd "$d")',
        '  case "$1" in drwx------*) ;; *) return 1 ;; esac',
        '  [ -O "$d" ] 2>/dev/null || [ "$3" = "$(id -u)" ]',  # a test without -O: the owner from ls
        "}",
        # shell builtins only: tens of waiting commands call it every second on hosts that may share a machine
        "alive() {",
        "  _p= _s= _l=",
        '  read -r _p _s 2>/dev/null < "$d/pid"',
        '  [ -n "$_p" ] && kill -0 "$_p" 2>/dev/null || return 1',
        '  [ -n "$_s" ] && [ -r "/proc/$_p/stat" ] || return 0',
        '  read -r _l 2>/dev/null < "/proc/$_p/stat" || return 1',
        "  set -- ${_l##*') '}",  # the fields after the command's name, which may hold anything
        '  [ $# -ge 20 ] && shift 19 && [ "$1" = "$_s" ]',
        "}",
    ]


def _wait_started(start_limit: int) -> list[str]:
    """Wait until the engine is in the session (its pid file in its sealed directory), at most ``start_limit`` s."""
    return [
        'if ! { sealed && [ -f "$d/pid" ]; }; then',  # usually started: no clock read
        "  t0=$(date +%s)",
        '  until sealed && [ -f "$d/pid" ]; do',
        f'    sealed && [ -f "$d/done" ] && {{ echo {ENDED}; exit 0; }}',
        f'    [ $(( $(date +%s) - t0 )) -ge {int(start_limit)} ] && {{ echo {NO_START}; exit 0; }}',
        "    nap 0.02",
        "  done",
        "fi",
    ]


def gate_command(path: str, index: int, word: Optional[str], wait: bool, start_limit: int = START_LIMIT,
                 more_gates: tuple = (), result_of: Optional[int] = None) -> str:
    """A POSIX shell command: wait until the session has started, say ``word`` at gate ``index`` (and at
    ``more_gates``) when given, then (with ``wait``) wait for the result of group ``result_of`` (``index`` by
    default) and print it after RESULT_MARK, on one line."""
    lines = _functions(path) + _wait_started(start_limit)
    if word is not None:
        for gate in (index, *more_gates):
            tmp, final = f'"$d"/.{gate_name(gate)}.tmp', f'"$d"/{gate_name(gate)}'
            # the temporary file is created exclusively (set -C): never written through anything found there; in
            # this shell, with a process only to rename it (each process counts while the word is on its way)
            lines.append(f"{{ [ -e {tmp} ] || [ -h {tmp} ]; }} && rm -f {tmp}")
            lines.append(f"set -C; printf '%s\\n' {shlex.quote(word)} > {tmp} || exit 3; set +C; "
                         f"mv -f {tmp} {final} || exit 3")
        # Wake the engine if it waits at the gate (opened read-write, so no reader is needed; a regular file of that
        # name is never written: the directory is sealed, and it must be a pipe).
        lines.append(f'[ -p "$d/{WAKE}" ] && echo 1<>"$d/{WAKE}"')
    if not wait:
        lines.append(f"echo {SENT}")
        return "\n".join(lines) + "\n"
    result = f'"$d"/{result_name(index if result_of is None else result_of)}'
    lines += _wait_for(result)
    lines.append(f"printf '%s' {RESULT_MARK}; tr -d '\\n' < {result}; echo")
    return "\n".join(lines) + "\n"


def _wait_for(result: str) -> list[str]:
    """Wait until ``result`` is there (or the engine is done or gone). The engine writes a line to the session's
    ``ready`` pipe after each result: the command blocks reading it, and a ticker (a line every second, while the
    command lives) makes it look at the engine's life now and then. An engine without the pipe is polled."""
    return [
        "i=0",
        "tick=",
        "trap '[ -n \"$tick\" ] && kill \"$tick\" 2>/dev/null' EXIT",
        f'if [ ! -f {result} ] && [ -p "$d/{READY}" ] && {{ command exec 3<>"$d/{READY}"; }} 2>/dev/null; then',
        "  ( while kill -0 $$ 2>/dev/null; do nap 1; echo >&3; done ) >/dev/null 2>&1 &",
        "  tick=$!",
        "fi",
        f"while [ ! -f {result} ]; do",
        f'  if [ -f "$d/done" ]; then [ -f {result} ] && break; echo {ENDED}; exit 0; fi',
        f"  alive || {{ [ -f {result} ] && break; echo {GONE}; exit 0; }}",
        '  if [ -n "$tick" ]; then read -r w <&3 || nap 0.1; continue; fi',
        "  i=$((i + 1))",
        # quick polls while a group usually ends (a few seconds), then gentle ones
        '  if [ "$i" -lt 250 ]; then nap 0.02; else nap 0.2; fi',
        "done",
    ]


_SCRIPT_LINE = re.compile(r"^\S+ \[(?P<event>\w+)\] Script - (?P<script>.+?)(?P<end>: .+ \([\d.]+ s\))?$")


def running_script(log_tail: str) -> Optional[tuple[str, str]]:
    """(event, script) of the hook a deployment's scripts.log says is running, or None when the last one ended."""
    for line in reversed([x for x in log_tail.splitlines() if x.strip()]):
        match = _SCRIPT_LINE.match(line.strip())
        if match:
            return None if match.group("end") else (match.group("event"), match.group("script").split(" (runas")[0])
    return None


def scripts_log_path(args: dict, default_root: str) -> str:
    """Where the host engine logs the scripts of the deployment ``args`` (host_lifecycle's options) names."""
    return posixpath.join(args.get("state_root") or default_root, str(args.get("application")),
                          str(args.get("deployment_group")), "deployments", str(args.get("deployment_id")),
                          "logs", "scripts.log")


def tail_command(path: str) -> str:
    """The last lines of a host's scripts.log (nothing when it is not there yet)."""
    return f"tail -n 20 {shlex.quote(path)} 2>/dev/null || true"


def final_command(path: str, wait: float) -> str:
    """Wait (at most ``wait`` seconds) until the engine stopped, then print its own result (``final.json``) after
    RESULT_MARK; ENDED when it left none, GONE when it is still running (or vanished without ``done``)."""
    final = f'"$d"/{FINAL}'
    return "\n".join(_functions(path) + [
        f"sealed || {{ echo {GONE}; exit 0; }}",
        "t0=$(date +%s)",
        'until [ -f "$d/done" ]; do',
        f"  alive || {{ [ -f \"$d/done\" ] && break; echo {GONE}; exit 0; }}",
        f'  [ $(( $(date +%s) - t0 )) -ge {int(wait)} ] && {{ echo {GONE}; exit 0; }}',
        "  nap 0.05",
        "done",
        f"[ -f {final} ] || {{ echo {ENDED}; exit 0; }}",
        f"printf '%s' {RESULT_MARK}; tr -d '\\n' < {final}; echo",
    ]) + "\n"


def detached_args(args: dict) -> dict:
    """A batch's host_lifecycle arguments for a detached session that waits at gate 0 too."""
    return dict(args, session=dict(args.get("session") or {}, detach=True, first_gate=True))


def touch_command(path: str) -> str:
    """Refresh ``alive`` in a session that started (its sealed directory exists); nothing otherwise."""
    return "\n".join(_functions(path) + [f'sealed && [ -f "$d/pid" ] && touch "$d"/{ALIVE}; :']) + "\n"


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


def raw_args(command: str) -> dict:
    return {"_raw_params": command, "executable": "/bin/sh"}  # the login shell may be any shell


class BatchSessions:
    """One detached host session per host of a batch (see the module docstring).

    Every session waits at gate 0 before anything runs. ``start`` starts them (in the background); ``adopt``
    takes sessions an earlier task started ahead of their batch. A session that an earlier task started but that
    ended before its batch said anything (it expired during a long pause) is started again, under a new name."""

    def __init__(self, caller: HostCaller, module: str, args_by_host: dict[str, dict], paths: dict[str, str],
                 handled: bool = True, progress: Optional[Callable[[str], None]] = None,
                 start_limit: int = START_LIMIT) -> None:
        self.caller = caller
        self.module = module
        self.args_by_host = {h: detached_args(a) for h, a in args_by_host.items()}
        self.paths = dict(paths)
        self.handled = handled
        self.progress = progress
        self.start_limit = start_limit
        self.futures: dict[str, Future] = {}  # the start calls (each returns once its engine waits at gate 0)
        self.adopted: set[str] = set()  # started by an earlier task: started again if it ended unused
        self.next_gate: dict[str, int] = {h: 0 for h in args_by_host}
        self.last_gate = {h: len(((a.get("session") or {}).get("groups") or [])) for h, a in args_by_host.items()}
        self.finals: dict[str, Optional[dict]] = {}
        self.ended: set[str] = set()  # the engine stopped (its result is in finals)
        self._keepalive: Optional[threading.Thread] = None
        self._stop_keepalive = threading.Event()
        self.keepalive_every, self.keepalive_tick, self.keepalive_spread = KEEPALIVE_EVERY, KEEPALIVE_TICK, KEEPALIVE_SPREAD
        created = time.monotonic()
        self.last_sign: dict[str, float] = dict.fromkeys(self.args_by_host, created)  # host -> monotonic time

    def start(self, hosts: Optional[list[str]] = None) -> None:
        """Start ``hosts``' sessions (all by default) in the background: this returns at once; and the keepalive."""
        hosts = list(self.args_by_host) if hosts is None else hosts
        if hosts:
            self._signed(hosts)
            self.futures.update(self.caller.submit(self.module, {h: self.args_by_host[h] for h in hosts}))
        self._start_keepalive()

    def adopt(self, hosts: list[str]) -> None:
        """Take over ``hosts``' sessions, started by an earlier task (they wait at gate 0)."""
        self.adopted.update(hosts)
        self._signed(hosts)
        self._start_keepalive()

    def _signed(self, hosts: list[str]) -> None:
        """``hosts`` had a sign of life from this controller now (the keepalive counts from it)."""
        now = time.monotonic()
        self.last_sign.update(dict.fromkeys(hosts, now))

    def wait_started(self, timeout: float = FINAL_WAIT) -> dict[str, dict]:
        """Wait (at most ``timeout`` s in all) for the start calls; the hosts whose session did not start, with why."""
        deadline = time.monotonic() + timeout
        failed = {}
        for host in list(self.futures):
            failure = self._start_failure(host, max(0.1, deadline - time.monotonic()))
            if failure is not None:
                failed[host] = failure
        return failed

    def _start_keepalive(self) -> None:
        if self._keepalive is None:
            self._keepalive = threading.Thread(target=self._keep_alive, daemon=True)
            self._keepalive.start()

    def _waiting(self) -> list[str]:
        """The hosts whose engine may still wait at a gate of this batch."""
        return [h for h in self.args_by_host if h not in self.ended and self.next_gate[h] <= self.last_gate[h]]

    def _keep_alive(self) -> None:
        """Touch ``alive`` in every session still waiting now and then, so a gate does not expire while this
        controller works (a long drain, another host's long hook); a controller that died stops touching it. Each
        host on its own: a host whose touch hangs holds up no other host's."""
        in_flight: dict[str, Future] = {}
        per_look = max(1, math.ceil(len(self.args_by_host) * self.keepalive_tick / self.keepalive_spread))
        while not self._stop_keepalive.wait(self.keepalive_tick):
            now = time.monotonic()
            due = sorted((self.last_sign[h], h) for h in self._waiting()
                         if now - self.last_sign[h] >= self.keepalive_every
                         and (h not in in_flight or in_flight[h].done()))
            for _since, host in due[:per_look]:
                self.last_sign[host] = now
                in_flight.update(self.caller.submit(RAW, {host: raw_args(touch_command(self.paths[host]))}))

    def _start_failure(self, host: str, timeout: Optional[float] = 0.0) -> Optional[dict]:
        """Why ``host``'s start call failed (its session never started), or None: it started, it is still
        starting (``timeout`` 0: do not wait), or an earlier task started it."""
        future = self.futures.get(host)
        if future is None:
            return None
        try:
            result = future.result(timeout=timeout) or {}
        except FutureTimeout:
            return None
        if (result.get("session") or {}).get("detached") and not result.get("failed"):
            return None
        if not result.get("unreachable"):
            result = dict(result, failed=True)
        result.setdefault("msg", "session: the host engine did not start")
        return result

    def final(self, host: str, timeout: float = FINAL_WAIT) -> dict:
        """The engine's own result (``final.json``), once it stopped; at most ``timeout`` seconds for it."""
        if host not in self.finals:
            final = self._start_failure(host, timeout=0)
            if final is None:
                said, data = read_gate_output(
                    self.caller.call(RAW, {host: raw_args(final_command(self.paths[host], timeout))}).get(host))
                final = data if said in ("result", "unreachable", "error") and data is not None else {
                    "failed": True, "msg": f"session: the host engine stopped without its own result ({said})"}
            self.finals[host] = handled_failure(final, host) if self.handled else final
        return self.finals[host]

    def wait_ended(self, hosts: list[str], timeout: float = FINAL_WAIT) -> None:
        """Wait (at most ``timeout`` s) until the engines of ``hosts`` stopped, every host at once (after ``close``:
        their session's directory may then be removed)."""
        if hosts:
            self.caller.call(RAW, {h: raw_args(final_command(self.paths[h], timeout)) for h in hosts})

    def _ended_without(self, host: str, index: int, said: str) -> dict:
        """Group ``index``'s result of a session that stopped without leaving one: what the engine said about it,
        without events of an earlier group."""
        self.ended.add(host)
        final = dict(self.final(host))
        groups = (final.get("session") or {}).get("groups") or []
        if not groups or groups[-1].get("index") != index:
            final["events"] = []  # the events it holds are an earlier group's, recorded already
            final.pop("lifecycle_failed", None)
            if not final.get("unreachable"):
                final["failed"] = True
        if final.get("unreachable") or final.get("failed") or final.get("lifecycle_failed"):
            final.setdefault("msg", f"session: the host engine stopped before event group {index} ({said})")
            return final
        return {"failed": True, "msg": f"session: the host engine stopped before event group {index} ({said}): "
                                       f"{final.get('msg') or 'no result'}"}

    def _start_again(self, host: str) -> None:
        """A session started ahead of its batch that ended unused (nothing of it ran): a new one in its place."""
        self.adopted.discard(host)
        args = dict(self.args_by_host[host])
        session = dict(args["session"])
        session["name"] = f"{session['name']}-again"
        args["session"] = session
        self.args_by_host[host] = args
        self.paths[host] = posixpath.join(posixpath.dirname(self.paths[host]), session["name"])
        self.start([host])

    def results(self, index: int, hosts: list[str], label: str = "",
                on_results: Optional[Callable[[dict[str, dict]], None]] = None,
                hold: Optional[Callable[[str], bool]] = None) -> dict[str, dict]:
        """Say ``run`` at gate ``index`` (and at the host's earlier gates not said yet) and return each host's
        result of group ``index``, read from the host's session directory. ``on_results`` (if any) sees the
        results of the hosts whose group ran, as they come (HostCaller.call), before the slower hosts are done;
        ``hold`` (if any) holds each word, set up, until it may go (HostCaller.call): a host it refuses is told
        nothing, and its result is that failure."""
        out: dict[str, dict] = {}
        pending = []
        for host in hosts:
            failure = self._start_failure(host)
            if host in self.ended or failure is not None:
                out[host] = self._ended_without(host, index, "ended")
            else:
                pending.append(host)
        again: list[str] = []

        def arrived(raw: dict) -> None:
            ran = {}
            for host, host_raw in raw.items():
                said, data = read_gate_output(host_raw)
                if said == NO_START and host in self.futures and not self.futures[host].done():
                    again.append(host)  # still starting (a long push, a slow host): ask again, word unsaid
                    continue
                if said in (ENDED, GONE, NO_START) and host in self.adopted and self.next_gate[host] == 0:
                    self._start_again(host)  # it expired waiting for its batch: nothing of it ran
                    again.append(host)
                    continue
                if said == "result":
                    self.next_gate[host] = index + 1  # the word reached the gate; an abort goes to the next
                    self._signed([host])  # it waits at its next gate from about now
                    out[host] = ran[host] = handled_failure(data, host, self.progress) if self.handled else data
                elif said in (ENDED, GONE, NO_START):
                    out[host] = self._ended_without(host, index, said)
                else:
                    out[host] = data or {"failed": True, "msg": "session: no result"}
            if ran and on_results is not None:
                on_results(ran)

        with self._ticker(hosts, label):
            while pending:
                self._signed(pending)  # told to go on: no touch is due while its group runs
                # "run" at every gate from the host's next one up to this one: a host of the batch with nothing
                # before BlockTraffic is told to go on at gate 0 with its main group's word.
                self.caller.call(RAW, {h: raw_args(gate_command(
                    self.paths[h], self.next_gate[h], "run", True, self.start_limit,
                    more_gates=tuple(range(self.next_gate[h] + 1, index + 1)), result_of=index)) for h in pending},
                    on_results=arrived, hold=hold)
                pending = list(again)
                again.clear()
        return out

    def release(self) -> None:
        """Stop keeping the sessions alive: the task that adopts them does it from now on."""
        self._stop_keepalive.set()

    def close(self, reason: str, hosts: Optional[list[str]] = None) -> None:
        """Abort the sessions still waiting (of ``hosts``, all by default), at every gate they have left: they run
        nothing more. A session past its last gate is only finishing its run: nothing to abort. Nothing is waited
        for but the words said."""
        self._stop_keepalive.set()
        word = "abort " + " ".join(str(reason).split())[:300]
        waiting = [h for h in self._waiting() if self._start_failure(h) is None and (hosts is None or h in hosts)]
        if waiting:
            self.caller.call(RAW, {h: raw_args(gate_command(
                self.paths[h], self.next_gate[h], word, False, self.start_limit,
                more_gates=tuple(range(self.next_gate[h] + 1, self.last_gate[h] + 1)))) for h in waiting})
        for host in waiting:
            self.next_gate[host] = self.last_gate[host] + 1

    def _ticker(self, hosts: list[str], label: str):
        return _Ticker(self.progress, hosts, label, self._running_scripts)

    def _running_scripts(self, hosts: list[str]) -> dict[str, Optional[tuple[str, str]]]:
        """Each host's running hook (event, script), read from the tail of its scripts.log; None where none runs."""
        raw = self.caller.call(RAW, {h: raw_args(tail_command(scripts_log_path(self.args_by_host[h], DEFAULT_STATE_ROOT)))
                                     for h in hosts})
        return {h: running_script(str((raw.get(h) or {}).get("stdout") or "")) for h in hosts}


class _Ticker:
    """While a gate waits: after PROGRESS_AFTER seconds, then every PROGRESS_EVERY seconds, prints
    ``host: EVENT script running (N s)`` for each host with a hook running (read from its scripts.log), or
    ``host(s): <label> running (N s)`` when no script is seen."""

    def __init__(self, progress: Optional[Callable[[str], None]], hosts: list[str], label: str,
                 read: Optional[Callable[[list[str]], dict]] = None) -> None:
        self.progress, self.hosts, self.label, self.read = progress, hosts, label, read
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
        wait = PROGRESS_AFTER
        while not self.done.wait(wait):
            wait = PROGRESS_EVERY
            running: dict = {}
            if self.read is not None:
                try:
                    running = {h: r for h, r in self.read(self.hosts).items() if r}
                except Exception:  # pylint: disable=broad-except  # progress is best effort; the batch goes on
                    running = {}
            if self.done.is_set() or self.progress is None:
                return
            elapsed = int(time.monotonic() - self.started)
            for host, (event, script) in running.items():
                self.progress(f"{host}: {event} {script} running ({elapsed} s)")
            if not running:
                shown = ", ".join(self.hosts[:5]) + (f" and {len(self.hosts) - 5} more" if len(self.hosts) > 5 else "")
                self.progress(f"{shown}: {self.label} running ({elapsed} s)")
