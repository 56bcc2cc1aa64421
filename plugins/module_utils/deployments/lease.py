# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lease keeper and the controller process it watches (docs/operations.md, "The lease keeper").

A small detached process (own session, stdlib + our record store, no Ansible) started by a
deployment's first step, for every deployment type (deployments/session.py starts and stops it).
While the ansible-playbook process lives it renews the group lock every few seconds, so the lock's
ttl can be short; when that process dies (killed, cancelled by AWX, interrupted) it takes the lock
over by its token (fencing off orphaned steps), marks the deployment Stopped at once, leaves the
lock for recovery, and exits. It never touches a load balancer or an alias: it cannot know whether
a host stopped in the middle of its install is fit for traffic.

Also here: which process is the controller (pid and start time), whether it still runs, and the
guard with which an orphaned step stops (deployments/recovery.py asks :func:`controller_gone`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import (
    DEFAULT_LOCK_TTL,
    TERMINAL_STATUSES,
    DeploymentRecord,
    LockHeld,
    LockLost,
    RecordNotFound,
    RecordStore,
    now_iso,
)


def process_start(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = data.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, start: Optional[str]) -> bool:
    """The same process (pid and start time, so a recycled pid does not count) still runs, not a zombie."""
    if not pid or pid <= 1:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
    except OSError:
        if not os.path.isdir("/proc/self"):  # no procfs (not Linux): signal 0 only
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False
    fields = data.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return False
    return start is None or (len(fields) > 19 and fields[19] == str(start))


def _cmdline(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [p.decode(errors="replace") for p in fh.read().split(b"\0") if p]
    except OSError:
        return []


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().decode(errors="replace").rsplit(")", 1)[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def controller_pid() -> int:
    """The pid of the process this worker was forked from, as recorded at the fork (multiprocessing's parent, which
    is how Ansible forks its workers), else the parent now. Not ``os.getppid()`` when a step begins: a worker whose
    ansible-playbook was killed after forking it, but before the step read its parent, already has another parent
    (init, or a subreaper), and a guard built on that would never see the controller gone."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getppid()


def find_controller(pid: Optional[int] = None, depth: int = 6) -> tuple:
    """(pid, start) of the ansible-playbook process this worker belongs to.

    Ansible forks a worker per task from the ansible-playbook process, so that is normally the
    parent; the ancestors are searched for a command line naming ansible-playbook (or another
    ``ansible*`` entry point) in case a wrapper sits in between. Falls back to the parent.
    """
    first = controller_pid() if pid is None else pid
    current = first
    for _level in range(depth):
        if current <= 1:
            break
        args = _cmdline(current)
        if any(os.path.basename(a).startswith("ansible") for a in args[:3]):
            return current, process_start(current)
        current = _parent(current)
    return first, process_start(first)


def boot_id() -> Optional[str]:
    """This boot of this machine (a pid and its start time are only comparable within one boot)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def controller_identity(pid: int, start: Optional[str]) -> dict:
    """What recovery needs to check the controller itself: machine, boot, pid and start time."""
    return {"host": socket.gethostname(), "boot_id": boot_id(), "pid": int(pid), "start": start}


def _recorded_controller(record: DeploymentRecord) -> Optional[dict]:
    ident = record.extra.get("controller")
    if not isinstance(ident, dict) or not ident.get("host") or not ident.get("boot_id"):
        return None
    try:
        pid = int(ident.get("pid"))
    except (TypeError, ValueError):
        return None
    return dict(ident, pid=pid) if pid > 1 and ident.get("start") is not None else None


def controller_gone(record: DeploymentRecord) -> Optional[str]:
    """Why the deployment's controller is known dead, when it ran on this machine (same host name
    and boot) and its process (pid AND start time, /proc/<pid>/stat) is gone; else None (unknown:
    another machine, or alive)."""
    ident = _recorded_controller(record)
    if ident is None or ident["host"] != socket.gethostname() or ident["boot_id"] != boot_id():
        return None
    if process_alive(ident["pid"], str(ident["start"])):
        return None
    return f"its controller (ansible-playbook pid {ident['pid']} on this machine) is gone"


def controller_elsewhere(record: DeploymentRecord) -> str:
    """A clause for a refusal: where the controller ran, when this machine cannot check it."""
    ident = _recorded_controller(record)
    if ident is None:
        return ""
    if ident["host"] != socket.gethostname() or ident["boot_id"] != boot_id():
        return (f". Its controller ran on {ident['host']} (pid {ident['pid']}): only there can recovery check the "
                "process itself; from here the lease rules apply")
    return f". Its controller, ansible-playbook pid {ident['pid']} on this machine, is still running"


def awaiting_recovery(record: DeploymentRecord) -> bool:
    """Stopped by the lease keeper when its controller died, and not recovered yet (hosts or alias may
    still be where the controller left them)."""
    return record.status == "Stopped" and bool(record.extra.get("interrupted")) and "recovery" not in record.extra


def recovery_hint(record: DeploymentRecord) -> str:
    """What is left to recover after a controller died, and the playbook that does it."""
    if record.deployment_type == "lambda":
        return (f"the alias may still split traffic: run the rollwright.deploy.lambda playbook with "
                f"-e rollwright_lambda_recover=true for {record.deployment_id}")
    if record.deployment_type == "blue_green_ec2":
        return (f"a replacement fleet may be half set up: run the rollwright.deploy.recover playbook for "
                f"{record.deployment_id}")
    return (f"hosts may be out of their load balancers: run the rollwright.deploy.recover playbook for "
            f"{record.deployment_id}")


@dataclass
class LeaseKeeper:
    """The loop of the detached lease-keeper process (testable: store and clocks are handed in)."""

    store: RecordStore
    lock: dict
    pid: int  # the controller (ansible-playbook) process and its start time
    start: Optional[str]
    interval: float = 10.0
    poll: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    alive: Callable[[int, Optional[str]], bool] = process_alive

    def __post_init__(self) -> None:
        self.lock = dict(self.lock)

    def controller_died(self) -> str:
        """Fence the dead controller's steps, mark the deployment Stopped, leave the lock for recovery.

        The lock is taken over by its token (a new token, same deployment): an orphaned controller
        step (Ansible's workers outlive a killed ansible-playbook) fails its next fencing check
        before it writes to AWS. Then the record is marked Stopped at once, so that a recovery
        started a moment later finds the deployment ended."""
        deployment_id = self.lock["deployment_id"]
        try:
            self.lock = self.store.take_over(
                self.lock["application"], self.lock["deployment_group"], deployment_id,
                owner=f"{self.lock.get('owner') or 'controller'} (controller died; held for recovery)",
                ttl=float(self.lock.get("ttl") or DEFAULT_LOCK_TTL), live=True, token=self.lock.get("token")).to_dict()
        except (LockLost, LockHeld, RecordNotFound):
            # released, taken over by recovery, or handed over (a blue/green deployment waiting for its
            # approval holds its lock without a process): not ours to touch
            return f"controller gone; the lock of {deployment_id} is no longer ours, left as it is"
        record = self.store.get(deployment_id)
        if record.status in TERMINAL_STATUSES:
            return f"controller gone; {deployment_id} already {record.status}"
        self.store.update_status(
            deployment_id, "Stopped",
            error=(f"the controller (ansible-playbook pid {self.pid}) died or was interrupted at {now_iso()}; "
                   f"{recovery_hint(record)}"))
        self.store.set_extra(deployment_id, "interrupted", {"time": now_iso(), "controller_pid": self.pid,
                                                            "noticed_by": "lease keeper"})
        return f"controller died; {deployment_id} marked Stopped, lock left for recovery"

    def run(self, max_seconds: Optional[float] = None) -> str:
        """Loop until the deployment ends (lock released or taken over) or its controller dies."""
        started = self.clock()
        last_beat = None
        errors = 0
        try:  # recovery on this machine checks the controller's process itself
            self.store.set_extra(self.lock["deployment_id"], "controller", controller_identity(self.pid, self.start))
        except Exception:  # pylint: disable=broad-except  # without it recovery follows the lease rules
            pass
        while True:
            if not self.alive(self.pid, self.start):
                return self.controller_died()
            now = self.clock()
            if max_seconds is not None and now - started > max_seconds:
                return "time limit"
            if last_beat is None or now - last_beat >= self.interval:
                try:
                    self.store.heartbeat(self.lock)
                    record = self.store.get(self.lock["deployment_id"])
                    errors = 0
                except LockLost:
                    return "lock released or taken over; done"
                except Exception:  # pylint: disable=broad-except  # transient store errors: retried at the next beat
                    errors += 1
                    if errors > 30:
                        return "the record store keeps failing; giving up"
                    record = None
                last_beat = now
                if record is not None and record.status in TERMINAL_STATUSES:
                    return f"deployment {record.status}; done"
            self.sleep(self.poll)


def step_marker(work_dir: str, deployment_id: str) -> str:
    """The file in which a running controller step leaves its pid (which step of a deployment runs, for
    a person looking at a stuck controller; the lease keeper no longer waits for it: fencing stops it)."""
    return os.path.join(work_dir, f"{deployment_id}.step")


def write_step_marker(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"pid": os.getpid(), "start": process_start(os.getpid())}, fh)
    os.replace(tmp, path)


def clear_step_marker(path: str) -> None:
    step = read_step_marker(path)
    if step and int(step.get("pid") or 0) == os.getpid():
        try:
            os.unlink(path)
        except OSError:
            pass


def read_step_marker(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def controller_guard(controller: Optional[int] = None) -> Callable[[], None]:
    """A guard for the engines: raises ControllerGone once this worker's parent is no longer the controller (by
    default the process it was forked from, see controller_pid)."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.errors import ControllerGone

    expected = controller_pid() if controller is None else controller

    def guard() -> None:
        if os.getppid() != expected:
            raise ControllerGone(f"the controller (ansible-playbook pid {expected}) died; this step stops here")

    return guard


def collections_root(path: Optional[str] = None) -> Optional[str]:
    """The directory that holds ``ansible_collections`` for this file (symlinks not resolved)."""
    path = os.path.abspath(path or __file__)
    parts = path.split(os.sep)
    for index in range(len(parts) - 1, 0, -1):
        if parts[index] == "ansible_collections":
            return os.sep.join(parts[:index]) or os.sep
    return None


def _import_root(work_dir: str) -> str:
    root = collections_root()
    if root:
        return root
    # Loaded from a resolved path (no ansible_collections in it): make a private link farm.
    collection = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    link_dir = os.path.join(work_dir, "pythonpath", "ansible_collections", "rollwright")
    os.makedirs(link_dir, exist_ok=True)
    link = os.path.join(link_dir, "deploy")
    if not os.path.islink(link):
        os.symlink(collection, link)
    return os.path.join(work_dir, "pythonpath")


# The keeper's configuration (AWS options with keys and session token, the lock token) is read from
# stdin, never from argv: any local user can read /proc/<pid>/cmdline.
_BOOT = ("import sys, json; sys.path.insert(0, sys.argv[1]); "
         "from ansible_collections.rollwright.deploy.plugins.module_utils.deployments.lease import lease_keeper_main; "
         "sys.exit(lease_keeper_main(json.load(sys.stdin)))")


def spawn_lease_keeper(record_options: dict, aws_options: dict, lock: dict, controller: tuple,
                       interval: float, work_dir: str, log_path: Optional[str] = None) -> dict:
    """Start the detached lease keeper (new session: a kill of ansible-playbook's process group spares
    it), its configuration written to its stdin. Returns ``{"pid", "start"}``."""
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    # The keeper only renews the lock: it sends no notifications, and their secrets stay off its command line.
    record_options = {k: v for k, v in record_options.items() if k != "notifications"}
    config = {"record": record_options, "aws": aws_options, "lock": lock, "controller_pid": controller[0],
              "controller_start": controller[1], "interval": interval}
    log = open(log_path or os.devnull, "ab")  # pylint: disable=consider-using-with
    try:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-c", _BOOT, _import_root(work_dir)],
            stdin=subprocess.PIPE, stdout=log, stderr=log, close_fds=True, start_new_session=True, cwd="/")
        with proc.stdin:  # a few KiB: fits the pipe, so this never blocks on the child
            proc.stdin.write(json.dumps(config).encode("utf-8"))
    finally:
        log.close()
    return {"pid": proc.pid, "start": process_start(proc.pid)}


def stop_lease_keeper(keeper: Optional[dict]) -> None:
    """Ask a lease keeper to exit now (it would anyway at its next beat once the lock is released)."""
    import signal

    if keeper and keeper.get("pid") and process_alive(int(keeper["pid"]), keeper.get("start")):
        try:
            os.kill(int(keeper["pid"]), signal.SIGTERM)
        except OSError:
            pass


def lease_keeper_main(config: dict) -> int:
    """Entry point of the detached process."""
    import signal

    from ansible_collections.rollwright.deploy.plugins.module_utils.records import open_store

    def _terminate(*_args):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C on the terminal is for ansible-playbook, not us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    record = dict(config.get("record") or {})
    backend = record.pop("backend", None) or "sqlite"
    client_factory = None
    if backend == "dynamodb":
        from ansible_collections.rollwright.deploy.plugins.module_utils.aws.client import aws_client_factory

        client_factory = aws_client_factory(config.get("aws") or {}).client
    store = open_store(backend, record, client_factory=client_factory)
    keeper = LeaseKeeper(store, config["lock"], int(config["controller_pid"]), config.get("controller_start"),
                         interval=float(config.get("interval") or 10.0))
    outcome = keeper.run()
    sys.stderr.write(f"{now_iso()} lease keeper for {config['lock'].get('deployment_id')}: {outcome}\n")
    return 0
