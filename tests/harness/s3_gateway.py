# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The emulator's S3 as the fleet reaches it: a TCP relay on the world's bridge address.

The emulator listens on loopback, which the hosts' network namespaces cannot reach; the relay listens on the
bridge's address (the hosts' default gateway, inside the world only) and copies bytes both ways. It keeps the
request line of every request it relayed (``requests``), so a test can see what a host asked for, and it can
rewrite a request line on the way (``rewrite``), which lets a test serve a host another object than the one its
URL names (a tampered download).
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from typing import Callable, Optional


class S3Gateway:
    """``with S3Gateway(world.describe()["gateway"], world.endpoint) as gw: gw.endpoint_url``."""

    def __init__(self, listen_address: str, emulator_endpoint: str,
                 rewrite: Optional[Callable[[str], str]] = None) -> None:
        target = urllib.parse.urlsplit(emulator_endpoint)
        self.target = (target.hostname or "127.0.0.1", target.port or 80)
        self.rewrite = rewrite
        self.requests: list[str] = []
        self._server = socket.create_server((listen_address, 0))
        self._server.settimeout(0.2)
        self.endpoint_url = f"http://{listen_address}:{self._server.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "S3Gateway":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _addr = self._server.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.target, timeout=30) as upstream:
            client.settimeout(30)
            head = b""
            while b"\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            line, rest = head.split(b"\r\n", 1)
            text = line.decode("latin-1")
            self.requests.append(text)
            if self.rewrite:
                text = self.rewrite(text)
            upstream.sendall(text.encode("latin-1") + b"\r\n" + rest)
            back = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
            back.start()
            self._pipe(client, upstream)
            back.join(30)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
