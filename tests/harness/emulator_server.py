# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AWS emulator process: moto's server app, patched (see ``_moto_patches``), plus a control API.

Run by :func:`tests.harness.emulator.start_emulator` as
``python -m tests.harness.emulator_server --ready-file FILE [--host 127.0.0.1] [--port 0]``.
It binds (port 0 = a free port), writes ``{"port": N, "pid": P}`` to the ready file and serves
until SIGTERM/SIGINT.

Control API (besides moto's own ``/moto-api/``):

- ``GET  /_rollwright/health`` -> ``{"ok": true, "pid": P}``
- ``POST /_rollwright/lambda/invoke-results`` with
  ``{"results": [{"payload": "<string>", "function_error": "Unhandled" | null}], "region": "us-east-1",
  "account_id": "123456789012"}``: queue the next Lambda invoke results (FIFO, per account and region)
- ``GET  /_rollwright/lambda/invocations?region=us-east-1`` -> ``{"invocations": [...]}`` (oldest first)
- ``DELETE /_rollwright/lambda/invocations?region=...`` -> clear that record
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import threading
from typing import Any, Callable
from urllib.parse import parse_qs

DEFAULT_ACCOUNT = "123456789012"


def _json_response(start_response: Callable[..., Any], status: str, body: Any) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


# Injected AWS errors, for tests of retries and error hints: action -> {code, status, message, count},
# and how many requests of each action were seen since the fault was set (faulted or passed through).
FAULTS: dict[str, dict[str, Any]] = {}
SEEN: dict[str, int] = {}
_FAULT_LOCK = threading.Lock()


def _request_action(environ: dict[str, Any]) -> str:
    """The API action of a request: X-Amz-Target (JSON protocols) or Action= (query protocols); body kept readable."""
    target = environ.get("HTTP_X_AMZ_TARGET") or ""
    if target:
        return target.rsplit(".", 1)[-1]
    action = parse_qs(environ.get("QUERY_STRING", "")).get("Action")
    if action:
        return action[-1]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    action = parse_qs(body.decode("utf-8", "replace")).get("Action")
    return action[-1] if action else ""


def _match_fault(environ: dict[str, Any]) -> dict[str, Any] | None:
    action = _request_action(environ)
    with _FAULT_LOCK:
        if action not in FAULTS:
            return None
        SEEN[action] = SEEN.get(action, 0) + 1
        fault = FAULTS[action]
        if fault["count"] == 0:
            return None
        fault["count"] -= 1  # a negative count never runs out
        return dict(fault)


def _fault_response(environ: dict[str, Any], start_response: Callable[..., Any], fault: dict[str, Any]) -> list[bytes]:
    status = f"{fault['status']} Error"
    if environ.get("HTTP_X_AMZ_TARGET"):
        data = json.dumps({"__type": fault["code"], "message": fault["message"]}).encode()
        content_type = "application/x-amz-json-1.0"
    else:
        data = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{fault['code']}</Code><Message>{fault['message']}"
                "</Message></Error><RequestId>rollwright-fault</RequestId></ErrorResponse>").encode()
        content_type = "text/xml"
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]


def _faults_endpoint(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """POST {action, code, status, message, count} sets a fault; GET returns what was seen; DELETE clears."""
    method = environ.get("REQUEST_METHOD", "GET")
    with _FAULT_LOCK:
        if method == "DELETE":
            FAULTS.clear()
            SEEN.clear()
        elif method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            FAULTS[body["action"]] = {"code": body.get("code", "Throttling"), "status": int(body.get("status", 400)),
                                      "message": body.get("message", "Rate exceeded"), "count": int(body.get("count", 1))}
            SEEN[body["action"]] = 0
        return _json_response(start_response, "200 OK", {"faults": FAULTS, "seen": SEEN})


def make_app() -> Callable[..., Any]:
    from tests.harness import _moto_patches

    _moto_patches.apply()
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/_rollwright/"):
            if FAULTS:
                fault = _match_fault(environ)
                if fault is not None:
                    return _fault_response(environ, start_response, fault)
            return moto_app(environ, start_response)
        if path == "/_rollwright/faults":
            return _faults_endpoint(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            body = json.loads(raw) if raw else {}
        except (ValueError, KeyError) as exc:
            return _json_response(start_response, "400 Bad Request", {"error": f"body is not JSON: {exc}"})
        if path == "/_rollwright/health":
            return _json_response(start_response, "200 OK", {"ok": True, "pid": os.getpid()})
        key = (str(body.get("account_id") or query.get("account_id") or DEFAULT_ACCOUNT),
               str(body.get("region") or query.get("region") or "us-east-1"))
        if path == "/_rollwright/lambda/invoke-results" and method == "POST":
            results = body.get("results")
            if not isinstance(results, list):
                return _json_response(start_response, "400 Bad Request", {"error": "'results' must be a list"})
            queued = []
            for i, item in enumerate(results):
                if isinstance(item, str):
                    item = {"payload": item}
                if not isinstance(item, dict) or not isinstance(item.get("payload", ""), str):
                    return _json_response(start_response, "400 Bad Request",
                                          {"error": f"results[{i}] must be {{'payload': str, 'function_error': str|null}}"})
                queued.append({"payload": item.get("payload", ""), "function_error": item.get("function_error")})
            with _moto_patches._LOCK:
                _moto_patches.LAMBDA_RESULTS.setdefault(key, []).extend(queued)
                depth = len(_moto_patches.LAMBDA_RESULTS[key])
            return _json_response(start_response, "201 Created", {"queued": len(queued), "depth": depth})
        if path == "/_rollwright/lambda/invocations" and method == "GET":
            with _moto_patches._LOCK:
                found = list(_moto_patches.LAMBDA_INVOCATIONS.get(key, []))
            return _json_response(start_response, "200 OK", {"invocations": found})
        if path == "/_rollwright/lambda/invocations" and method == "DELETE":
            with _moto_patches._LOCK:
                _moto_patches.LAMBDA_INVOCATIONS.pop(key, None)
            return _json_response(start_response, "200 OK", {"cleared": True})
        return _json_response(start_response, "404 Not Found", {"error": f"no such control endpoint: {method} {path}"})

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args(argv)

    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(args.host, args.port, make_app(), threaded=True)

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"port": server.server_port, "pid": os.getpid(), "host": args.host}, fh)
    os.replace(tmp, args.ready_file)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
