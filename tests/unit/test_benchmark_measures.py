# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the in-place benchmark measures a host's time out of service with: the ELBv2 calls that moved it, as its
counting proxy saw them, checked against a sampler and taken apart with the deployment's record."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest

from benchmarks.inplace import (OOS_SLACK, CountingProxy, _out_of_service_parts, _over_bound, _parts_summary, _sampled_off,
                                main, wire_spans, wire_times)


def test_a_host_is_out_from_its_deregistration_sent_to_its_registration_answered_and_the_registration_time():
    moves = [
        ("DeregisterTargets", ["i-a", "i-b"], 10.0, 10.2),
        ("RegisterTargets", ["i-b"], 15.0, 15.3),
        ("RegisterTargets", ["i-a"], 16.0, 16.1),
    ]
    assert wire_spans(moves, registration=2.0) == pytest.approx({"i-a": 8.1, "i-b": 7.3})


def test_calls_count_in_the_order_they_were_sent_and_each_time_a_host_left_adds_up():
    moves = [
        ("RegisterTargets", ["i-a"], 20.0, 20.5),
        ("DeregisterTargets", ["i-a"], 1.0, 1.1),
        ("RegisterTargets", ["i-a"], 4.0, 4.5),
        ("DeregisterTargets", ["i-a"], 18.0, 18.1),
        ("DeregisterTargets", ["i-a"], 18.5, 18.6),  # a second deregistration while out changes nothing
    ]
    assert wire_spans(moves, registration=1.0) == pytest.approx({"i-a": (4.5 + 1 - 1.0) + (20.5 + 1 - 18.0)})


def test_a_host_never_put_back_or_never_taken_out_has_no_span():
    moves = [("DeregisterTargets", ["i-gone"], 1.0, 1.1), ("RegisterTargets", ["i-new"], 2.0, 2.1)]
    assert not wire_spans(moves, registration=2.0)


def test_the_bound_counts_the_hosts_within_the_slack_of_their_own_allowance():
    over = _over_bound({"i-a": 4.9, "i-b": 6.0, "i-c": 4.2}, {"i-a": 4.5, "i-b": 5.0, "i-c": 4.0}, OOS_SLACK)
    assert over == {"median": 0.4, "max": 1.0, "within": 2, "hosts": 3}


@pytest.fixture(name="upstream")
def fixture_upstream():
    """A stand-in for the emulator: answers every POST with 200 (or 400 when the body asks for it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = 400 if b"fail" in body else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _elbv2_call(endpoint: str, action: str, targets: list[str], extra: dict | None = None) -> int:
    form = {"Action": action, "Version": "2015-12-01", "TargetGroupArn": "arn:tg", **(extra or {})}
    form.update({f"Targets.member.{n}.Id": t for n, t in enumerate(targets, start=1)})
    request = urllib.request.Request(endpoint + "/", data=urlencode(form).encode(), method="POST", headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261128/us-east-1/elasticloadbalancing/aws4_request, "
                         "SignedHeaders=host, Signature=x"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_proxy_times_the_calls_that_move_targets_and_only_those_that_succeeded(upstream):
    proxy = CountingProxy(upstream)
    try:
        assert _elbv2_call(proxy.endpoint, "DeregisterTargets", ["i-1", "i-2"]) == 200
        assert _elbv2_call(proxy.endpoint, "DescribeTargetHealth", []) == 200
        assert _elbv2_call(proxy.endpoint, "RegisterTargets", ["i-2"], {"Note": "fail"}) == 400
        assert _elbv2_call(proxy.endpoint, "RegisterTargets", ["i-2"]) == 200
        moves = proxy.take_moves()
        calls = proxy.take()
    finally:
        proxy.close()
    assert [(action, targets) for action, targets, _sent, _answered in moves] == [
        ("DeregisterTargets", ["i-1", "i-2"]), ("RegisterTargets", ["i-2"])]
    assert all(sent <= answered for _a, _t, sent, answered in moves)
    assert calls[("elbv2", "RegisterTargets")] == 2 and calls[("elbv2", "DescribeTargetHealth")] == 1
    spans = wire_spans(moves, registration=2.0)
    assert list(spans) == ["i-2"] and spans["i-2"] == pytest.approx(moves[1][3] + 2.0 - moves[0][2])
    times = wire_times(moves, proxy.epoch)
    assert [call[0] for call in times["i-2"]] == ["DeregisterTargets", "RegisterTargets"]
    assert times["i-2"][0][1] == pytest.approx(moves[0][2] + proxy.epoch, abs=0.001)


def test_the_sampler_is_checked_against_the_calls():
    off = _sampled_off({"i-a": 4.5, "i-b": 4.2, "i-c": 4.0}, {"i-a": 4.9, "i-b": 4.1, "i-z": 1.0})
    assert off == {"hosts": 2, "missing": 1, "max": 0.4, "unexpected": ["i-z"]}


def _event(name: str, start: float, end: float, scripts: tuple = ()) -> dict:
    def iso(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    return {"name": name, "status": "Succeeded", "start_time": iso(start), "end_time": iso(end),
            "scripts": [{"location": "x.sh", "duration": d} for d in scripts]}


def test_a_hosts_time_out_of_service_is_taken_apart_from_its_calls_and_its_record():
    base = 1_800_000_000.0
    host = {"name": "h1", "instance_id": "i-1", "events": [
        _event("BlockTraffic", base + 0.0, base + 2.3),  # deregistered at +0.1: confirmed 0.2 s after the 2 s delay
        _event("ApplicationStop", base + 2.4, base + 2.6, (0.15,)),
        _event("Install", base + 2.6, base + 2.9),
        _event("ValidateService", base + 3.0, base + 3.5, (0.3,)),
        _event("AllowTraffic", base + 3.6, base + 5.8),
    ]}
    calls = {"i-1": [["DeregisterTargets", base + 0.1, base + 0.12], ["RegisterTargets", base + 3.7, base + 3.75]],
             "i-2": [["DeregisterTargets", base, base + 0.1]]}  # never put back: no parts
    parts = _out_of_service_parts({"hosts": [host, {"name": "h2", "instance_id": "i-2", "events": []}]}, calls, 2.0)
    assert list(parts) == ["i-1"]
    assert parts["i-1"] == pytest.approx({"drain_confirmed": 0.2, "word_to_hooks": 0.1, "engine": 1.1 - 0.45,
                                          "result_to_registration": 0.2, "registration_call": 0.05}, abs=1e-3)
    # the parts and the hooks make up the span the calls give, beyond the drain and the registration
    span = wire_spans([("DeregisterTargets", ["i-1"], base + 0.1, base + 0.12),
                       ("RegisterTargets", ["i-1"], base + 3.7, base + 3.75)], registration=2.0)["i-1"]
    assert sum(parts["i-1"].values()) + 0.45 == pytest.approx(span - 2.0 - 2.0, abs=1e-3)
    summary = _parts_summary(parts, {"i-1": span}, {"i-1": 4.45})
    assert summary["worst_host"]["target"] == "i-1" and summary["worst_host"]["over_s"] == pytest.approx(1.2, abs=0.01)
    assert summary["drain_confirmed"] == {"median": 0.2, "max": 0.2}


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_sampling_interval_that_is_not_a_positive_number_of_seconds_is_refused_before_anything_starts(value, capsys):
    assert main(["--sample-every", value, "--hosts", "1"]) == 2
    assert "--sample-every" in capsys.readouterr().err
