# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the scripts of one lifecycle event on a host, the way the CodeDeploy agent does, minus its flaws.

Runs on the hosts: stdlib only.

Per script, in appspec order:

- ``location`` is relative to the revision root (it may not leave it); a missing script fails the
  event naming it; a script without any execute bit is made executable (``chmod +x``, as the agent).
- The script is executed directly (its shebang decides the interpreter). A file without a shebang
  (``ENOEXEC``) is run with ``/bin/sh``, which is what the agent's Ruby ``popen3`` and ``su -c`` do.
- Environment: a fixed base (PATH, LANG, HOME, USER, LOGNAME, SHELL of the user the script runs
  as) plus LIFECYCLE_EVENT, DEPLOYMENT_ID, APPLICATION_NAME, DEPLOYMENT_GROUP_NAME,
  DEPLOYMENT_GROUP_ID and, for S3 revisions, BUNDLE_BUCKET, BUNDLE_KEY, BUNDLE_VERSION, BUNDLE_ETAG.
  Nothing else from the caller's environment leaks in.
- ``runas``: the child switches to the user with setgid + initgroups + setuid (``subprocess``'s
  ``user``/``group``/``extra_groups``) instead of the agent's ``su <user> -c``: no password, no
  PAM, no login shell needed (users with ``/usr/sbin/nologin`` work), and the script stays our direct
  child so its process group can be signalled. Needs root unless runas is the current user.
- cwd is the revision root; the script gets its own session and process group; stdin is
  /dev/null.
- stdout and stderr are appended to the deployment's ``logs/scripts.log`` (a FILE, not a pipe), after
  a header line ``<timestamp> [<event>] Script - <location>``. A background child that keeps its
  output open therefore never blocks the hook (the agent hangs until the timeout).
- We wait for the script's own process only. At its timeout everything the script started gets
  SIGTERM, then, after ``grace`` seconds (default 30) if anything is still alive, SIGKILL: its process
  group, every descendant, and descendants that left it with ``setsid`` (the engine makes itself a child
  subreaper with ``prctl(PR_SET_CHILD_SUBREAPER)``, so orphans of the script are re-parented to it
  rather than to init, and are found by walking ``/proc``). Background children of a script that
  finished in time are left running (an ApplicationStart may start a daemon).
- The log is sealed (0600, opened without following symlinks) and keeps everything. A non-zero exit
  (or a signal) fails the event; only then does the result carry the last 40 lines / 4 KiB of this
  script's output, after a redaction pass (``redact.redact_text``), or nothing with ``output="none"``.
"""

from __future__ import annotations

import errno
import os
import pwd
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError
from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs as _fs
from ansible_collections.rollwright.deploy.plugins.module_utils.redact import redact_text

DEFAULT_TIMEOUT = 3600
DEFAULT_GRACE = 30
TAIL_LINES = 40
TAIL_BYTES = 4096
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_ON_FAILURE = "failure"
OUTPUT_NONE = "none"
OUTPUT_CHOICES = (OUTPUT_ON_FAILURE, OUTPUT_NONE)
LOG_MODE = 0o600
PR_SET_CHILD_SUBREAPER = 36


class HookError(RollwrightError):
    """A script cannot be started (missing, outside the revision, unknown runas user)."""


@dataclass
class HookContext:
    """What every script of a deployment is told about it."""

    deployment_id: str
    application: str
    deployment_group: str
    deployment_group_id: str | None = None
    revision: dict | None = None  # {source: s3|local, bucket, key, version, etag, ...}


@dataclass
class ScriptResult:
    location: str
    path: str
    exit_code: int | None
    duration: float
    timed_out: bool = False
    killed: bool = False
    output_tail: str = ""
    log_file: str = ""
    runas: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and not self.timed_out and self.exit_code == 0

    def describe_failure(self) -> str:
        who = f" run as user {self.runas}" if self.runas else ""
        if self.error:
            return self.error
        if self.timed_out:
            how = "SIGKILLed after the grace period" if self.killed else "terminated with SIGTERM"
            return f"script {self.location}{who} did not finish within its timeout of {self.timeout:g} s and was {how}"
        if self.exit_code is not None and self.exit_code < 0:
            try:
                name = signal.Signals(-self.exit_code).name
            except ValueError:
                name = str(-self.exit_code)
            return f"script {self.location}{who} was killed by signal {name}"
        return f"script {self.location}{who} failed with exit code {self.exit_code}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EventResult:
    name: str
    status: str  # Succeeded | Failed | Skipped
    start: str | None = None
    end: str | None = None
    duration: float = 0.0
    scripts: list = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["scripts"] = [s.to_dict() if isinstance(s, ScriptResult) else s for s in self.scripts]
        return data


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def event_summary(name: str, status: str, message: str = "", **extra) -> dict:
    """The result of an event that ran no script (nothing to do, skipped, or failed before any script ran)."""
    data = EventResult(name=name, status=status, start=now_iso(), end=now_iso(), message=message).to_dict()
    data.update(extra)
    return data


def _user_env(runas: str | None) -> dict:
    try:
        entry = pwd.getpwnam(runas) if runas else pwd.getpwuid(os.geteuid())
    except KeyError as exc:
        raise HookError(f"runas: no user named {runas!r} on this host") from exc
    return {"HOME": entry.pw_dir or "/", "USER": entry.pw_name, "LOGNAME": entry.pw_name,
            "SHELL": entry.pw_shell or "/bin/sh"}


def build_env(event: str, context: HookContext, runas: str | None = None) -> dict:
    """The environment of a hook script (see the module docstring)."""
    env = {"PATH": BASE_PATH, "LANG": os.environ.get("LANG") or "C.UTF-8"}
    if os.environ.get("TZ"):
        env["TZ"] = os.environ["TZ"]
    env.update(_user_env(runas))
    env.update({
        "LIFECYCLE_EVENT": event,
        "DEPLOYMENT_ID": context.deployment_id,
        "APPLICATION_NAME": context.application,
        "DEPLOYMENT_GROUP_NAME": context.deployment_group,
        "DEPLOYMENT_GROUP_ID": context.deployment_group_id or context.deployment_group,
    })
    revision = context.revision or {}
    if (revision.get("source") or "").lower() == "s3":
        for var, key in (("BUNDLE_BUCKET", "bucket"), ("BUNDLE_KEY", "key"), ("BUNDLE_VERSION", "version"),
                         ("BUNDLE_ETAG", "etag")):
            value = revision.get(key)
            env[var] = "" if value is None else str(value)
    return env


def script_path(root: str, location: str) -> str:
    root = os.path.normpath(root)
    path = os.path.normpath(os.path.join(root, (location or "").lstrip("/")))
    if not location or (path != root and not path.startswith(root + os.sep)) or path == root:
        raise HookError(f"hook script location {location!r} must be a file path inside the revision")
    return path


def _tail(data: bytes) -> str:
    data = data[-TAIL_BYTES:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    return b"\n".join(lines[-TAIL_LINES:]).decode("utf-8", "replace")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def open_log(log_file: str) -> int:
    """An append descriptor on the sealed log: 0600, in a directory reached without following symlinks
    (created 0700 when missing), never through a symlink or hard link at the log's own name."""
    uids = frozenset({0, os.geteuid()})
    with _fs.parent_dir(log_file, uids, create_mode=0o700) as (dfd, name):
        return _fs.open_append_at(dfd, name, LOG_MODE)


def _append(log_file: str, text: str) -> None:
    fd = open_log(log_file)
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# containment: find and kill everything a timed-out script started, setsid children included
# ---------------------------------------------------------------------------------------------

def become_subreaper() -> bool:
    """Make this process a child subreaper (orphaned descendants are re-parented to us, not to init)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _process_table(zombies: bool = False) -> dict:
    """pid -> (ppid, session, process group) of every live process visible in /proc (zombies only when asked)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if len(fields) < 4 or (fields[0] in ("Z", "X")) != zombies:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[3]), int(fields[2]))
    return table


def contained(root_pid: int, orphans_before: set) -> set:
    """Live processes belonging to the script ``root_pid``: its descendants, members of its session, and
    orphans re-parented to us (the subreaper) since it started."""
    me = os.getpid()
    table = _process_table()
    found = {root_pid} if root_pid in table else set()
    found |= {pid for pid, (ppid, sid, _pgrp) in table.items() if sid == root_pid
              or (ppid == me and pid not in orphans_before and pid != root_pid)}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _sid, _pgrp) in table.items():
            if ppid in found and pid not in found and pid != me:
                found.add(pid)
                grew = True
    found.discard(me)
    return found


def our_children() -> set:
    me = os.getpid()
    return {pid for pid, (ppid, _sid, _pgrp) in _process_table().items() if ppid == me}


def _signal_all(pids: set, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(orphans_before: set) -> None:
    """Collect our zombie children (re-parented orphans of the script) so they do not look alive."""
    me = os.getpid()
    for pid, (ppid, _sid, _pgrp) in _process_table(zombies=True).items():
        if ppid == me and pid not in orphans_before:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _group_has_live(pgid: int) -> bool:
    return any(pgrp == pgid for _ppid, _sid, pgrp in _process_table().values())


def run_script(location: str, root: str, *, event: str, env: dict, log_file: str,
               timeout: float = DEFAULT_TIMEOUT, grace: float = DEFAULT_GRACE, runas: str | None = None,
               output: str = OUTPUT_ON_FAILURE) -> ScriptResult:
    """Run one hook script; never raises for a script failure (the result says what happened)."""
    timeout = float(timeout or DEFAULT_TIMEOUT)
    result = ScriptResult(location=location, path="", exit_code=None, duration=0.0, log_file=log_file,
                          runas=runas, timeout=timeout)
    prepared = _prepare(location, root, event, env, log_file, runas, result)
    if prepared is None:
        return result
    path, env, kwargs = prepared
    become_subreaper()
    orphans_before = our_children()
    log_fd = open_log(log_file)
    try:
        offset = os.lseek(log_fd, 0, os.SEEK_END)
        started = time.monotonic()
        proc = None
        for argv in ([path], ["/bin/sh", path]):
            try:
                proc = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_fd,
                                        stderr=subprocess.STDOUT, close_fds=True, start_new_session=True, **kwargs)
                break
            except OSError as exc:
                if exc.errno == errno.ENOEXEC and argv[0] == path:
                    continue  # no shebang: the agent's Ruby runs it with /bin/sh
                result.error = f"script {location} could not be started: {exc.strerror or exc}"
                break
        if proc is None:
            result.duration = round(time.monotonic() - started, 3)
            os.write(log_fd, f"{now_iso()} [{event}] {result.error}\n".encode())
            return result
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            result.timed_out = True
            result.killed = _stop_everything(proc, orphans_before, grace)
        result.duration = round(time.monotonic() - started, 3)
        result.exit_code = proc.returncode
        if not result.succeeded and output != OUTPUT_NONE:
            end = os.lseek(log_fd, 0, os.SEEK_END)
            start = max(offset, end - TAIL_BYTES)
            result.output_tail = redact_text(_tail(os.pread(log_fd, end - start, start)))
        outcome = "succeeded" if result.succeeded else result.describe_failure()
        os.write(log_fd, f"{now_iso()} [{event}] Script - {location}: {outcome} ({result.duration:.3f} s)\n".encode())
    finally:
        os.close(log_fd)
    return result


def _prepare(location: str, root: str, event: str, env: dict, log_file: str, runas: str | None,
             result: ScriptResult) -> tuple[str, dict, dict] | None:
    """Check the script and its runas user before anything starts: (path, environment, Popen user arguments),
    or None with ``result.error`` set."""
    try:
        path = script_path(root, location)
    except HookError as exc:
        result.error = str(exc)
        return None
    result.path = path
    _append(log_file, f"{now_iso()} [{event}] Script - {location}" + (f" (runas {runas})" if runas else "") + "\n")
    if not os.path.isfile(path):
        result.error = f"script {location} does not exist at {path}" if not os.path.lexists(path) else \
            f"script {location} at {path} is not a regular file"
        _append(log_file, f"{now_iso()} [{event}] {result.error}\n")
        return None
    mode = os.stat(path).st_mode
    if not mode & 0o111:
        try:
            os.chmod(path, mode | 0o111)
        except OSError as exc:
            result.error = f"script {location} is not executable and could not be made executable: {exc.strerror}"
            return None
    kwargs = {}
    if runas:
        try:
            entry = pwd.getpwnam(runas)
        except KeyError:
            result.error = f"script {location}: runas user {runas!r} does not exist on this host"
            _append(log_file, f"{now_iso()} [{event}] {result.error}\n")
            return None
        if entry.pw_uid != os.geteuid():
            if os.geteuid() != 0:
                result.error = f"script {location}: runas {runas!r} needs root on the host (connect or become as root)"
                return None
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid,
                      "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid)}
    try:
        env = dict(env, **_user_env(runas))
    except HookError as exc:
        result.error = str(exc)
        return None
    return path, env, kwargs


def _stop_everything(proc: subprocess.Popen, orphans_before: set, grace: float) -> bool:
    """SIGTERM the timed-out script and everything it started; SIGKILL what is left after ``grace`` seconds.
    Returns True when SIGKILL was needed."""
    pgid = proc.pid  # start_new_session: the script leads its own process group
    targets = contained(proc.pid, orphans_before)
    _signal_group(pgid, signal.SIGTERM)
    _signal_all(targets, signal.SIGTERM)
    deadline = time.monotonic() + max(0.0, float(grace))
    while time.monotonic() < deadline:
        proc.poll()
        _reap(orphans_before)
        targets = contained(proc.pid, orphans_before)
        if proc.returncode is not None and not targets and not _group_has_live(pgid):
            return False
        time.sleep(0.05)
    killed = False
    for _round in range(20):  # a process may fork while we look: repeat until nothing is left
        left = contained(proc.pid, orphans_before)
        if proc.poll() is None:
            left.add(proc.pid)
        if not left and not _group_has_live(pgid):
            break
        killed = True
        _signal_group(pgid, signal.SIGKILL)
        _signal_all(left, signal.SIGKILL)
        time.sleep(0.02)
        _reap(orphans_before)
    proc.wait()
    _reap(orphans_before)
    return killed


def run_event(event: str, hooks: list, root: str, context: HookContext, log_file: str,
              grace: float = DEFAULT_GRACE, output: str = OUTPUT_ON_FAILURE) -> EventResult:
    """Run the scripts of one event in order; stop at the first failing script."""
    result = EventResult(name=event, status="Succeeded", start=now_iso())
    started = time.monotonic()
    hooks = list(hooks or [])
    if not hooks:
        result.end = now_iso()
        result.message = "no scripts for this event"
        return result
    _append(log_file, f"{now_iso()} LifecycleEvent - {event}\n")
    for hook in hooks:
        runas = hook.get("runas") or None
        try:
            env = build_env(event, context, runas=None)
        except HookError as exc:  # pragma: no cover - the current user always exists
            env = {}
            result.message = str(exc)
        script = run_script(hook.get("location") or "", root, event=event, env=env, log_file=log_file,
                            timeout=hook.get("timeout") or DEFAULT_TIMEOUT, grace=grace, runas=runas, output=output)
        result.scripts.append(script)
        if not script.succeeded:
            result.status = "Failed"
            result.message = script.describe_failure()
            break
    result.end = now_iso()
    result.duration = round(time.monotonic() - started, 3)
    if result.status == "Succeeded":
        result.message = f"{len(result.scripts)} script(s) succeeded"
    return result
