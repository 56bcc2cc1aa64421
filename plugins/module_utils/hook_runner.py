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
- We wait for the script's own process only. At its timeout the whole process group gets SIGTERM,
  then, after ``grace`` seconds (default 30) if anything in the group is still alive, SIGKILL.
- A non-zero exit (or a signal) fails the event; the result carries the last 40 lines / 4 KiB of
  this script's output and the log file path.
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

DEFAULT_TIMEOUT = 3600
DEFAULT_GRACE = 30
TAIL_LINES = 40
TAIL_BYTES = 4096
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HookError(Exception):
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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _append(log_file: str, text: str) -> None:
    with open(log_file, "ab") as handle:
        handle.write(text.encode("utf-8", "replace"))


def run_script(location: str, root: str, *, event: str, env: dict, log_file: str,
               timeout: float = DEFAULT_TIMEOUT, grace: float = DEFAULT_GRACE, runas: str | None = None) -> ScriptResult:
    """Run one hook script; never raises for a script failure (the result says what happened)."""
    timeout = float(timeout or DEFAULT_TIMEOUT)
    result = ScriptResult(location=location, path="", exit_code=None, duration=0.0, log_file=log_file,
                          runas=runas, timeout=timeout)
    try:
        path = script_path(root, location)
    except HookError as exc:
        result.error = str(exc)
        return result
    result.path = path
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    _append(log_file, f"{now_iso()} [{event}] Script - {location}" + (f" (runas {runas})" if runas else "") + "\n")
    if not os.path.isfile(path):
        result.error = f"script {location} does not exist at {path}" if not os.path.lexists(path) else \
            f"script {location} at {path} is not a regular file"
        _append(log_file, f"{now_iso()} [{event}] {result.error}\n")
        return result
    mode = os.stat(path).st_mode
    if not mode & 0o111:
        try:
            os.chmod(path, mode | 0o111)
        except OSError as exc:
            result.error = f"script {location} is not executable and could not be made executable: {exc.strerror}"
            return result
    kwargs = {}
    if runas:
        try:
            entry = pwd.getpwnam(runas)
        except KeyError:
            result.error = f"script {location}: runas user {runas!r} does not exist on this host"
            _append(log_file, f"{now_iso()} [{event}] {result.error}\n")
            return result
        if entry.pw_uid != os.geteuid():
            if os.geteuid() != 0:
                result.error = f"script {location}: runas {runas!r} needs root on the host (connect or become as root)"
                return result
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid,
                      "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid)}
    try:
        env = dict(env, **_user_env(runas))
    except HookError as exc:
        result.error = str(exc)
        return result

    with open(log_file, "ab") as out:
        out.flush()
        offset = out.tell()
        started = time.monotonic()
        proc = None
        for argv in ([path], ["/bin/sh", path]):
            try:
                proc = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, close_fds=True, start_new_session=True, **kwargs)
                break
            except OSError as exc:
                if exc.errno == errno.ENOEXEC and argv[0] == path:
                    continue  # no shebang: the agent's Ruby runs it with /bin/sh
                result.error = f"script {location} could not be started: {exc.strerror or exc}"
                break
    if proc is None:
        result.duration = round(time.monotonic() - started, 3)
        _append(log_file, f"{now_iso()} [{event}] {result.error}\n")
        return result

    pgid = proc.pid  # start_new_session: the script leads its own process group
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        result.timed_out = True
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, float(grace))
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                break
            time.sleep(0.05)
        if proc.poll() is None or _group_alive(pgid):
            result.killed = True
            _signal_group(pgid, signal.SIGKILL)
        proc.wait()
    result.duration = round(time.monotonic() - started, 3)
    result.exit_code = proc.returncode
    with open(log_file, "rb") as handle:
        handle.seek(offset)
        result.output_tail = _tail(handle.read())
    outcome = "succeeded" if result.succeeded else result.describe_failure()
    _append(log_file, f"{now_iso()} [{event}] Script - {location}: {outcome} ({result.duration:.3f} s)\n")
    return result


def run_event(event: str, hooks: list, root: str, context: HookContext, log_file: str,
              grace: float = DEFAULT_GRACE) -> EventResult:
    """Run the scripts of one event in order; stop at the first failing script."""
    result = EventResult(name=event, status="Succeeded", start=now_iso())
    started = time.monotonic()
    hooks = list(hooks or [])
    if not hooks:
        result.end = now_iso()
        result.message = "no scripts for this event"
        return result
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    _append(log_file, f"{now_iso()} LifecycleEvent - {event}\n")
    for hook in hooks:
        runas = hook.get("runas") or None
        try:
            env = build_env(event, context, runas=None)
        except HookError as exc:  # pragma: no cover - the current user always exists
            env = {}
            result.message = str(exc)
        script = run_script(hook.get("location") or "", root, event=event, env=env, log_file=log_file,
                            timeout=hook.get("timeout") or DEFAULT_TIMEOUT, grace=grace, runas=runas)
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
