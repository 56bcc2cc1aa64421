# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy behind the load-balancer interface, through the runtime API (stats socket).

Configuration (``rollwright_load_balancer: {haproxy: {...}}``)::

    haproxy:
      backend: app                      # or a list of backends
      instances:                        # one or more HAProxy processes (an HA pair: all of them)
        - {name: lb1, socket: /run/haproxy/admin.sock}   # unix socket on the controller
        - {name: lb2, address: 10.0.0.12:9999}           # TCP admin socket (stats socket ipv4@...)
      servers: {web1: app-web1}         # optional: host -> server name (default: the host's name)
      drain_timeout: 300                # used when the caller gives no timeout
      healthy_timeout: 300
      poll_interval: 0.2
      connect_timeout: 5

BlockTraffic sets ``drain`` on every instance, waits until the server's sessions (``scur`` plus
queued ``qcur`` in ``show stat``) reach 0, then sets ``maint``. AllowTraffic restores the recorded
state and weight (``ready`` for a server that was in rotation) and waits for a full ``UP``. A host
is out only when it is out on every instance, and back only when it is back on every instance.

The runtime API client itself is ``haproxy_runtime.py``.

Host-side safe: stdlib only (the ``haproxy_server`` module may run on the HAProxy host itself).
API budget: per poll, ``show stat`` plus ``show servers state <backend>`` once per instance and
backend; one ``set server`` per server whose state changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ansible_collections.rollwright.deploy.plugins.module_utils.traffic import parse_number
from .base import (
    UNHEALTHY,
    UNUSED,
    Adapter,
    Backoff,
    Clock,
    ConfigError,
    HAProxyMembership,
    LoadBalancerError,
    Membership,
    NotFoundError,
    Outcome,
    Progress,
    WaitResult,
    worst_health,
    worst_state,
)
from .haproxy_runtime import (
    DEFAULT_CONNECT_TIMEOUT,
    HAProxyInstance,
    RuntimeAPI,
    ServerStatus,
    read_backend,
)

ADMIN_STATES = ("ready", "drain", "maint")
DEFAULT_DRAIN_TIMEOUT = 300.0
DEFAULT_HEALTHY_TIMEOUT = 300.0
DEFAULT_POLL_INTERVAL = 0.2
PROGRESS_EVERY = 2.0  # seconds between progress messages of a wait

# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class HAProxyConfig:
    instances: list[HAProxyInstance]
    backends: list[str]
    servers: dict[str, str] = field(default_factory=dict)
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    healthy_timeout: float = DEFAULT_HEALTHY_TIMEOUT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def server_for(self, host: str) -> str:
        return self.servers.get(host, host)

    def host_for(self, server: str) -> str:
        for host, srv in self.servers.items():
            if srv == server:
                return host
        return server


CONFIG_KEYS = ("instances", "backend", "servers", "drain_timeout", "healthy_timeout", "poll_interval", "connect_timeout")


def _parse_address(value: str, path: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{path}: expected host:port of a TCP admin socket, got {value!r}")
    return value


def _parse_instance(item: Any, path: str) -> HAProxyInstance:
    if isinstance(item, str) and item:
        if item.startswith("/") or item.startswith("unix:"):
            sock = item[5:] if item.startswith("unix:") else item
            return HAProxyInstance(name=sock, socket=sock)
        address = item[4:] if item.startswith("tcp:") else item
        return HAProxyInstance(name=address, address=_parse_address(address, path))
    if not isinstance(item, dict):
        raise ConfigError(f"{path}: expected a socket path, host:port, or a dictionary with socket or address, got {item!r}")
    unknown = sorted(set(item) - {"name", "socket", "address"})
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key; expected name, socket or address")
    sock, address = item.get("socket"), item.get("address")
    if bool(sock) == bool(address):
        raise ConfigError(f"{path}: expected exactly one of socket (a unix socket path) or address (host:port)")
    if sock is not None and (not isinstance(sock, str) or not sock.startswith("/")):
        raise ConfigError(f"{path}.socket: expected an absolute unix socket path, got {sock!r}")
    if address is not None:
        if not isinstance(address, str):
            raise ConfigError(f"{path}.address: expected host:port, got {address!r}")
        _parse_address(address, f"{path}.address")
    name = item.get("name") or sock or address
    if not isinstance(name, str):
        raise ConfigError(f"{path}.name: expected a string, got {name!r}")
    return HAProxyInstance(name=name, socket=sock, address=address)


def _positive(value: Any, path: str, default: float) -> float:
    if value is None or value == "":
        return default
    error = ConfigError(f"{path}: expected a positive number of seconds, got {value!r}")
    number = parse_number(value, error)
    if number <= 0:
        raise error
    return number


def parse_haproxy_config(value: Any, path: str = "load_balancer.haproxy") -> HAProxyConfig:
    """Validate the ``haproxy`` block; every error names its field path."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a dictionary with instances and backend, got {value!r}")
    unknown = sorted(set(value) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key; expected one of {', '.join(CONFIG_KEYS)}")
    raw_instances = value.get("instances")
    if isinstance(raw_instances, (str, dict)):
        raw_instances = [raw_instances]
    if not isinstance(raw_instances, list) or not raw_instances:
        raise ConfigError(f"{path}.instances: expected a list of one or more HAProxy runtime API endpoints "
                          f"(socket path or host:port), got {raw_instances!r}")
    instances = [_parse_instance(item, f"{path}.instances[{i}]") for i, item in enumerate(raw_instances)]
    names = [i.name for i in instances]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}.instances: instance names must be unique, {dupes[0]!r} is used twice")
    backend = value.get("backend")
    backends = [backend] if isinstance(backend, str) else backend
    if not isinstance(backends, list) or not backends or not all(isinstance(b, str) and b for b in backends):
        raise ConfigError(f"{path}.backend: expected a backend name (or a list of them), got {backend!r}")
    for i, b in enumerate(backends):
        if any(c.isspace() for c in b) or "/" in b:
            raise ConfigError(f"{path}.backend: {b!r} is not a valid backend name")
    servers = value.get("servers") or {}
    if not isinstance(servers, dict):
        raise ConfigError(f"{path}.servers: expected a mapping of host name to server name, got {servers!r}")
    for host, srv in servers.items():
        if not isinstance(srv, str) or not srv or any(c.isspace() for c in srv) or "/" in srv:
            raise ConfigError(f"{path}.servers.{host}: expected a server name, got {srv!r}")
    taken = list(servers.values())
    dup_srv = sorted({s for s in taken if taken.count(s) > 1})
    if dup_srv:
        raise ConfigError(f"{path}.servers: server {dup_srv[0]!r} is mapped to more than one host")
    return HAProxyConfig(
        instances=instances,
        backends=list(dict.fromkeys(backends)),
        servers={str(k): v for k, v in servers.items()},
        drain_timeout=_positive(value.get("drain_timeout"), f"{path}.drain_timeout", DEFAULT_DRAIN_TIMEOUT),
        healthy_timeout=_positive(value.get("healthy_timeout"), f"{path}.healthy_timeout", DEFAULT_HEALTHY_TIMEOUT),
        poll_interval=_positive(value.get("poll_interval"), f"{path}.poll_interval", DEFAULT_POLL_INTERVAL),
        connect_timeout=_positive(value.get("connect_timeout"), f"{path}.connect_timeout", DEFAULT_CONNECT_TIMEOUT),
    )


# ---------------------------------------------------------------------------------------------
# The adapter


class HAProxyAdapter(Adapter):
    """Servers of one or more backends on one or more HAProxy instances."""

    kind = "haproxy"

    def __init__(self, config: HAProxyConfig, clock: Clock | None = None, backoff: Backoff | None = None):
        poll = config.poll_interval
        super().__init__(clock=clock, backoff=backoff or Backoff(initial=poll, cap=max(poll, min(1.0, poll * 5)),
                                                                 factor=1.5, jitter=0.2))
        self.config = config
        self.apis = {i.name: RuntimeAPI(i, config.connect_timeout, self._count) for i in config.instances}
        self._validated = False

    def _count(self, operation: str) -> None:
        self.api_calls[operation] += 1

    def _api(self, instance: str) -> RuntimeAPI:
        try:
            return self.apis[instance]
        except KeyError:
            raise LoadBalancerError(
                f"haproxy instance {instance!r} is not configured (load_balancer.haproxy.instances has "
                f"{', '.join(self.apis)})") from None

    # -- reading ---------------------------------------------------------------------------
    def read(self, pairs: list[tuple[str, str]] | None = None) -> dict[tuple[str, str], dict[str, ServerStatus]]:
        """Servers per (instance, backend); one ``show stat`` per instance."""
        if pairs is None:
            pairs = [(i, b) for i in self.apis for b in self.config.backends]
        out: dict[tuple[str, str], dict[str, ServerStatus]] = {}
        stats: dict[str, list[dict[str, str]]] = {}
        for inst, backend in dict.fromkeys(pairs):
            api = self._api(inst)
            if inst not in stats:
                stats[inst] = api.show_stat()
            try:
                out[(inst, backend)] = read_backend(api, backend, stats[inst])
            except NotFoundError:
                known = sorted({r["pxname"] for r in stats[inst] if r.get("svname") == "BACKEND"})
                raise NotFoundError(
                    f"load_balancer.haproxy.backend: backend {backend!r} not found on haproxy instance {inst} "
                    f"({api.instance.endpoint}); its backends: {', '.join(known) or 'none'}; nothing was changed",
                    [backend]) from None
        return out

    def validate(self) -> None:
        if not self._validated:
            self.read()
            self._validated = True

    def _statuses(self, memberships: list[HAProxyMembership]) -> dict[HAProxyMembership, ServerStatus | None]:
        current = self.read([(m.instance, m.backend) for m in memberships])
        return {m: current[(m.instance, m.backend)].get(m.server) for m in memberships}

    def _lookup(self, host_ids: list[str]) -> dict[str, list[ServerStatus]]:
        """Each host's server on every instance and backend; a missing server fails naming it."""
        current = self.read()
        self._validated = True
        out: dict[str, list[ServerStatus]] = {}
        missing = []
        for host in host_ids:
            server = self.config.server_for(host)
            found = []
            for (inst, backend), servers in current.items():
                status = servers.get(server)
                if status is None:
                    missing.append((host, server, inst, backend, sorted(servers)))
                else:
                    found.append(status)
            out[host] = found
        if missing:
            host, server, inst, backend, known = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise NotFoundError(
                f"load_balancer.haproxy: host {host} maps to server {server!r}, which backend {backend!r} on haproxy "
                f"instance {inst} does not have{more}; its servers: {', '.join(known) or 'none'} (map hosts to "
                "server names with load_balancer.haproxy.servers); nothing was changed",
                sorted({m[1] for m in missing}))
        return out

    # -- interface -------------------------------------------------------------------------
    def snapshot(self, instance_ids: list[str]) -> dict[str, list[Membership]]:
        found = self._lookup(list(instance_ids))
        return {host: [HAProxyMembership(s.instance, s.backend, s.server, s.admin, s.weight) for s in statuses]
                for host, statuses in found.items()}

    def desired(self, instance_ids: list[str]) -> list[Membership]:
        found = self._lookup(list(instance_ids))
        return [HAProxyMembership(s.instance, s.backend, s.server, "ready", s.weight)
                for statuses in found.values() for s in statuses]

    def health(self, instance_ids: list[str]) -> dict[str, str]:
        found = self._lookup(list(instance_ids))
        return {host: worst_health(s.health()[0] for s in statuses) for host, statuses in found.items()}

    def states(self, memberships: list[Membership]) -> dict[Membership, tuple[str, str | None]]:
        ms = self._haproxy(memberships)
        out: dict[Membership, tuple[str, str | None]] = {}
        for m, status in self._statuses(ms).items():
            out[m] = status.health() if status else (UNUSED, f"{m.label()}: no such server")
        return out

    def _haproxy(self, memberships: list[Membership]) -> list[HAProxyMembership]:
        out = []
        for m in memberships:
            if not isinstance(m, HAProxyMembership):
                raise LoadBalancerError(f"the haproxy adapter cannot handle {m.label()} (kind {m.kind})")
            out.append(m)
        return list(dict.fromkeys(out))

    @staticmethod
    def collapse(memberships: list[HAProxyMembership]) -> list[HAProxyMembership]:
        """One membership per server line (instance, backend, server), exact duplicates dropped.

        The engine records one membership per server line (a rollback keeps the failed deployment's
        record over its own snapshot, see ``inplace.merge_original``). Two that disagree would ask
        for two states of one server: that is refused, before anything changes, rather than guessed.
        """
        best: dict[tuple[str, str, str], HAProxyMembership] = {}
        for m in memberships:
            key = (m.instance, m.backend, m.server)
            seen = best.setdefault(key, m)
            if seen != m:
                raise LoadBalancerError(
                    f"haproxy: {m.label()} is given twice with different settings (state {seen.state}, weight "
                    f"{seen.weight} and state {m.state}, weight {m.weight}); one server cannot be put in two states, "
                    "nothing was changed")
        return list(best.values())

    def set_state(self, m: HAProxyMembership, state: str) -> None:
        if state not in ADMIN_STATES:
            raise LoadBalancerError(f"{m.label()}: cannot set state {state!r}; expected one of {', '.join(ADMIN_STATES)}")
        self._api(m.instance).command(f"set server {m.backend}/{m.server} state {state}")

    def set_weight(self, m: HAProxyMembership, weight: int) -> None:
        self._api(m.instance).command(f"set weight {m.backend}/{m.server} {int(weight)}")

    def _require(self, statuses: dict[HAProxyMembership, ServerStatus | None]) -> None:
        missing = [m for m, s in statuses.items() if s is None]
        if missing:
            raise NotFoundError("haproxy: no such server: " + ", ".join(m.label() for m in missing)
                                + "; nothing was changed", [m.server for m in missing])

    def block(self, memberships: list[Membership]) -> None:
        """``drain`` every server not already out (a server in maint stays in maint)."""
        statuses = self._statuses(self._haproxy(memberships))
        self._require(statuses)
        for m, status in statuses.items():
            if status is not None and status.admin == "ready":
                self.set_state(m, "drain")

    def allow(self, memberships: list[Membership]) -> None:
        """Restore each recorded membership's weight and state (``ready`` unless recorded otherwise)."""
        statuses = self._statuses(self.collapse(self._haproxy(memberships)))
        self._require(statuses)
        for m, status in statuses.items():
            if status is None:  # _require raised already; keeps type checkers content
                continue
            if m.weight is not None and status.weight != m.weight:
                self.set_weight(m, m.weight)
            if status.admin != m.state:
                self.set_state(m, m.state)

    def wait_drained(self, memberships: list[Membership], timeout: float | None = None,
                     progress: Progress | None = None, then_maint: bool = True) -> WaitResult:
        """Wait until no session is left on each server (everywhere), putting each in ``maint`` as
        soon as it is idle (``then_maint``). A server already in maint counts as drained."""

        def done(m: HAProxyMembership, s: ServerStatus) -> bool:
            if s.admin == "maint":
                return True
            if s.busy == 0:
                if then_maint:
                    self.set_state(m, "maint")
                return True
            return False

        def describe(s: ServerStatus) -> str:
            return f"{s.sessions} session(s)" + (f", {s.queued} queued" if s.queued else "") + f", {s.status}"

        return self._wait("drained", memberships, self.config.drain_timeout if timeout is None else timeout,
                          done, describe, progress)

    def wait_healthy(self, memberships: list[Membership], timeout: float | None = None,
                     progress: Progress | None = None) -> WaitResult:
        """Wait until each server is back in its recorded state everywhere: fully UP for ``ready``."""

        def done(m: HAProxyMembership, s: ServerStatus) -> bool:
            if m.state == "ready":
                return s.up
            return s.admin == m.state

        def describe(s: ServerStatus) -> str:
            return s.health()[1] or s.status

        return self._wait("healthy", self.collapse(self._haproxy(memberships)),
                          self.config.healthy_timeout if timeout is None else timeout, done, describe, progress)

    def _wait(self, goal: str, memberships: list[Membership], timeout: float,
              done: Callable[[HAProxyMembership, ServerStatus], bool], describe: Callable[[ServerStatus], str],
              progress: Progress | None) -> WaitResult:
        ms = self._haproxy(memberships)
        start = self.clock.now()
        deadline = start + max(0.0, timeout)
        schedule = self.backoff.schedule(start, deadline)
        pending = list(ms)
        last: dict[HAProxyMembership, ServerStatus | None] = {}
        polls = 0
        last_progress = start
        while pending:
            current = self._statuses(pending)
            polls += 1
            last.update(current)
            pending = [m for m in pending if current[m] is None or not done(m, current[m])]  # type: ignore[arg-type]
            if not pending:
                break
            next_poll = next(schedule, None)
            if next_poll is None:
                break
            now = self.clock.now()
            if progress is not None and now - last_progress >= PROGRESS_EVERY:
                last_progress = now
                waiting = ", ".join(f"{m.label()}: {describe(last[m]) if last[m] else 'no such server'}"
                                    for m in pending[:5])
                more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
                progress(f"haproxy: waiting until {goal} ({max(0.0, deadline - now):.0f}s left): {waiting}{more}")
            self.clock.sleep(max(0.0, next_poll - self.clock.now()))
        result = WaitResult(goal, elapsed=self.clock.now() - start, polls=polls)
        hosts: dict[str, list[HAProxyMembership]] = {}
        for m in ms:
            hosts.setdefault(self.config.host_for(m.server), []).append(m)
        for host, host_ms in hosts.items():
            bad = [m for m in host_ms if m in pending]
            pairs = [last[m].health() if last.get(m) else (UNUSED, f"{m.label()}: no such server")
                     for m in (bad or host_ms)]
            state, _reason = worst_state(pairs)
            if not bad:
                result.outcomes[host] = Outcome(goal, state, None)
                continue
            reason = "; ".join(f"{m.label()}: {describe(last[m])}" if last.get(m) else f"{m.label()}: no such server"
                               for m in bad)
            status = "unhealthy" if goal == "healthy" and state == UNHEALTHY else "timeout"
            result.outcomes[host] = Outcome(status, state, reason, [m.to_dict() for m in bad])
        return result


def build_adapter(load_balancer: dict[str, Any], clients: Any = None) -> HAProxyAdapter | None:
    """The builder registered for the ``haproxy`` key of a load_balancer configuration."""
    value = load_balancer.get("haproxy")
    if not value:
        return None
    return HAProxyAdapter(parse_haproxy_config(value))


# ---------------------------------------------------------------------------------------------
# Direct use (the haproxy_server module)


def set_servers(adapter: HAProxyAdapter, servers: list[str], state: str, weight: int | None = None,
                wait: bool = True, timeout: float = DEFAULT_DRAIN_TIMEOUT, check_mode: bool = False,
                progress: Progress | None = None) -> dict[str, Any]:
    """Put ``servers`` (names) of the configured backend(s) in ``state`` on every instance.

    ``maint`` with ``wait`` drains first (drain, no session left, maint); ``drain`` with ``wait``
    waits until no session is left; ``ready`` with ``wait`` waits for a full UP. Idempotent:
    nothing is sent for a server already in the state (and weight).
    """
    if state not in ADMIN_STATES:
        raise LoadBalancerError(f"state: expected one of {', '.join(ADMIN_STATES)}, got {state!r}")
    if not servers:
        raise LoadBalancerError("servers: expected at least one server name")
    current = adapter.read()
    missing = [(s, inst, be, sorted(found)) for s in servers for (inst, be), found in current.items() if s not in found]
    if missing:
        server, inst, be, known = missing[0]
        raise NotFoundError(f"server {server!r} not found in backend {be!r} on haproxy instance {inst}; "
                            f"its servers: {', '.join(known) or 'none'}", [m[0] for m in missing])
    before = [found[s] for s in servers for found in current.values()]
    memberships = [HAProxyMembership(st.instance, st.backend, st.server, state, weight if weight is not None else st.weight)
                   for st in before]
    changes = [st for st in before if st.admin != state or (weight is not None and st.weight != weight)]
    result: dict[str, Any] = {"changed": bool(changes), "before": [st.to_dict() for st in before]}
    if check_mode:
        result["after"] = [dict(st.to_dict(), state=state, weight=weight if weight is not None else st.weight)
                           for st in before]
        return result
    waited: WaitResult | None = None
    if state == "ready":
        adapter.allow(memberships)
        if wait:
            waited = adapter.wait_healthy(memberships, timeout, progress)
    else:
        if weight is not None:
            for m, st in zip(memberships, before):
                if st.weight != weight:
                    adapter.set_weight(m, weight)
        # maint without wait is immediate; otherwise drain first so no session is cut
        to_drain = [] if state == "maint" and not wait else [m for m, st in zip(memberships, before) if st.admin == "ready"]
        for m in to_drain:
            adapter.set_state(m, "drain")
        if wait:
            waited = adapter.wait_drained(memberships, timeout, progress, then_maint=state == "maint")
        if state == "maint":
            after_wait = adapter._statuses(memberships)  # pylint: disable=protected-access
            for m, st in after_wait.items():
                if st is not None and st.admin != "maint" and (not wait or (waited is not None and waited.ok)):
                    adapter.set_state(m, "maint")
    after = adapter._statuses(memberships)  # pylint: disable=protected-access
    result["after"] = [st.to_dict() for st in after.values() if st is not None]
    if waited is not None:
        result["wait"] = waited.to_dict()
        result["ok"] = waited.ok
        result["message"] = waited.message()
    return result


def _register() -> None:
    try:
        from . import register_adapter_builder
    except ImportError:  # pragma: no cover - the package is always importable alongside
        return
    register_adapter_builder("haproxy", build_adapter)


_register()
