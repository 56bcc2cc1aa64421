# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bounded HTTP load generator for zero-downtime measurements.

At most ``total`` GET requests, spread over ``concurrency`` client threads, paced at ``rate``
requests per second overall, each on a new TCP connection (so every request is balanced again).
Only loopback and private addresses are accepted: it never sends traffic anywhere else.

A request fails when it gets no complete answer (connection refused / reset, timeout) or a status
outside 2xx. Successful bodies (``sample-app <version>``) are counted per second, so the switch
from one version to the next is visible.
"""

from __future__ import annotations

import http.client
import ipaddress
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)  # "502", "ConnectionResetError", ...
    per_second: dict[int, Counter] = field(default_factory=dict)  # second -> Counter(body or "FAIL")
    failures: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, what)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, every answered or failed request

    def latency(self, q: float) -> float:
        """The q-quantile of request latency in seconds (0 when nothing was sent)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def versions(self) -> list[str]:
        seen: dict[str, None] = {}
        for sec in sorted(self.per_second):
            for key in self.per_second[sec]:
                if key != "FAIL":
                    seen.setdefault(key, None)
        return list(seen)

    def timeline(self, new_version: str) -> str:
        """One character per second: the share of answers from ``new_version`` in tenths
        (0 = none, 9 = over 90 %, '#' = all), 'x' when a request failed in that second."""
        out = []
        last = max(self.per_second) if self.per_second else -1
        for sec in range(last + 1):
            counts = self.per_second.get(sec, Counter())
            answered = sum(n for k, n in counts.items() if k != "FAIL")
            if counts.get("FAIL"):
                out.append("x")
            elif not answered:
                out.append(".")
            else:
                share = counts.get(new_version, 0) / answered
                out.append("#" if share == 1 else str(min(9, int(share * 10))))
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "ok": self.ok, "failed": self.failed, "errors": dict(self.errors),
                "seconds": round(self.seconds, 2),
                "latency_p50_ms": round(self.latency(0.5) * 1000, 1), "latency_p99_ms": round(self.latency(0.99) * 1000, 1),
                "latency_max_ms": round(max(self.latencies, default=0) * 1000, 1),
                "per_second": {str(k): dict(v) for k, v in sorted(self.per_second.items())},
                "failures": [(round(t, 3), what) for t, what in self.failures[:50]]}


def check_target(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http URL on a loopback or private address; anything else is refused."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"load generator: expected an http://ADDRESS:PORT/ URL, got {url!r}")
    addr = ipaddress.ip_address(parts.hostname)
    if not (addr.is_loopback or addr.is_private):
        raise ValueError(f"load generator: refusing to send traffic to {addr} (only loopback and private test addresses)")
    return parts.hostname, parts.port or 80, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class LoadGenerator:
    """``with LoadGenerator(url, total=5000, concurrency=4, rate=100) as load: ...``; ``load.result``."""

    def __init__(self, url: str, total: int, concurrency: int = 4, rate: Optional[float] = None, timeout: float = 5.0):
        if total <= 0 or concurrency <= 0:
            raise ValueError("load generator: total and concurrency must be positive")
        self.host, self.port, self.path = check_target(url)
        self.total = total
        self.concurrency = concurrency
        self.rate = rate
        self.timeout = timeout
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0

    def _claim(self) -> Optional[int]:
        with self._lock:
            if self._stop.is_set() or self._next >= self.total:
                return None
            i = self._next
            self._next += 1
            return i

    def _one(self) -> tuple[bool, str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace").strip()
            if 200 <= resp.status < 300:
                return True, body
            return False, str(resp.status)
        except (OSError, http.client.HTTPException) as exc:
            return False, type(exc).__name__
        finally:
            conn.close()

    def _worker(self) -> None:
        while True:
            i = self._claim()
            if i is None:
                return
            if self.rate:
                delay = self._t0 + i / self.rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            began = time.monotonic()
            ok, what = self._one()
            now = time.monotonic() - self._t0
            took = time.monotonic() - began
            sec = int(now)
            with self._lock:
                r = self.result
                r.sent += 1
                r.latencies.append(took)
                bucket = r.per_second.setdefault(sec, Counter())
                if ok:
                    r.ok += 1
                    bucket[what] += 1
                else:
                    r.failed += 1
                    r.errors[what] += 1
                    bucket["FAIL"] += 1
                    r.failures.append((now, what))

    def start(self) -> "LoadGenerator":
        self._t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._worker, daemon=True, name=f"loadgen-{i}")
                         for i in range(self.concurrency)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> LoadResult:
        """Stop sending (requests in flight finish) and return the result."""
        self._stop.set()
        return self.wait()

    def wait(self, timeout: Optional[float] = None) -> LoadResult:
        for t in self._threads:
            t.join(timeout)
        self.result.seconds = time.monotonic() - self._t0
        return self.result

    def __enter__(self) -> "LoadGenerator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - a manual tool
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--total", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=float, default=None)
    args = parser.parse_args()
    gen = LoadGenerator(args.url, args.total, args.concurrency, args.rate).start()
    print(json.dumps(gen.wait().to_dict(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
