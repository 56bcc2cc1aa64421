# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Receivers for notification tests and the headless-Chromium check of timeline reports.

Everything here is independent of rollwright code: an HTTP receiver on 127.0.0.1, a port that refuses,
a port that accepts and never answers, an SNS topic subscribed by an SQS queue in the emulator, and
Chromium (Debian's package) rendering a report to a DOM dump and a PNG that is decoded here.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "output"
SECRET = "s3cr3t-notify-token"


class WebhookReceiver:
    """POSTs received on 127.0.0.1: ``(arrival time, headers, parsed JSON body)``."""

    def __init__(self) -> None:
        received: list = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((time.time(), dict(self.headers), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/deploy"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def messages(self, deployment_ids: Optional[set] = None) -> list:
        return [body for _t, _h, body in self.received if deployment_ids is None or body.get("deployment_id") in deployment_ids]


class RefusedPort:
    """A 127.0.0.1 port bound but not listening: connections are refused (and no one else can take it)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/refused"

    def close(self) -> None:
        self.sock.close()


class BlackholePort:
    """A 127.0.0.1 port that accepts connections and never answers; counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/blackhole"
        self.accepted: list = []
        self._held: list = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.time())
            self._held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


class SnsQueue:
    """An SNS topic in the emulator with an SQS queue subscribed to it."""

    def __init__(self, aws: Any, name: str) -> None:
        self.sns, self.sqs = aws.client("sns"), aws.client("sqs")
        self.topic_arn = self.sns.create_topic(Name=name)["TopicArn"]
        self.queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)
        self.received: list = []

    def drain(self) -> list:
        """Every message delivered so far (SNS envelopes unwrapped), in the queue's order."""
        while True:
            found = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            batch = found.get("Messages") or []
            if not batch:
                return self.received
            for item in batch:
                envelope = json.loads(item["Body"])
                self.received.append(json.loads(envelope["Message"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=item["ReceiptHandle"])


def notifications(receiver: WebhookReceiver, topic: SnsQueue, *dead: str, timeout: float = 1.0) -> dict:
    """The rollwright_notifications value: the dead endpoints first, so every message waits behind them."""
    webhooks = [{"url": url} for url in dead]
    webhooks.append({"url": receiver.url, "secret": SECRET})
    return {"sns": [topic.topic_arn], "webhooks": webhooks, "timeout": timeout}


def expected_events(record: dict) -> list:
    """(event, host) in the order a deployment sends them, worked out from the record alone."""
    out = []
    if record.get("rollback_of"):
        out.append(("DeploymentRollback", None))
    out.append(("DeploymentStart", None))
    started = [h for h in record["hosts"] if any(e.get("start_time") for e in h["events"])]  # not the skipped hosts
    hosts = sorted(started, key=lambda h: min(e["start_time"] for e in h["events"] if e.get("start_time")))
    for host in hosts:
        out.append(("InstanceStart", host["name"]))
        out.append(({"Succeeded": "InstanceSuccess", "Failed": "InstanceFailure"}[host["status"]], host["name"]))
    out.append(({"Succeeded": "DeploymentSuccess", "Failed": "DeploymentFailure", "Stopped": "DeploymentStop"}
                [record["status"]], None))
    return out


def events_of(messages: list, deployment_id: Optional[str] = None) -> list:
    return [(m["event"], m.get("host")) for m in messages if deployment_id is None or m["deployment_id"] == deployment_id]


# ----------------------------------------------------------------------------------------------
# headless Chromium
# ----------------------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]


def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        raise AssertionError("chromium is not installed (Debian package `chromium`, installed by `make setup`)")
    return found


def _run_chromium(args: list, timeout: float = 90) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="rw-chromium-")
    try:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class _Counter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.classes: dict = {}
        self.attrs: list = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        values = dict(attrs)
        self.attrs.append((tag, values))
        for name in (values.get("class") or "").split():
            self.classes[name] = self.classes.get(name, 0) + 1


def render(page: Path, screenshot: Path, width: int = 1280, height: int = 900) -> dict:
    """Load the page in headless Chromium: the DOM it built (classes counted) and a PNG screenshot."""
    dom = _run_chromium(["--dump-dom", page.as_uri()])
    assert dom.returncode == 0 and "<svg" in dom.stdout, (dom.returncode, dom.stderr[-2000:])
    shot = _run_chromium([f"--screenshot={screenshot}", f"--window-size={width},{height}", page.as_uri()])
    assert shot.returncode == 0 and screenshot.exists(), (shot.returncode, shot.stderr[-2000:])
    counter = _Counter()
    counter.feed(dom.stdout)
    return {"dom": dom.stdout, "classes": counter.classes, "elements": counter.attrs, "png": decode_png(screenshot)}


def decode_png(path: Path) -> dict:
    """Width, height and pixel rows (RGB tuples) of an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _c, _f, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(line)
        previous = line
    pixels = [[tuple(row[x * channels:x * channels + 3]) for x in range(0, width, 4)] for row in rows[::4]]
    return {"width": width, "height": height, "sample": pixels}


def check_report(page: Path, record: dict, screenshot: Path) -> dict:
    """Render a deployment's report and assert what any report must show: not blank, a row per host,
    a bar per recorded event."""
    assert page.exists(), f"no report at {page}"
    html = page.read_text()
    fetches = re.findall(r'(?:src|href)\s*=\s*"(?:[a-z]+:)?//[^"]*"|url\(|@import|<script|<link', html, re.I)
    assert not fetches, f"the report must load nothing from anywhere: {fetches}"
    shown = render(page, screenshot)
    colours = {px for row in shown["png"]["sample"] for px in row}
    assert len(colours) > 20, f"the screenshot looks blank ({len(colours)} colours)"
    # the bars: saturated pixels (status colours), not only text on white and grey
    saturated = sum(1 for row in shown["png"]["sample"] for px in row if max(px) - min(px) > 80)
    assert saturated > 0.002 * sum(len(r) for r in shown["png"]["sample"]), f"no bars drawn ({saturated} coloured pixels)"
    assert shown["classes"].get("host-row", 0) == len(record["hosts"]), shown["classes"]
    events = sum(len(h["events"]) for h in record["hosts"])
    assert events > 0 and shown["classes"].get("event-bar", 0) == events, (shown["classes"], events)
    rows = [a.get("data-host") for tag, a in shown["elements"] if "host-row" in (a.get("class") or "").split()]
    assert sorted(rows) == sorted(h["name"] for h in record["hosts"])
    return shown


def keep_artifact(screenshot: Path, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / name
    shutil.copyfile(screenshot, target)
    os.chmod(target, 0o644)
    return target
