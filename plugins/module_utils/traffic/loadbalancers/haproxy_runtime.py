# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HAProxy runtime API (the ``stats socket``): one command per connection, and what it answers
about servers, read into :class:`ServerStatus`. The load-balancer adapter is ``haproxy.py``.

Host-side safe: stdlib only (the ``haproxy_server`` module may run on the HAProxy host itself).
"""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass
from typing import Any, Callable

from . import base as lb  # the normalised health states
from .base import LoadBalancerError, NotFoundError

DEFAULT_CONNECT_TIMEOUT = 5.0

# srv_admin_state bits (haproxy/include/haproxy/server-t.h): forced/inherited/config maint, drain ...
_ADMIN_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
_ADMIN_DRAIN_BITS = 0x08 | 0x10 | 0x80
_CHECK_CONFIGURED = 0x02


class HAProxyError(LoadBalancerError):
    """A runtime API failure (connection, refused command) with a message naming the instance."""


@dataclass(frozen=True)
class HAProxyInstance:
    """One HAProxy process, reached through its runtime API."""

    name: str
    socket: str | None = None  # unix socket path
    address: str | None = None  # "host:port" of a TCP admin socket

    @property
    def endpoint(self) -> str:
        return self.socket or self.address or ""


class RuntimeAPI:
    """One command per connection (the runtime API's non-interactive mode)."""

    def __init__(self, instance: HAProxyInstance, timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 counter: Callable[[str], None] | None = None):
        self.instance = instance
        self.timeout = timeout
        self._count = counter or (lambda op: None)

    def _connect(self) -> socket.socket:
        inst = self.instance
        if inst.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(inst.socket)
            except OSError:
                sock.close()
                raise
            return sock
        host, _sep, port = (inst.address or "").rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)

    def execute(self, command: str) -> str:
        self._count(" ".join(command.split()[:2]))
        try:
            sock = self._connect()
        except OSError as exc:
            raise HAProxyError(f"haproxy instance {self.instance.name} ({self.instance.endpoint}): cannot connect to "
                               f"the runtime API: {exc.strerror or exc}") from None
        chunks = []
        try:
            sock.sendall(command.encode() + b"\n")
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except OSError as exc:
            raise HAProxyError(f"haproxy instance {self.instance.name} ({self.instance.endpoint}): "
                               f"{command!r} failed: {exc}") from None
        finally:
            sock.close()
        return b"".join(chunks).decode("utf-8", "replace")

    def command(self, command: str) -> None:
        """A command that answers nothing on success (set server ..., set weight ...)."""
        out = self.execute(command).strip()
        if out:
            raise HAProxyError(f"haproxy instance {self.instance.name}: {command!r} refused: {out}")

    def show_stat(self) -> list[dict[str, str]]:
        return parse_show_stat(self.execute("show stat"))

    def show_servers_state(self, backend: str) -> list[dict[str, str]]:
        text = self.execute(f"show servers state {backend}")
        if text.strip().startswith("Can't find backend"):
            raise NotFoundError(f"haproxy instance {self.instance.name}: backend {backend!r} not found", [backend])
        return parse_servers_state(text)


def parse_show_stat(text: str) -> list[dict[str, str]]:
    """``show stat`` CSV (header line ``# pxname,svname,...``) -> one dict per line."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise HAProxyError(f"unexpected 'show stat' output: {text[:200]!r}")
    header = lines[0][2:].split(",")
    rows = []
    for row in csv.reader(io.StringIO("\n".join(line for line in lines[1:] if line.strip()))):
        rows.append(dict(zip(header, row)))
    return rows


def parse_servers_state(text: str) -> list[dict[str, str]]:
    """``show servers state [backend]`` (format version 1) -> one dict per server line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# "):
        raise HAProxyError(f"unexpected 'show servers state' output: {text[:200]!r}")
    header = lines[1][2:].split()
    return [dict(zip(header, line.split())) for line in lines[2:]]


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class ServerStatus:
    """What one instance says about one server right now."""

    instance: str
    backend: str
    server: str
    admin: str  # ready | drain | maint
    status: str  # show stat's status column: UP, DOWN, DRAIN, MAINT, NOLB, "UP 1/3", "no check", ...
    sessions: int  # scur
    queued: int  # qcur
    weight: int  # user weight (what `set weight` changes)
    checked: bool  # a health check is configured
    check_status: str = ""
    check_desc: str = ""

    @property
    def busy(self) -> int:
        return self.sessions + self.queued

    @property
    def up(self) -> bool:
        """Fully up: the admin state is ready and checks pass (or there are none)."""
        return self.admin == "ready" and (self.status == "UP" or not self.checked and self.status in ("no check", "UP"))

    def health(self) -> tuple[str, str | None]:
        """Normalised (state, reason)."""
        label = f"{self.backend}/{self.server} on {self.instance}"
        if self.admin == "maint":
            return lb.UNUSED, f"{label}: MAINT"
        if self.admin == "drain":
            return lb.DRAINING, f"{label}: DRAIN, {self.sessions} session(s)"
        status = self.status
        if status == "UP" or status == "no check":
            return lb.HEALTHY, None
        if status.startswith("UP ") or status.startswith("DOWN "):
            return lb.INITIAL, f"{label}: {status} (checks in progress)"
        if status.startswith("DOWN"):
            detail = self.check_desc or self.check_status
            return lb.UNHEALTHY, f"{label}: DOWN" + (f" ({detail})" if detail else "")
        if status.startswith("NOLB"):
            return lb.DRAINING, f"{label}: NOLB"
        if status.startswith("MAINT"):
            return lb.UNUSED, f"{label}: {status}"
        return lb.UNKNOWN, f"{label}: {status}"

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "backend": self.backend, "server": self.server, "state": self.admin,
                "status": self.status, "sessions": self.sessions, "queued": self.queued, "weight": self.weight,
                "checked": self.checked}


def admin_state(bits: int) -> str:
    if bits & _ADMIN_MAINT_BITS:
        return "maint"
    if bits & _ADMIN_DRAIN_BITS:
        return "drain"
    return "ready"


def read_backend(api: RuntimeAPI, backend: str, stat: list[dict[str, str]] | None = None) -> dict[str, ServerStatus]:
    """Every server of ``backend`` on one instance (``show servers state`` + ``show stat``)."""
    state_rows = api.show_servers_state(backend)
    if stat is None:
        stat = api.show_stat()
    by_name = {r.get("svname"): r for r in stat if r.get("pxname") == backend}
    out = {}
    for row in state_rows:
        name = row.get("srv_name", "")
        s = by_name.get(name, {})
        out[name] = ServerStatus(
            instance=api.instance.name,
            backend=backend,
            server=name,
            admin=admin_state(_int(row.get("srv_admin_state"))),
            status=s.get("status", "") or "",
            sessions=_int(s.get("scur")),
            queued=_int(s.get("qcur")),
            weight=_int(row.get("srv_uweight"), _int(s.get("weight"))),
            checked=bool(_int(row.get("srv_check_state")) & _CHECK_CONFIGURED),
            check_status=s.get("check_status", "") or "",
            check_desc=s.get("check_desc", "") or s.get("last_chk", "") or "",
        )
    return out
