"""A tiny HTTP service to deploy with shiplog, whose behaviour can be made bad by config.

    python deploy/examples/sample_service.py --port 8080 --version 1.0.0

``GET /`` answers ``{"service": ..., "version": ...}``; ``GET /healthz`` answers 200.
Environment variables (the release's rendered config) make it misbehave:

- ``SAMPLE_ERROR_RATE``: fraction 0..1 of requests (other than /healthz) answered 500;
- ``SAMPLE_LATENCY_MS``: delay added to every request other than /healthz;
- ``SAMPLE_UNHEALTHY=1``: /healthz answers 503;
- ``SAMPLE_SERVICE``: the service name it reports (default ``sample``);
- ``SAMPLE_BAD_VERSIONS``: comma-separated versions that misbehave even when nothing
  else is set: answered with 50% errors (or ``SAMPLE_ERROR_RATE`` if higher), so one
  pipeline config can hold a good and a bad release (``shiplog demo`` uses this).

Standard library only, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BAD_VERSION_ERROR_RATE = 0.5


class Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops connection bursts, and a dropped SYN
    # costs a full second: that would be latency the service does not have
    request_queue_size = 128


class Behaviour:
    def __init__(self, environ: dict[str, str] | os._Environ[str], version: str = "") -> None:
        self.service = environ.get("SAMPLE_SERVICE", "sample")
        self.error_rate = min(max(float(environ.get("SAMPLE_ERROR_RATE") or 0), 0.0), 1.0)
        bad = {v.strip() for v in environ.get("SAMPLE_BAD_VERSIONS", "").split(",") if v.strip()}
        if version in bad:
            self.error_rate = max(self.error_rate, BAD_VERSION_ERROR_RATE)
        self.latency_s = max(float(environ.get("SAMPLE_LATENCY_MS") or 0), 0.0) / 1000
        self.unhealthy = environ.get("SAMPLE_UNHEALTHY", "") not in ("", "0", "false")


def make_handler(version: str, behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in separate writes: without this, Nagle and delayed
        # ACKs stall every keep-alive response by ~40 ms
        disable_nagle_algorithm = True
        server_version = f"sample/{version}"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                if behaviour.unhealthy:
                    self._json(503, {"status": "unhealthy"})
                else:
                    self._json(200, {"status": "ok"})
                return
            if behaviour.latency_s:
                time.sleep(behaviour.latency_s)
            if behaviour.error_rate and random.random() < behaviour.error_rate:
                self._json(500, {"error": "configured failure", "version": version})
                return
            if path == "/":
                self._json(200, {"service": behaviour.service, "version": version})
            else:
                self._json(404, {"error": "not found"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: one line per request would fill the target's logs

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="shiplog's sample service")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = Server((args.host, args.port), make_handler(args.version, Behaviour(os.environ, args.version)))
    server.daemon_threads = True

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    print(f"sample {args.version} listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
