# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A batch's host calls in one run of the host engine (a host session).

Between a batch's groups of lifecycle events the controller works on the load balancer (BlockTraffic,
AllowTraffic). Without a session every group is a module run of its own, and each one pays the module's
start on the host. In a session the engine runs the first group, then waits at a gate for the controller's
word before each next group: the controller's word and each group's result pass through a sealed directory
on the host, which a cheap shell command (no Python) writes and reads. See docs/inplace.md.

The directory, ``<deployment dir>/sessions/<name>`` (0700, root's), holds:

* ``pid``: the engine's process id and start time (the controller's command stops waiting when it is gone);
* ``result-N.json``: group N's result, as the module would have returned it;
* ``go-N``: the controller's word for group N: ``run``, or ``abort <reason>``;
* ``alive``: touched by the controller KEEPALIVE_EVERY seconds (and a few more) after its last sign of life to the
  session while the engine waits;
* ``final.json``: a detached engine's own result (the module's result, which its caller no longer waits for),
  written just before ``done``;
* ``done``: written when the engine stops, whatever the reason (the directory then stays until the
  deployment's directory is pruned);
* ``ready`` and ``wake``: two named pipes that only wake a waiter, never say anything (the files above do): the
  engine writes a line to ``ready`` after each result and at ``done``, so the controller's command blocks on it
  instead of polling (tens of hosts polling spawned thousands of processes a second on a shared machine); the
  controller writes one to ``wake`` after its word at a gate, so an engine waiting there goes on at once.

A detached session (``detach``) reports "started" to its caller as soon as its directory holds its pid, and goes
on without the connection: so a session can be started ahead of its batch (waiting at gate 0), by an earlier task.

A gate waits at most ``gate_timeout`` seconds after the controller's last sign of life: a controller that died
leaves no engine waiting for ever, and nothing after the gate runs. Runs on the hosts: stdlib only.
"""

from __future__ import annotations

import json
import os
import re
import select
import stat
import time

from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs as _fs
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import (
    SEALED_DIR_MODE, HostState, StateError, ensure_state_dir, read_text, state_uids,
)

SESSIONS_DIR = "sessions"
ALIVE = "alive"  # touched by the controller while it works between gates
KEEPALIVE_EVERY = 20.0  # the controller touches it this long after its last sign (a gate's timeout is well above)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RUN, ABORT, EXPIRED = "run", "abort", "expired"
FINAL = "final.json"
READY, WAKE = "ready", "wake"  # named pipes: the engine wakes the controller's command, the controller the engine
# A gate after the first is polled quickly at first (the controller's word usually comes within seconds), then
# gently.
_FAST_POLL, _SLOW_POLL, _FAST_FOR = 0.01, 0.1, 5.0


def process_start_ticks(pid: int | None = None) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), "" where /proc lacks it:
    with the pid it tells the engine from a later process that got the same pid."""
    try:
        with open(f"/proc/{pid or os.getpid()}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def validate_session_name(name) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StateError(f"session.name must be 1-64 letters, digits, '-' or '_', starting with a letter or digit; "
                         f"got {name!r}")
    return name


def session_dir(state: HostState, deployment_id: str, name: str) -> str:
    """Where the session ``name`` of a deployment keeps its files (the controller builds the same path)."""
    return os.path.join(state.deployment_dir(deployment_id), SESSIONS_DIR, validate_session_name(name))


def result_name(index: int) -> str:
    return f"result-{int(index)}.json"


def gate_name(index: int) -> str:
    return f"go-{int(index)}"


def detach(session: "HostSession") -> int:
    """Fork the engine off its connection. In the parent: the child's pid, once the child wrote it into the
    session's directory (or 0 when the child died first). In the child, which goes on with the session: -1; it
    has its own session id, no terminal, and /dev/null as stdin, stdout and stderr, so the connection that started
    it closes as soon as the parent answers."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        try:
            ready = os.read(read_end, 1)  # b"" (end of file) when the child died before it wrote its pid
            return pid if ready == b"1" else 0
        finally:
            os.close(read_end)
    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    try:
        session.write_pid()
        os.write(write_end, b"1")
    finally:
        os.close(write_end)
    return -1


class HostSession:
    """The engine's side of a session: open it, publish each group's result, wait at each gate, close it."""

    def __init__(self, state: HostState, deployment_id: str, name: str, gate_timeout: float,
                 clock=time.monotonic, sleep=time.sleep, wall=time.time) -> None:
        if not gate_timeout or gate_timeout <= 0:
            raise StateError(f"session.gate_timeout must be > 0 seconds, got {gate_timeout!r}")
        self.state = state
        self.path = session_dir(state, deployment_id, name)
        self.deployment_id = deployment_id
        self.gate_timeout = float(gate_timeout)
        self.clock, self.sleep, self.wall = clock, sleep, wall

    def _write(self, name: str, data: bytes) -> None:
        try:
            with _fs.dir_fd(self.path, state_uids()) as dfd:
                _fs.write_bytes_at(dfd, name, data)
        except _fs.UnsafePathError as exc:
            raise StateError(f"host state: {exc}") from None

    def open(self, write_pid: bool = True) -> None:
        """Create the sealed directory (a session of that name must not exist yet) and say who waits in it (a
        detached engine says it from the process that goes on: ``write_pid``)."""
        parent = os.path.dirname(self.path)
        # Missing directories on the way are made traversable only; the engine's first event seals the
        # deployment's directory as its scripts need.
        ensure_state_dir(parent, SEALED_DIR_MODE)
        try:
            with _fs.dir_fd(parent, state_uids()) as dfd:
                _fs.mkdir_at(dfd, os.path.basename(self.path), SEALED_DIR_MODE)
        except FileExistsError:
            raise StateError(f"session {os.path.basename(self.path)} of deployment {self.deployment_id} exists "
                             "already on this host (a session name is used once)") from None
        except _fs.UnsafePathError as exc:
            raise StateError(f"host state: {exc}") from None
        self._make_pipes()
        if write_pid:
            self.write_pid()

    def _make_pipes(self) -> None:
        """The two wake-up pipes (without them, both sides poll, as before they existed)."""
        try:
            with _fs.dir_fd(self.path, state_uids()) as dfd:
                for name in (READY, WAKE):
                    os.mkfifo(name, 0o600, dir_fd=dfd)
        except (OSError, _fs.UnsafePathError):
            pass

    def _open_pipe(self, name: str, flags: int) -> int | None:
        """A descriptor of the session's pipe ``name`` (None when it is not there, not a pipe, or, for a write
        end, nobody reads it)."""
        try:
            with _fs.dir_fd(self.path, state_uids()) as dfd:
                fd = os.open(name, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except (OSError, _fs.UnsafePathError):
            return None  # e.g. ENXIO: no reader
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def _wake_reader(self) -> None:
        """Wake the controller's command that waits for a result (nobody waiting: nothing happens)."""
        fd = self._open_pipe(READY, os.O_WRONLY)
        if fd is None:
            return
        try:
            os.write(fd, b"\n")
        except OSError:
            pass  # a full pipe (EAGAIN) wakes the reader anyway
        finally:
            os.close(fd)

    def write_pid(self) -> None:
        self._write("pid", f"{os.getpid()} {process_start_ticks()}\n".encode())

    def publish_final(self, result: dict) -> None:
        """A detached engine's own result (its caller has gone), read by the controller once ``done`` is there."""
        self._write(FINAL, (json.dumps(result, sort_keys=True, default=str) + "\n").encode("utf-8"))

    def publish(self, index: int, result: dict) -> None:
        """Group ``index``'s result, for the controller's command that waits for it (written atomically)."""
        self._write(result_name(index), (json.dumps(result, sort_keys=True, default=str) + "\n").encode("utf-8"))
        self._wake_reader()

    def _refreshed(self) -> float:
        """When the controller last said it is still working (``alive``'s mtime, as a wall-clock time), or 0."""
        try:
            return os.stat(os.path.join(self.path, ALIVE), follow_symlinks=False).st_mtime
        except OSError:
            return 0.0

    def wait_gate(self, index: int) -> tuple[str, str]:
        """The controller's word for group ``index``: (``run``, ""), (``abort``, reason) or (``expired``, why).

        It expires ``gate_timeout`` seconds after the controller's last sign of life: the gate's start, or its
        refresh of ``alive`` (KEEPALIVE_EVERY seconds or a little more after its last sign, while it waits for a load
        balancer or other hosts)."""
        started, started_wall = self.clock(), self.wall()
        path = os.path.join(self.path, gate_name(index))
        # Gate 0 is where a session started ahead waits for its batch, often for a whole batch: gently. Tens of
        # engines polling quickly there would take the CPU the running batch needs. The controller's line on the
        # wake pipe ends any of these naps at once (a test's own clock and sleep keep to the naps).
        fast_for = 0.0 if index == 0 else _FAST_FOR
        wake = self._open_pipe(WAKE, os.O_RDWR) if self.sleep is time.sleep else None
        try:
            while True:
                text = read_text(path)
                if text is not None:
                    word, _sep, reason = text.strip().partition(" ")
                    if word == RUN:
                        return RUN, ""
                    return ABORT, reason.strip() or (f"the controller said {word!r}" if word != ABORT else "")
                now = self.clock()
                quiet = min(now - started, self.wall() - max(started_wall, self._refreshed()))
                if quiet >= self.gate_timeout:
                    return EXPIRED, (f"no word from the controller for {self.gate_timeout:g} s before event group "
                                     f"{index} (it stopped or died): the rest of the batch did not run here")
                nap = min(_FAST_POLL if now - started < fast_for else _SLOW_POLL, self.gate_timeout - quiet)
                if wake is None:
                    self.sleep(nap)
                elif select.select([wake], [], [], nap)[0]:
                    _drain(wake)
        finally:
            if wake is not None:
                os.close(wake)

    def close(self) -> None:
        """Say the engine stopped: the controller's command waiting for a result reads it. The directory stays (a
        few bytes) until the deployment's directory is pruned, so a late reader still finds ``done``."""
        try:
            self._write("done", b"done\n")
        except (OSError, StateError):
            pass  # the controller's command sees the engine's pid gone instead
        self._wake_reader()


def _drain(fd: int) -> None:
    """Read what is in a wake pipe (lines that only woke the reader)."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass  # EAGAIN: empty
