# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real HAProxy for tests and benchmarks: config, start/stop, a raw runtime-API client, and
helpers to run the in-place playbook against a test world behind it.

Nothing here uses rollwright's HAProxy code: the raw client (``admin``) talks to the stats socket
directly, so tests can check the adapter against HAProxy's own view.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def haproxy_available() -> bool:
    return os.path.exists(HAPROXY)


@dataclass
class HAProxy:
    """One running haproxy process (foreground, ``-db``) with an admin stats socket."""

    name: str
    dir: Path
    port: int  # frontend on 127.0.0.1
    socket: str
    backend: str
    servers: dict[str, str]  # server name -> "addr:port"
    tcp_admin_port: Optional[int] = None
    tcp_admin_bind: str = "127.0.0.1"
    proc: Optional[subprocess.Popen] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def config_path(self) -> Path:
        return self.dir / f"{self.name}.cfg"

    def admin(self, command: str) -> str:
        """Send one runtime-API command over the unix socket; return the raw answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.socket)
            s.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode()

    def stat(self) -> dict[str, dict[str, str]]:
        """``show stat`` rows of the backend's servers, by server name."""
        lines = self.admin("show stat").splitlines()
        header = lines[0][2:].split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line.strip()]
        return {r["svname"]: r for r in rows if r["pxname"] == self.backend and r["svname"] not in ("BACKEND",)}

    def status(self, server: str) -> str:
        return self.stat()[server]["status"]

    def statuses(self) -> dict[str, str]:
        return {name: row["status"] for name, row in self.stat().items()}

    def sessions(self, server: str) -> int:
        return int(self.stat()[server]["scur"] or 0)

    def set_state(self, server: str, state: str) -> None:
        out = self.admin(f"set server {self.backend}/{server} state {state}").strip()
        assert not out, out

    def wait_status(self, server: str, wanted: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.status(server) != wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {self.backend}/{server} is {self.status(server)!r}, not {wanted!r} "
                                     f"after {timeout}s")
            time.sleep(0.05)

    def instance_config(self, tcp: bool = False) -> dict[str, Any]:
        """The entry of rollwright_load_balancer.haproxy.instances for this process."""
        if tcp:
            assert self.tcp_admin_port, "started without tcp_admin=True"
            return {"name": self.name, "address": f"{self.tcp_admin_bind}:{self.tcp_admin_port}"}
        return {"name": self.name, "socket": self.socket}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop: finish sessions
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def render_config(name: str, socket_path: str, port: int, backend: str, servers: dict[str, str], check: bool = True,
                  inter_ms: int = 200, rise: int = 2, fall: int = 2, check_timeout_ms: int = 2000,
                  tcp_admin_port: Optional[int] = None,
                  tcp_admin_bind: str = "127.0.0.1",
                  http_check: bool = True, retries: int = 3, redispatch: bool = False,
                  server_options: Optional[dict[str, str]] = None) -> str:
    """An HAProxy configuration: one HTTP frontend on 127.0.0.1:port, one backend, admin socket(s)."""
    lines = [
        "global",
        f"    stats socket {socket_path} mode 600 level admin",
    ]
    if tcp_admin_port:
        lines.append(f"    stats socket ipv4@{tcp_admin_bind}:{tcp_admin_port} level admin")
    lines += [
        "    maxconn 2000",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        # without it a check's reply must come within `inter` (200 ms): on a loaded machine a busy
        # Python test server misses that twice and the last server in rotation goes DOWN (503s);
        # a stopped server still fails its check at once (connection refused)
        f"    timeout check {check_timeout_ms}ms",
        f"    retries {retries}",
    ]
    if redispatch:
        lines.append("    option redispatch")
    lines += [
        "",
        f"frontend {name}_fe",
        f"    bind 127.0.0.1:{port}",
        f"    default_backend {backend}",
        "",
        f"backend {backend}",
        "    balance roundrobin",
    ]
    if check and http_check:
        lines.append("    option httpchk GET /")
    for srv, addr in servers.items():
        opts = f" check inter {inter_ms}ms rise {rise} fall {fall}" if check else ""
        opts += " " + (server_options or {}).get(srv, "") if (server_options or {}).get(srv) else ""
        lines.append(f"    server {srv} {addr}{opts}")
    return "\n".join(lines) + "\n"


def start_haproxy(dir: str | os.PathLike, servers: dict[str, str], name: str = "lb1", backend: str = "app",
                  port: Optional[int] = None, tcp_admin: bool = False, tcp_admin_bind: str = "127.0.0.1",
                  timeout: float = 10.0, **config: Any) -> HAProxy:
    """Write a config into ``dir`` and start ``haproxy -f CFG -db``; returns once the socket answers."""
    path = Path(dir)
    path.mkdir(parents=True, exist_ok=True)
    # sun_path is at most 107 bytes: keep the socket short
    sock = str(path / f"{name}.sock")
    if len(sock) > 100:
        sock = f"/run/rollwright/hx-{os.getpid()}-{name}-{free_port()}.sock"
        Path(sock).parent.mkdir(parents=True, exist_ok=True)
    hx = HAProxy(name=name, dir=path, port=port or free_port(), socket=sock, backend=backend, servers=dict(servers),
                 tcp_admin_port=free_port() if tcp_admin else None, tcp_admin_bind=tcp_admin_bind)
    hx.config_path.write_text(render_config(name, sock, hx.port, backend, servers, tcp_admin_port=hx.tcp_admin_port,
                                            tcp_admin_bind=tcp_admin_bind, **config))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)
    log = open(path / f"{name}.log", "ab")  # pylint: disable=consider-using-with
    hx.proc = subprocess.Popen([HAPROXY, "-f", str(hx.config_path), "-db"], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    while True:
        if hx.proc.poll() is not None:
            raise RuntimeError(f"haproxy {name} exited with {hx.proc.returncode}: "
                               + (path / f"{name}.log").read_text()[-2000:])
        try:
            if "pxname" in hx.admin("show stat"):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            hx.stop()
            raise RuntimeError(f"haproxy {name} did not open its stats socket within {timeout}s")
        time.sleep(0.02)
    return hx


@contextlib.contextmanager
def haproxy(dir: str | os.PathLike, servers: dict[str, str], **kwargs: Any) -> Iterator[HAProxy]:
    hx = start_haproxy(dir, servers, **kwargs)
    try:
        yield hx
    finally:
        hx.stop()


# ----------------------------------------------------------------------------------------------
# worlds and playbook runs


def onprem_inventory(world: Any, path: str | os.PathLike) -> Path:
    """The world's inventory without EC2 instance ids: hosts are known by their inventory names,
    as on premises."""
    data = yaml.safe_load(Path(world.inventory).read_text())
    for hv in data["all"]["children"]["fleet"]["hosts"].values():
        hv.pop("ec2_instance_id", None)
    out = Path(path)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def backend_servers(world: Any, port: int = 8080) -> dict[str, str]:
    """server name (= inventory name) -> address:port for every host of the world."""
    return {h.name: f"{h.address}:{port}" for h in world.hosts}


def playbook_env(world: Any, state_dir: str | os.PathLike, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(world.aws_env())
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_FORKS": "50",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(world.control_path_dir),
        "XDG_STATE_HOME": str(state_dir),
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
    })
    env.update(extra or {})
    return env


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    cmd: list[str]

    def __repr__(self) -> str:
        return f"rc={self.rc} in {self.seconds:.1f}s\nSTDERR:\n{self.stderr[-3000:]}\nSTDOUT:\n{self.stdout[-6000:]}"


def run_inplace(world: Any, inventory: str | os.PathLike, revision: str | os.PathLike, state_dir: str | os.PathLike,
                load_balancer: Optional[dict[str, Any]] = None, config: str = "CodeDeployDefault.OneAtATime",
                extra_vars: Optional[dict[str, Any]] = None, playbook: str = "rollwright.deploy.inplace",
                timeout: float = 600) -> PlaybookRun:
    """ansible-playbook rollwright.deploy.inplace against the world (application ``sample``)."""
    variables: dict[str, Any] = {
        "rollwright_hosts": "fleet",
        "rollwright_application": "sample",
        "rollwright_revision": str(revision),
        "rollwright_deployment_config": config,
    }
    if load_balancer:
        variables["rollwright_load_balancer"] = load_balancer
    variables.update(extra_vars or {})
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), playbook, "-e", json.dumps(variables)]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=str(ROOT), env=playbook_env(world, state_dir), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start, cmd)


SLOW_SERVER = r"""
import http.server, sys, time, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        time.sleep(float(q.get("sleep", ["0"])[0]))
        body = b"slow ok\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


def start_slow_server(world: Any, host: str, port: int = 8090) -> None:
    """Start, on a fleet host, an HTTP server whose ``/?sleep=S`` answers after S seconds."""
    script = "/tmp/rw-slow-server.py"
    world.fleet.exec(host, ["sh", "-c", f"cat > {script} <<'EOF'\n{SLOW_SERVER}\nEOF\n"
                                        f"nohup python3 {script} {port} >/tmp/rw-slow.log 2>&1 &\n"
                                        f"echo $! > /tmp/rw-slow.pid"])
    address = world.fleet.host(host).address
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError):
            with socket.create_connection((address, port), timeout=1):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"slow server on {host}:{port} did not start")
        time.sleep(0.05)


def stop_slow_server(world: Any, host: str) -> None:
    world.fleet.exec(host, ["sh", "-c", "[ -f /tmp/rw-slow.pid ] && kill $(cat /tmp/rw-slow.pid); rm -f /tmp/rw-slow.pid"],
                     check=False)
