# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HAProxy adapter: config validation, runtime-API parsing (recorded text), and the adapter
against a real haproxy started by the test with in-process HTTP backends on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers import (
    ConfigError,
    HAProxyMembership,
    LoadBalancerError,
    Membership,
    NotFoundError,
    adapters_from_config,
    load_balancer_from_config,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.haproxy import (
    HAProxyAdapter,
    parse_haproxy_config,
    set_servers,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.haproxy_runtime import (
    HAProxyError,
    RuntimeAPI,
    admin_state,
    parse_servers_state,
    parse_show_stat,
    read_backend,
)
from tests.haproxy_world import haproxy_available, start_haproxy

pytestmark = pytest.mark.skipif(not haproxy_available(), reason="haproxy is not installed (make setup installs it)")

STAT_HEADER = ",".join([
    "# pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout", "dreq", "dresp", "ereq", "econ",
    "eresp", "wretr", "wredis", "status", "weight", "act", "bck", "chkfail", "chkdown", "lastchg", "downtime", "qlimit",
    "pid", "iid", "sid", "throttle", "lbtot", "tracked", "type", "rate", "rate_lim", "rate_max", "check_status",
    "check_code", "check_duration"])
SHOW_STAT = STAT_HEADER + """
fe,FRONTEND,,,0,1,2000,3,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,1,,,
app,s1,0,0,2,3,,10,0,0,,0,,0,0,0,0,DRAIN,30,1,0,0,0,5,0,,1,3,1,,10,,2,0,,1,L4OK,,0
app,s2,1,1,0,0,,0,0,0,,0,,0,0,0,0,UP 1/3,50,1,0,0,0,5,0,,1,3,2,,0,,2,0,,0,L4CON,,0
app,s3,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1,1,0,0,0,5,0,,1,3,3,,0,,2,0,,0,,,
app,BACKEND,0,0,2,3,200,10,0,0,0,0,,0,0,0,0,UP,81,3,0,,0,5,0,,1,3,0,,10,,1,0,,1,,,

"""

STATE_HEADER = ("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
                "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
                "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
                "srv_check_addr srv_agent_addr srv_agent_port")
SERVERS_STATE = "1\n" + STATE_HEADER + """
3 app 1 s1 127.0.0.1 2 8 30 1 0 6 3 4 6 0 0 0 - 18081 - 0 0 - - 0
3 app 2 s2 127.0.0.1 2 0 50 50 1 8 2 0 6 0 0 0 - 18082 - 0 0 - - 0
3 app 3 s3 127.0.0.1 2 1 1 1 1 1 0 2 0 0 0 0 - 18083 - 0 0 - - 0

"""


# ----------------------------------------------------------------------------------------------
# parsing (recorded text)


class _Recorded(RuntimeAPI):
    def __init__(self) -> None:  # pylint: disable=super-init-not-called
        from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.loadbalancers.haproxy_runtime import HAProxyInstance

        self.instance = HAProxyInstance("rec", socket="/nonexistent")

    def execute(self, command: str) -> str:
        return {"show stat": SHOW_STAT, "show servers state app": SERVERS_STATE}.get(command, "Can't find backend.\n")


def test_parse_recorded_show_stat_and_servers_state() -> None:
    rows = parse_show_stat(SHOW_STAT)
    assert [r["svname"] for r in rows] == ["FRONTEND", "s1", "s2", "s3", "BACKEND"]
    assert rows[1]["status"] == "DRAIN" and rows[1]["scur"] == "2"
    state = parse_servers_state(SERVERS_STATE)
    assert [r["srv_name"] for r in state] == ["s1", "s2", "s3"]
    assert [admin_state(int(r["srv_admin_state"])) for r in state] == ["drain", "ready", "maint"]

    servers = read_backend(_Recorded(), "app")
    s1, s2, s3 = servers["s1"], servers["s2"], servers["s3"]
    assert (s1.admin, s1.sessions, s1.weight, s1.checked) == ("drain", 2, 30, True)
    assert s1.health()[0] == "draining" and "2 session(s)" in s1.health()[1]
    assert (s2.admin, s2.queued, s2.busy, s2.up) == ("ready", 1, 1, False)  # UP 1/3 is not fully up
    assert s2.health()[0] == "initial"
    assert (s3.admin, s3.checked, s3.health()[0]) == ("maint", False, "unused")
    with pytest.raises(NotFoundError):
        read_backend(_Recorded(), "nope")


def test_parse_rejects_garbage() -> None:
    with pytest.raises(HAProxyError, match="unexpected 'show stat'"):
        parse_show_stat("Unknown command\n")
    with pytest.raises(HAProxyError, match="unexpected 'show servers state'"):
        parse_servers_state("Permission denied\n")


# ----------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize(
    "config, message",
    [
        ("x", r"load_balancer\.haproxy: expected a dictionary"),
        ({"backend": "app"}, r"load_balancer\.haproxy\.instances: expected a list"),
        ({"instances": [], "backend": "app"}, r"load_balancer\.haproxy\.instances: expected a list"),
        ({"instances": ["/s"], "backend": ""}, r"load_balancer\.haproxy\.backend: expected a backend name"),
        ({"instances": ["/s"], "backend": "a b"}, r"load_balancer\.haproxy\.backend: 'a b' is not a valid"),
        ({"instances": ["/s"], "backend": "app", "sever": {}}, r"load_balancer\.haproxy\.sever: unknown key"),
        ({"instances": ["lb:notaport"], "backend": "app"}, r"load_balancer\.haproxy\.instances\[0\]: expected host:port"),
        ({"instances": [{"socket": "/s", "address": "h:1"}], "backend": "app"},
         r"instances\[0\]: expected exactly one of socket"),
        ({"instances": [{"socket": "rel.sock"}], "backend": "app"}, r"instances\[0\]\.socket: expected an absolute"),
        ({"instances": [{"sock": "/s"}], "backend": "app"}, r"instances\[0\]\.sock: unknown key"),
        ({"instances": ["/a", {"name": "/a", "address": "h:1"}], "backend": "app"}, r"'/a' is used twice"),
        ({"instances": ["/s"], "backend": "app", "servers": ["web1"]}, r"haproxy\.servers: expected a mapping"),
        ({"instances": ["/s"], "backend": "app", "servers": {"web1": ""}}, r"haproxy\.servers\.web1: expected a server"),
        ({"instances": ["/s"], "backend": "app", "servers": {"a": "s", "b": "s"}}, r"server 's' is mapped to more"),
        ({"instances": ["/s"], "backend": "app", "drain_timeout": -1}, r"haproxy\.drain_timeout: expected a positive"),
        ({"instances": ["/s"], "backend": "app", "poll_interval": "often"}, r"haproxy\.poll_interval: expected"),
    ],
)
def test_config_errors_name_the_field(config: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_haproxy_config(config)


def test_config_forms() -> None:
    cfg = parse_haproxy_config({"instances": ["/run/a.sock", "unix:/run/b.sock", "10.0.0.2:9999", "tcp:lb3:1",
                                              {"name": "lb4", "address": "[::1]:9000"}],
                                "backend": ["app", "api"], "servers": {"web1": "app-web1"}, "drain_timeout": "60"})
    assert [(i.name, i.socket, i.address) for i in cfg.instances] == [
        ("/run/a.sock", "/run/a.sock", None), ("/run/b.sock", "/run/b.sock", None), ("10.0.0.2:9999", None, "10.0.0.2:9999"),
        ("lb3:1", None, "lb3:1"), ("lb4", None, "[::1]:9000")]
    assert cfg.backends == ["app", "api"] and cfg.drain_timeout == 60.0
    assert cfg.server_for("web1") == "app-web1" and cfg.server_for("web2") == "web2"
    assert cfg.host_for("app-web1") == "web1" and cfg.host_for("web2") == "web2"
    # the factory takes the haproxy key and validates it
    [adapter] = adapters_from_config({"haproxy": {"instances": ["/run/a.sock"], "backend": "app"}}, clients=None)
    assert isinstance(adapter, HAProxyAdapter)
    with pytest.raises(ConfigError, match=r"load_balancer\.haproxy\.backend"):
        adapters_from_config({"haproxy": {"instances": ["/run/a.sock"]}}, clients=None)


def test_recorded_membership_round_trip() -> None:
    m = Membership.from_dict({"kind": "haproxy", "instance": "lb1", "backend": "app", "server": "web1",
                              "state": "maint", "weight": 30})
    assert m == HAProxyMembership("lb1", "app", "web1", "maint", 30)
    assert Membership.from_dict(m.to_dict()) == m


# ----------------------------------------------------------------------------------------------
# against a real haproxy


class _Backend:
    """An HTTP server on 127.0.0.1 answering its name; ``/?sleep=S`` answers after S seconds."""

    def __init__(self, name: str) -> None:
        self.name = name
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                time.sleep(float(query.get("sleep", ["0"])[0]))
                body = outer.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # health checks hang up early
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends():
    made = [_Backend(f"web{i}") for i in (1, 2, 3)]
    yield {b.name: b for b in made}
    for b in made:
        b.close()


@pytest.fixture
def lbs(tmp_path, backends):
    """Two haproxy instances (an HA pair) in front of the same three servers; web3 has no check."""
    started = []

    def start(name: str, **kwargs: Any):
        servers = {n: b.address for n, b in backends.items()}
        hx = start_haproxy(tmp_path, servers, name=name, server_options={"web2": "weight 50"}, **kwargs)
        # web3 without a health check: rewrite is simpler than a second config style
        started.append(hx)
        for srv in servers:
            hx.wait_status(srv, "UP")
        return hx

    yield start
    for hx in started:
        hx.stop()


def _adapter(*hxs, **extra: Any) -> HAProxyAdapter:
    config = {"instances": [hx.instance_config() for hx in hxs], "backend": "app", "poll_interval": 0.05}
    config.update(extra)
    return HAProxyAdapter(parse_haproxy_config(config))


def test_snapshot_block_drain_allow_restore(lbs) -> None:
    hx = lbs("lb1")
    adapter = _adapter(hx)
    assert adapter.health(["web1", "web2"]) == {"web1": "healthy", "web2": "healthy"}
    snap = adapter.snapshot(["web1", "web2"])
    assert snap == {"web1": [HAProxyMembership("lb1", "app", "web1", "ready", 1)],
                    "web2": [HAProxyMembership("lb1", "app", "web2", "ready", 50)]}
    batch = [m for ms in snap.values() for m in ms]
    adapter.block(batch)
    assert hx.statuses()["web1"] == "DRAIN" and hx.statuses()["web2"] == "DRAIN"
    waited = adapter.wait_drained(batch, timeout=5)
    assert waited.ok and set(waited.outcomes) == {"web1", "web2"}
    assert hx.statuses() == {"web1": "MAINT", "web2": "MAINT", "web3": "UP"}
    # the operator changed the weight meanwhile: AllowTraffic restores the recorded one
    hx.admin("set weight app/web2 7")
    adapter.allow(batch)
    waited = adapter.wait_healthy(batch, timeout=5)
    assert waited.ok, waited.message()
    assert hx.statuses() == {"web1": "UP", "web2": "UP", "web3": "UP"}
    assert hx.stat()["web2"]["weight"] == "50"
    assert adapter.api_calls["show stat"] >= 3 and adapter.api_calls["set server"] == 6


def test_server_in_maint_or_drain_before_stays_so(lbs) -> None:
    hx = lbs("lb1")
    hx.set_state("web1", "maint")
    hx.set_state("web2", "drain")
    adapter = _adapter(hx)
    health = adapter.health(["web1", "web2", "web3"])
    assert health == {"web1": "unused", "web2": "draining", "web3": "healthy"}
    snap = adapter.snapshot(["web1", "web2"])
    assert [m.state for ms in snap.values() for m in ms] == ["maint", "drain"]
    batch = [m for ms in snap.values() for m in ms]
    adapter.block(batch)
    assert adapter.wait_drained(batch, timeout=5).ok
    assert hx.statuses()["web1"] == "MAINT" and hx.statuses()["web2"] == "MAINT"
    adapter.allow(batch)
    assert adapter.wait_healthy(batch, timeout=5).ok
    assert hx.statuses()["web1"] == "MAINT" and hx.statuses()["web2"].startswith("DRAIN")


def test_long_request_finishes_before_maint_and_timeout_names_sessions(lbs, backends) -> None:
    hx = lbs("lb1")
    adapter = _adapter(hx)
    # pin the slow request to web1
    for other in ("web2", "web3"):
        hx.set_state(other, "maint")
    results: dict[str, Any] = {}

    def slow() -> None:
        with urllib.request.urlopen(hx.url + "?sleep=1.5", timeout=10) as resp:
            results["status"], results["body"] = resp.status, resp.read().decode()
        results["done"] = time.monotonic()

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 5
    while hx.sessions("web1") == 0:
        assert time.monotonic() < deadline, "the slow request never reached web1"
        time.sleep(0.01)
    [m] = adapter.snapshot(["web1"])["web1"]
    adapter.block([m])
    # a short timeout fails naming the server and its session count, leaving it in drain
    short = adapter.wait_drained([m], timeout=0.3)
    assert not short.ok
    assert "app/web1 on lb1: 1 session(s)" in short.message(), short.message()
    assert hx.status("web1") == "DRAIN"
    waited = adapter.wait_drained([m], timeout=10)
    maint_at = time.monotonic()
    thread.join(10)
    assert waited.ok
    assert results["status"] == 200 and results["body"] == "web1"
    assert results["done"] <= maint_at
    assert hx.status("web1") == "MAINT"


def test_ha_pair_kept_in_step(lbs) -> None:
    lb1, lb2 = lbs("lb1"), lbs("lb2", tcp_admin=True)
    # lb2 through its TCP admin socket
    config = {"instances": [lb1.instance_config(), lb2.instance_config(tcp=True)], "backend": "app", "poll_interval": 0.05}
    adapter = HAProxyAdapter(parse_haproxy_config(config))
    lb2.admin("set weight app/web1 5")
    snap = adapter.snapshot(["web1"])
    assert snap["web1"] == [HAProxyMembership("lb1", "app", "web1", "ready", 1),
                            HAProxyMembership("lb2", "app", "web1", "ready", 5)]
    adapter.block(snap["web1"])
    assert adapter.wait_drained(snap["web1"], timeout=5).ok
    assert lb1.status("web1") == lb2.status("web1") == "MAINT"
    # back only when back everywhere: lb2's check for web1 now fails
    adapter.allow(snap["web1"])
    lb2.admin("set server app/web1 addr 127.0.0.1 port 1")
    waited = adapter.wait_healthy(snap["web1"], timeout=1.5)
    assert not waited.ok
    assert list(waited.failed) == ["web1"]
    assert "on lb2" in waited.message() and "on lb1" not in waited.message(), waited.message()
    assert lb1.status("web1") == "UP"
    assert lb2.stat()["web1"]["weight"] == "5"


def test_unknown_backend_server_and_unreachable_instance(lbs, tmp_path) -> None:
    hx = lbs("lb1")
    with pytest.raises(NotFoundError, match=r"backend 'nope' not found on haproxy instance lb1 .*its backends: app"):
        _adapter(hx, backend="nope").validate()
    with pytest.raises(NotFoundError, match=r"host web9 maps to server 'web9'.*its servers: web1, web2, web3"):
        _adapter(hx).snapshot(["web1", "web9"])
    assert hx.statuses()["web1"] == "UP"  # nothing changed
    mapped = _adapter(hx, servers={"host-a": "web2"})
    snap = mapped.snapshot(["host-a"])
    assert snap["host-a"][0].server == "web2"
    mapped.block(snap["host-a"])
    waited = mapped.wait_drained(snap["host-a"], timeout=5)
    assert list(waited.outcomes) == ["host-a"] and waited.ok  # outcomes are keyed by host, not server
    dead = HAProxyAdapter(parse_haproxy_config({"instances": [{"name": "gone", "socket": str(tmp_path / "none.sock")}],
                                                "backend": "app"}))
    with pytest.raises(HAProxyError, match=r"haproxy instance gone \(.*none.sock\): cannot connect"):
        dead.validate()


def test_composite_routes_haproxy_memberships(lbs) -> None:
    hx = lbs("lb1")
    config = {"haproxy": {"instances": [hx.instance_config()], "backend": "app", "poll_interval": 0.05}}
    lb = load_balancer_from_config(config, clients=None)
    snap = lb.snapshot(["web3"])
    lb.block(snap["web3"])
    assert lb.wait_drained(snap["web3"], timeout=5).ok
    assert hx.status("web3") == "MAINT"
    lb.allow(snap["web3"])
    assert lb.wait_healthy(snap["web3"], timeout=5).ok
    assert hx.status("web3") == "UP"


def test_set_servers_idempotent_and_check_mode(lbs) -> None:
    hx = lbs("lb1")
    adapter = _adapter(hx)
    checked = set_servers(adapter, ["web1"], "maint", check_mode=True)
    assert checked["changed"] and checked["after"][0]["state"] == "maint"
    assert hx.status("web1") == "UP"
    done = set_servers(adapter, ["web1"], "maint", timeout=5)
    assert done["changed"] and done["ok"] and hx.status("web1") == "MAINT"
    again = set_servers(adapter, ["web1"], "maint", timeout=5)
    assert not again["changed"]
    back = set_servers(adapter, ["web1"], "ready", weight=3, timeout=5)
    assert back["changed"] and back["ok"] and hx.status("web1") == "UP" and hx.stat()["web1"]["weight"] == "3"
    assert not set_servers(adapter, ["web1"], "ready", weight=3, timeout=5)["changed"]
    with pytest.raises(NotFoundError, match=r"server 'web7' not found in backend 'app' on haproxy instance lb1"):
        set_servers(adapter, ["web7"], "drain")


def test_two_states_for_one_server_are_refused_not_guessed(lbs) -> None:
    """The engine records one membership per server line (a rollback keeps the failed deployment's record,
    inplace.merge_original); memberships that disagree about one server are refused before any change."""
    hx = lbs("lb1")
    adapter = _adapter(hx)
    hx.set_state("web1", "maint")
    conflict = [HAProxyMembership("lb1", "app", "web1", "maint", 1), HAProxyMembership("lb1", "app", "web1", "ready", 1)]
    with pytest.raises(LoadBalancerError, match=r"app/web1 on lb1 is given twice with different settings"):
        adapter.allow(conflict)
    with pytest.raises(LoadBalancerError, match="two states"):
        adapter.wait_healthy(conflict, timeout=1)
    assert hx.status("web1") == "MAINT"  # nothing changed
    # exact duplicates are one membership
    twice = [HAProxyMembership("lb1", "app", "web1", "ready", 1)] * 2
    assert adapter.collapse(twice) == twice[:1]
    adapter.allow(twice)
    assert adapter.wait_healthy(twice, timeout=5).ok
    assert hx.status("web1") == "UP"
