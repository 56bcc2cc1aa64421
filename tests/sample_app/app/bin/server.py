#!/usr/bin/env python3
"""The sample application: serves its version on / and a health check on /health.

SAMPLE_APP_REQUEST_DELAY (seconds of work per request; only for paths starting with SAMPLE_APP_SLOW_PATH
when that is set) and SAMPLE_APP_START_DELAY (seconds before it listens) make it behave as a real
service does: the zero-downtime benchmark's "slow" profile.
"""
import http.server
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = int(os.environ.get("SAMPLE_APP_PORT", "8080"))
REQUEST_DELAY = float(os.environ.get("SAMPLE_APP_REQUEST_DELAY", "0"))
SLOW_PATH = os.environ.get("SAMPLE_APP_SLOW_PATH", "")
START_DELAY = float(os.environ.get("SAMPLE_APP_START_DELAY", "0"))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if REQUEST_DELAY and self.path.startswith(SLOW_PATH):
            time.sleep(REQUEST_DELAY)
        with open(os.path.join(ROOT, "index.html"), "rb") as handle:
            body = handle.read()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    time.sleep(START_DELAY)
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    sys.stdout.write(f"listening on {PORT}\n")
    sys.stdout.flush()
    server.serve_forever()
