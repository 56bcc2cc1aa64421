# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Notifications: configuration, the trigger events a record store's writes produce, delivery within
the time budget (real sockets on 127.0.0.1: a receiver, a refused port, a port that never answers)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.deployments import notifications as nt
from ansible_collections.rollwright.deploy.plugins.module_utils.records import DeploymentRecord, HostRecord, InvalidRecord, open_store
from ansible_collections.rollwright.deploy.plugins.module_utils.records.base import parse_time


class Receiver:
    def __init__(self, statuses=()):
        self.got, self.statuses, self.arrived = [], list(statuses), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((dict(self.headers), body))
                outer.arrived.append(time.time())
                self.send_response(outer.statuses.pop(0) if outer.statuses else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self):
        return [(json.loads(b)["event"], json.loads(b).get("host")) for _h, b in self.got]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _store(tmp_path, notifications):
    return open_store("sqlite", {"path": str(tmp_path / "r.sqlite3"), "notifications": notifications})


@pytest.mark.parametrize("value, named", [
    ("x", "notifications: expected a dict"),
    ({"webhooks": [{"url": "ftp://x"}]}, "notifications.webhooks[0].url"),
    ({"sns": ["not-an-arn"]}, "notifications.sns[0]"),
    ({"webhooks": ["http://h/"], "timeout": 5}, "notifications.timeout"),
    ({"webhooks": ["http://h/"], "retries": 9}, "notifications.retries"),
    ({"webhooks": ["http://h/"], "events": ["DeploymentBoom"]}, "notifications.events"),
    ({"webhooks": [{"url": "http://h/", "secret_header": "bad header"}]}, "secret_header"),
    ({"webhook": ["http://h/"]}, "unknown key(s) webhook"),
])
def test_bad_configuration_is_named(value, named):
    with pytest.raises(InvalidRecord, match=named.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        nt.parse_config(value)


def test_nothing_configured_is_the_plain_store(tmp_path):
    store = _store(tmp_path, {})
    assert not isinstance(store, nt.NotifyingStore)


def test_destination_label_hides_credentials_and_query():
    assert nt.destination_label({"kind": "webhook", "url": "https://u:p@hooks.example:8443/a?token=x"}) == \
        "https://hooks.example:8443/a"


def test_deployment_events_in_order_with_failure_details_and_secret(tmp_path, home, receiver):
    store = _store(tmp_path, {"webhooks": [{"url": receiver.url, "secret": "tok"}], "report_url": "https://r.example/d"})
    rec = store.create(DeploymentRecord(application="shop", deployment_group="web", revision={"bucket": "b", "key": "k"},
                                        hosts=[HostRecord(name="h1"), HostRecord(name="h2")]))
    did = rec.deployment_id
    store.update_status(did, "InProgress")
    store.update_host(did, "h1", status="InProgress")
    store.update_host(did, "h1", status="Succeeded")
    store.update_host(did, "h2", status="InProgress")
    store.event(did, "h2", "ValidateService", "Failed", scripts=[{"location": "scripts/check.sh", "exit_code": 3}],
                message="script scripts/check.sh failed with exit code 3")
    store.update_host(did, "h2", status="Failed")
    store.update_host(did, "h2", status="Failed")  # said twice, sent once
    store.update_status(did, "Failed", error="h2 failed")
    assert receiver.events() == [("DeploymentStart", None), ("InstanceStart", "h1"), ("InstanceSuccess", "h1"),
                                 ("InstanceStart", "h2"), ("InstanceFailure", "h2"), ("DeploymentFailure", None)]
    assert all(headers["X-Rollwright-Secret"] == "tok" for headers, _b in receiver.got)
    last = json.loads(receiver.got[-1][1])
    assert last["failure"] == {"host": "h2", "event": "ValidateService", "script": "scripts/check.sh", "exit_code": 3,
                               "message": "script scripts/check.sh failed with exit code 3"}
    assert last["status"] == "Failed" and last["error"] == "h2 failed" and last["revision"] == {"bucket": "b", "key": "k"}
    assert last["report"] == f"https://r.example/d/{did}.html"
    assert "tok" not in json.dumps(store.get(did).to_dict())


def test_rollback_ready_and_lambda_rollback(tmp_path, home, receiver):
    store = _store(tmp_path, {"webhooks": [receiver.url]})
    first = store.create(DeploymentRecord(application="a", deployment_group="g"))
    store.update_status(first.deployment_id, "InProgress")
    store.update_status(first.deployment_id, "Ready")
    store.update_status(first.deployment_id, "InProgress")  # blue/green after the continue: no second start
    store.update_status(first.deployment_id, "Failed")
    rollback = store.create(DeploymentRecord(application="a", deployment_group="g", creator="rollback",
                                             rollback_of=first.deployment_id))
    store.update_status(rollback.deployment_id, "InProgress")
    store.update_status(rollback.deployment_id, "Succeeded")
    shift = store.create(DeploymentRecord(application="f", deployment_group="f:live", deployment_type="lambda"))
    store.update_status(shift.deployment_id, "InProgress")
    store.set_extra(shift.deployment_id, "lambda", {"rolled_back": True})
    store.update_status(shift.deployment_id, "Stopped", error="alarm")
    assert receiver.events() == [
        ("DeploymentStart", None), ("DeploymentReady", None), ("DeploymentFailure", None),
        ("DeploymentRollback", None), ("DeploymentStart", None), ("DeploymentSuccess", None),
        ("DeploymentStart", None), ("DeploymentRollback", None), ("DeploymentStop", None)]
    bodies = [json.loads(b) for _h, b in receiver.got]
    assert bodies[3]["rollback_of"] == first.deployment_id and bodies[3]["deployment_id"] == rollback.deployment_id
    assert not list((home / ".cache" / "rollwright" / "notify").glob("d-*.json"))  # finished: nothing kept


def test_events_filter_and_template(tmp_path, home, receiver):
    store = _store(tmp_path, {"webhooks": [{"url": receiver.url, "events": ["DeploymentSuccess"],
                                            "template": '{"text": "$summary", "id": "${deployment_id}"}'}]})
    rec = store.create(DeploymentRecord(application='we "quote"', deployment_group="g"))
    store.update_status(rec.deployment_id, "InProgress")
    store.update_status(rec.deployment_id, "Succeeded")
    ((headers, body),) = receiver.got
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"text": f'DeploymentSuccess {rec.deployment_id} we "quote"/g', "id": rec.deployment_id}


def test_server_errors_are_retried_with_backoff(tmp_path, home):
    flaky = Receiver(statuses=[503, 502])
    try:
        store = _store(tmp_path, {"webhooks": [flaky.url], "events": ["DeploymentStart"]})
        rec = store.create(DeploymentRecord(application="a", deployment_group="g"))
        store.update_status(rec.deployment_id, "InProgress")
        assert len(flaky.got) == 3  # two 5xx, then delivered
        assert "notification_failures" not in store.get(rec.deployment_id).extra
    finally:
        flaky.close()


def test_dead_endpoints_cost_at_most_their_timeout_per_deployment(tmp_path, home, receiver):
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    timeout = 0.4
    try:
        store = _store(tmp_path, {"timeout": timeout, "webhooks": [
            f"http://127.0.0.1:{refused.getsockname()[1]}/", f"http://127.0.0.1:{blackhole.getsockname()[1]}/", receiver.url]})
        rec = store.create(DeploymentRecord(application="a", deployment_group="g"))
        store.update_status(rec.deployment_id, "InProgress")
        for n in range(8):
            store.update_host(rec.deployment_id, f"h{n}", status="InProgress")
            store.update_host(rec.deployment_id, f"h{n}", status="Succeeded")
        store.update_status(rec.deployment_id, "Succeeded")
    finally:
        refused.close()
        blackhole.close()
    assert len(receiver.got) == 18  # every message still reached the live endpoint
    # Each message is stamped before its delivery starts and the dead endpoints come first: what they
    # cost is the sum of the live endpoint's waits.
    held = sum(arrived - parse_time(json.loads(body)["time"]).timestamp()
               for arrived, (_h, body) in zip(receiver.arrived, receiver.got))
    print(f"\n18 messages, a refused and a silent endpoint (timeout {timeout} s each): held up {held:.2f} s in all")
    # Without the per-deployment budget: 18 x 0.4 = 7.2 s at least; 2 s of headroom for a loaded machine.
    assert held < 2 * timeout + 2.0, held
    failures = store.get(rec.deployment_id).extra["notification_failures"]
    kinds = {f["error"].split(":")[0] for f in failures}
    assert kinds >= {"ConnectionRefusedError", "TimeoutError", "skipped for the rest of the deployment"}, kinds


def test_a_broken_destination_never_fails_the_write(tmp_path, home):
    store = _store(tmp_path, {"sns": ["arn:aws:sns:us-east-1:123456789012:t"]})  # no AWS client at all
    rec = store.create(DeploymentRecord(application="a", deployment_group="g"))
    store.update_status(rec.deployment_id, "InProgress")
    assert store.get(rec.deployment_id).status == "InProgress"
    (failure,) = store.get(rec.deployment_id).extra["notification_failures"]
    assert failure["destination"].endswith(":t") and failure["event"] == "DeploymentStart"


def test_a_slow_sns_publish_holds_each_message_up_at_most_the_timeout_and_is_not_skipped(tmp_path, home):
    published = []

    class SlowSNS:  # an SDK call that answers late (a loaded controller), not an unreachable endpoint
        meta = type("Meta", (), {"service_model": type("Model", (), {"operation_model": staticmethod(lambda name: None)})()})()

        def publish(self, **kwargs):
            time.sleep(0.3)
            published.append(json.loads(kwargs["Message"])["event"])

    config = nt.parse_config({"sns": ["arn:aws:sns:us-east-1:123456789012:t"], "timeout": 0.1})
    store = nt.NotifyingStore(open_store("sqlite", {"path": str(tmp_path / "r.sqlite3")}), config,
                              client_factory=lambda service: SlowSNS())
    rec = store.create(DeploymentRecord(application="a", deployment_group="g"))
    started = time.monotonic()
    store.update_status(rec.deployment_id, "InProgress")
    store.update_status(rec.deployment_id, "Succeeded")
    assert time.monotonic() - started < 2 * 0.1 + 0.2
    time.sleep(0.5)
    assert published == ["DeploymentStart", "DeploymentSuccess"]  # both went out, in order, neither skipped
