# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SSH fleet: hosts that are Linux namespaces on a bridge, each with its own sshd.

Each host has its own network namespace (``rw-<world>-<name>``, address on the world's /24, a veth
on the bridge ``rw-<world>-br`` which holds the subnet's .1), its own PID, UTS and mount namespaces
(private tmpfs over :data:`PRIVATE_DIRS`, private /run and /etc/hosts) and an sshd inside them, so
everything a task or hook starts stays on that host. Hosts share the rest of the root filesystem.
Every process is tracked by PID + start time and stopped by PID.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.proc import HarnessError, ProcRef, run, stop

PRIVATE_DIRS = ["/srv", "/var/www", "/opt/app", "/var/lib/rollwright", "/var/log/rollwright", "/run"]
HOSTINIT = Path(__file__).resolve().parent / "hostinit.py"
SYSTEM_PYTHON = "/usr/bin/python3"
APP_USER = "rwapp"
FIRST_HOST_OCTET = 11
ROOT_DOTFILES = [".bashrc", ".profile", ".bash_profile", ".bash_login"]


@dataclass
class Host:
    """One fleet host. ``init`` is the host's PID 1 seen from the root namespace."""

    name: str
    address: str
    index: int
    netns: str
    veth: str
    instance_id: str | None = None
    init: dict[str, Any] | None = None
    launcher: dict[str, Any] | None = None

    def procs(self) -> list[ProcRef]:
        return [ProcRef.from_json(p) for p in (self.init, self.launcher) if p]


@dataclass
class FleetState:
    world_id: str
    dir: str
    subnet: str
    bridge: str
    next_index: int = 1
    hosts: list[Host] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FleetState":
        data = dict(data)
        data["hosts"] = [Host(**h) for h in data.get("hosts", [])]
        return cls(**data)


def ensure_app_user() -> None:
    """Create the non-root user ``rwapp`` for runas tests (idempotent)."""
    try:
        pwd.getpwnam(APP_USER)
    except KeyError:
        proc = run(["useradd", "--create-home", "--shell", "/bin/bash", APP_USER], check=False)
        if proc.returncode not in (0, 9):  # 9: exists (a concurrent `up` made it)
            raise HarnessError(f"useradd {APP_USER} failed: {proc.stderr.strip()}")


class Fleet:
    """The hosts of one world. State lives in the caller's dict (``state``); call ``save`` hooks."""

    def __init__(self, state: FleetState, on_change: Any = None) -> None:
        self.state = state
        self._on_change = on_change or (lambda: None)

    # -- paths -------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return Path(self.state.dir)

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    @property
    def key_path(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.state.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def hosts(self) -> list[Host]:
        return list(self.state.hosts)

    def host(self, name: str) -> Host:
        for h in self.state.hosts:
            if h.name == name:
                return h
        raise HarnessError(f"no host named {name!r} in world {self.state.world_id} (hosts: {[h.name for h in self.state.hosts]})")

    # -- set-up ------------------------------------------------------------------------------
    def create_base(self) -> None:
        """Keys, sshd run dir, app user, the bridge. Called once per world."""
        self.ssh_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "hosts").mkdir(exist_ok=True)
        for key in (self.key_path, self.ssh_dir / "ssh_host_ed25519_key"):
            if not key.exists():
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"rollwright-{self.state.world_id}", "-f", str(key)])
        (self.ssh_dir / "authorized_keys").write_text((self.ssh_dir / "id_ed25519.pub").read_text())
        (self.ssh_dir / "known_hosts").touch()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for path in PRIVATE_DIRS:
            Path(path).mkdir(parents=True, exist_ok=True)
        ensure_app_user()
        br = self.state.bridge
        run(["ip", "link", "add", br, "type", "bridge"])
        self._on_change()
        run(["ip", "addr", "add", f"{self.gateway}/{self.network.prefixlen}", "dev", br])
        run(["ip", "link", "set", br, "up"])

    def _sshd_config(self, host: Host) -> Path:
        path = self.dir / "hosts" / host.name / "sshd_config"
        path.write_text("\n".join([
            "Port 22",
            f"ListenAddress {host.address}",
            f"HostKey {self.ssh_dir / 'ssh_host_ed25519_key'}",
            f"AuthorizedKeysFile {self.ssh_dir / 'authorized_keys'}",
            "PidFile none",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 200",
            "MaxSessions 200",
            "LoginGraceTime 20",
            "ClientAliveInterval 5",
            "ClientAliveCountMax 3",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp internal-sftp",
            "",
        ]))
        return path

    def _check_address(self, address: str) -> str:
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError as exc:
            raise HarnessError(f"host address {address!r} is not an IPv4 address") from exc
        net = self.network
        if ip not in net or ip in (net.network_address, net.broadcast_address, net.network_address + 1):
            raise HarnessError(f"host address {address} must be a usable address of {net} other than the bridge's {self.gateway}")
        if any(h.address == str(ip) for h in self.state.hosts):
            raise HarnessError(f"address {address} is already used by a host of this world")
        return str(ip)

    def next_free_address(self, count: int = 1) -> list[str]:
        used = {h.address for h in self.state.hosts}
        out = []
        for octet in range(FIRST_HOST_OCTET, self.network.num_addresses - 1):
            candidate = str(self.network.network_address + octet)
            if candidate not in used:
                out.append(candidate)
                if len(out) == count:
                    return out
        raise HarnessError(f"no free address left in {self.network}")

    def add_hosts(self, addresses: list[str], names: list[str] | None = None, timeout: float = 15.0) -> list[Host]:
        """Create hosts at the given addresses (names default to host<index>), wait for their sshd."""
        addresses = [self._check_address(a) for a in addresses]
        if len(set(addresses)) != len(addresses):
            raise HarnessError(f"duplicate addresses in {addresses}")
        wid = self.state.world_id
        new: list[Host] = []
        for i, address in enumerate(addresses):
            index = self.state.next_index
            self.state.next_index += 1
            name = names[i] if names else f"host{index}"
            if any(h.name == name for h in self.state.hosts):
                raise HarnessError(f"a host named {name!r} already exists")
            host = Host(name=name, address=address, index=index, netns=f"rw-{wid}-{name}", veth=f"rw-{wid}-{index}")
            self.state.hosts.append(host)
            new.append(host)
        self._on_change()
        batch = []
        for h in new:
            batch += [
                f"netns add {h.netns}",
                f"link add {h.veth} type veth peer name eth0 netns {h.netns}",
                f"link set {h.veth} master {self.state.bridge}",
                f"link set {h.veth} up",
            ]
        run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")
        for h in new:
            run(["ip", "-n", h.netns, "-batch", "-"], input="\n".join([
                f"addr add {h.address}/{self.network.prefixlen} dev eth0",
                "link set eth0 up",
                "link set lo up",
                f"route add default via {self.gateway}",
            ]) + "\n")
        launchers = {}
        for h in new:
            hdir = self.dir / "hosts" / h.name
            hdir.mkdir(parents=True, exist_ok=True)
            (hdir / "etc_hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{h.address}\t{h.name}\n")
            rc = hdir / "root_shellrc"
            rc.write_text("# a fleet host's root shell start-up file (the controller's is not used)\n")
            cfg = {"name": h.name, "private_dirs": PRIVATE_DIRS, "sshd_config": str(self._sshd_config(h)),
                   "hosts_file": str(hdir / "etc_hosts"), "dotfiles": {f"/root/{f}": str(rc) for f in ROOT_DOTFILES}}
            (hdir / "host.json").write_text(json.dumps(cfg, indent=2))
            with open(hdir / "host.log", "ab") as log:
                child = subprocess.Popen(
                    ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--propagation", "private", "--uts", "--pid",
                     "--fork", "--mount-proc", "--kill-child=SIGKILL", SYSTEM_PYTHON, "-I", str(HOSTINIT), str(hdir / "host.json")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )
            launchers[h.name] = child
            h.launcher = ProcRef.of(child.pid).to_json()
        self._on_change()
        self._wait_up(new, launchers, timeout)
        self._on_change()
        return new

    def add_host(self, address: str, name: str | None = None, instance_id: str | None = None) -> Host:
        """Add one host at `address` (in the world's subnet) to the live world."""
        host = self.add_hosts([address], [name] if name else None)[0]
        host.instance_id = instance_id
        self._on_change()
        return host

    def _wait_up(self, hosts: list[Host], launchers: dict[str, subprocess.Popen], timeout: float) -> None:
        pending = {h.name: h for h in hosts}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for name, h in list(pending.items()):
                child = launchers[name]
                if child.poll() is not None:
                    log = (self.dir / "hosts" / name / "host.log").read_text(errors="replace")[-1500:]
                    raise HarnessError(f"host {name} ({h.address}) exited during start-up (rc={child.returncode}); host.log:\n{log}")
                if h.init is None:
                    init = _child_of(child.pid)
                    if init is not None:
                        h.init = ProcRef.of(init).to_json()
                if h.init is not None and _port_open(h.address, 22):
                    del pending[name]
            if pending:
                time.sleep(0.02)
        if pending:
            names = ", ".join(f"{n} ({h.address})" for n, h in pending.items())
            raise HarnessError(f"sshd did not come up within {timeout}s on: {names}; see {self.dir}/hosts/<name>/host.log")
        for child in launchers.values():
            # The launchers are our children: reap them in the background when their host ends.
            import threading

            threading.Thread(target=child.wait, daemon=True).start()

    # -- tear-down ---------------------------------------------------------------------------
    def remove_host(self, name: str) -> None:
        """Stop a host (every process in it), delete its namespace and link; forget it."""
        host = self.host(name)
        _destroy_host(host)
        self.state.hosts = [h for h in self.state.hosts if h.name != name]
        self._on_change()

    def teardown(self) -> list[str]:
        """Remove every host and the bridge. Returns problems (empty when clean). Idempotent."""
        problems: list[str] = []
        for h in list(self.state.hosts):
            try:
                _destroy_host(h)
            except HarnessError as exc:
                problems.append(str(exc))
        if _link_exists(self.state.bridge):
            proc = run(["ip", "link", "del", self.state.bridge], check=False)
            if proc.returncode != 0 and _link_exists(self.state.bridge):
                problems.append(f"could not delete bridge {self.state.bridge}: {proc.stderr.strip()}")
        return problems

    # -- operating on live hosts -------------------------------------------------------------
    def host_pids(self, name: str) -> list[int]:
        """Root-namespace PIDs of every process running on the host (its PID namespace)."""
        host = self.host(name)
        init = ProcRef.from_json(host.init) if host.init else None
        if init is None or not init.alive():
            return []
        return _pids_in_pidns(init.pid)

    def sshd_pids(self, name: str) -> list[int]:
        return [p for p in self.host_pids(name) if _comm(p) == "sshd"]

    def kill_sshd(self, name: str) -> None:
        """Kill every sshd process of the host (listener and sessions): it becomes unreachable."""
        for pid in self.sshd_pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.sshd_pids(name) and time.monotonic() < deadline:
            time.sleep(0.02)

    def start_sshd(self, name: str, timeout: float = 10.0) -> None:
        """Start the host's sshd again (after kill_sshd) and wait until it listens."""
        host = self.host(name)
        if not host.init or not ProcRef.from_json(host.init).signal(signal.SIGUSR1):
            raise HarnessError(f"host {name} is not running")
        deadline = time.monotonic() + timeout
        while not _port_open(host.address, 22):
            if time.monotonic() > deadline:
                raise HarnessError(f"sshd on {name} did not come back within {timeout}s")
            time.sleep(0.02)

    def exec(self, name: str, argv: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the host's namespaces (no SSH involved)."""
        host = self.host(name)
        if not host.init or not ProcRef.from_json(host.init).alive():
            raise HarnessError(f"host {name} is not running")
        pid = str(ProcRef.from_json(host.init).pid)
        return run(["nsenter", "-t", pid, "-n", "-m", "-u", "-p", "--"] + argv, check=check, timeout=timeout)


def _destroy_host(host: Host) -> None:
    stop(host.procs(), grace=1.0)
    if _netns_exists(host.netns):
        # Processes still inside the network namespace (none expected): kill them by PID.
        pids = run(["ip", "netns", "pids", host.netns], check=False).stdout.split()
        stop([ProcRef.of(int(p)) for p in pids if p.isdigit()], grace=0.5)
        proc = run(["ip", "netns", "del", host.netns], check=False)
        if proc.returncode != 0 and _netns_exists(host.netns):
            raise HarnessError(f"could not delete netns {host.netns}: {proc.stderr.strip()}")
    if _link_exists(host.veth):
        run(["ip", "link", "del", host.veth], check=False)


def _child_of(pid: int) -> int | None:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return int(kids[0]) if kids else None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pids_in_pidns(init_pid: int) -> list[int]:
    try:
        target = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == target:
                out.append(int(entry))
        except OSError:
            continue
    return sorted(out)


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.2):
            return True
    except OSError:
        return False


def netns_list() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists() or name in netns_list()


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def rw_links() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if n.startswith("rw-"))
    except OSError:
        return []


__all__ = ["Fleet", "FleetState", "Host", "PRIVATE_DIRS", "APP_USER", "ensure_app_user", "netns_list", "rw_links"]
