"""The weighted reverse proxy in front of one (service, environment) of the local target.

Run as its own process, so it outlives the process that drives the target::

    python -m adapters.targets.local.proxy --state FILE --port P

It reads the routing table (per version: a weight and the instances' URLs) from the
``routing`` key of the target's state file, reloads it when the file changes
(polled every 100 ms, or at once on SIGHUP), and splits requests over the versions
by smooth weighted round robin — deterministic, so 20% is 20 requests in 100 — then
round robin over a version's instances, trying the next instance when one refuses
the connection. Every response carries ``x-shiplog-version``.

``/metrics`` serves, in Prometheus text format, ``shiplog_proxy_requests_total{version,code}``
and ``shiplog_proxy_request_duration_seconds{version}`` (by version: a baseline's
requests count as its version's), and the same by track —
``shiplog_proxy_track_requests_total{version,track,code}`` and
``shiplog_proxy_track_request_duration_seconds{version,track}``, ``track`` being the
role (stable, canary, baseline, active, preview) — so a baseline's requests can be
told from stable's; ``/_shiplog/routing`` shows the loaded table and its generation.
Both paths are the proxy's own.

A table entry with a ``variant`` (the baseline) is routed as its own key,
``<version>/<variant>``, beside the version's main entry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from adapters.targets.local.wire import CONTROL_PATH, METRICS_PATH, VERSION_HEADER

NO_VERSION = "none"
POLL_S = 0.1
#: the proxy exits when its state file has been gone this long (its target was removed)
ORPHAN_AFTER_S = 5.0
UPSTREAM_TIMEOUT_S = 60.0

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class SmoothWeightedPicker:
    """nginx's smooth weighted round robin: exact shares, evenly interleaved."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = {key: w for key, w in weights.items() if w > 0}
        self._current = dict.fromkeys(self.weights, 0)
        self._total = sum(self.weights.values())

    def pick(self) -> str | None:
        if not self._total:
            return None
        for key, weight in self.weights.items():
            self._current[key] += weight
        best = max(self._current, key=lambda key: self._current[key])
        self._current[best] -= self._total
        return best


@dataclass
class Routing:
    generation: int = 0
    #: by routing key: the version, or ``<version>/<variant>`` for a variant
    backends: dict[str, list[str]] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    #: by routing key: (version, track) its requests are labelled with
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)
    picker: SmoothWeightedPicker = field(default_factory=lambda: SmoothWeightedPicker({}))
    _next: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_state(cls, doc: Mapping[str, Any], previous: Routing | None = None) -> Routing:
        backends: dict[str, list[str]] = {}
        weights: dict[str, int] = {}
        labels: dict[str, tuple[str, str]] = {}
        for entry in doc.get("routing") or []:
            version, urls = str(entry["version"]), [str(u) for u in entry.get("urls") or []]
            variant = entry.get("variant")
            key = f"{version}/{variant}" if variant else version
            backends[key] = urls
            # a version without instances cannot take its share: it goes to the others
            weights[key] = int(entry.get("weight") or 0) if urls else 0
            labels[key] = (version, str(variant or entry.get("role") or NO_VERSION))
        keep = previous is not None and previous.weights == weights
        return cls(
            generation=int(doc.get("generation") or 0),
            backends=backends,
            weights=weights,
            labels=labels,
            picker=previous.picker if keep and previous else SmoothWeightedPicker(weights),
            _next=previous._next if keep and previous else {},
        )

    def choose(self) -> tuple[str, list[str]] | None:
        """The routing key to serve the next request, and its instances in the order to try."""
        key = self.picker.pick()
        if key is None:
            return None
        urls = self.backends[key]
        start = self._next.get(key, 0) % len(urls)
        self._next[key] = start + 1
        return key, urls[start:] + urls[:start]

    def label(self, key: str) -> tuple[str, str]:
        """(version, track) of a routing key."""
        return self.labels.get(key, (key, NO_VERSION))


class Proxy:
    def __init__(self, state_file: Path, *, upstream_timeout: float = UPSTREAM_TIMEOUT_S) -> None:
        self.state_file = state_file
        self.routing = Routing()
        self.stopping = asyncio.Event()
        self._signature: tuple[int, int, int] | None = None
        self._missing_since: float | None = None
        self._upstream_timeout = upstream_timeout
        self._session: aiohttp.ClientSession | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shiplog_proxy_requests",
            "Requests through the proxy, by the version that served and the status code.",
            ["version", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "shiplog_proxy_request_duration_seconds",
            "Time from receiving a request to having the upstream response, by version.",
            ["version"],
            registry=self.registry,
        )
        self.track_requests = Counter(
            "shiplog_proxy_track_requests",
            "Requests through the proxy, by the version and track that served and the status code.",
            ["version", "track", "code"],
            registry=self.registry,
        )
        self.track_duration = Histogram(
            "shiplog_proxy_track_request_duration_seconds",
            "Time from receiving a request to having the upstream response, by version and track.",
            ["version", "track"],
            registry=self.registry,
        )

    # -- routing table -------------------------------------------------------------

    def check_reload(self, *, force: bool = False) -> None:
        try:
            st = os.stat(self.state_file)
        except FileNotFoundError:
            now = time.monotonic()
            self._missing_since = self._missing_since or now
            if now - self._missing_since > ORPHAN_AFTER_S:
                print(f"state file {self.state_file} is gone; exiting", file=sys.stderr, flush=True)
                self.stopping.set()
            return
        self._missing_since = None
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature == self._signature and not force:
            return
        try:
            doc = json.loads(self.state_file.read_bytes())
            routing = Routing.from_state(doc, self.routing)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"cannot load routing from {self.state_file}: {exc!r}", file=sys.stderr, flush=True)
            return
        self._signature = signature
        self.routing = routing

    async def watch(self) -> None:
        while not self.stopping.is_set():
            self.check_reload()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), POLL_S)

    # -- HTTP ----------------------------------------------------------------------

    async def control(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "generation": self.routing.generation,
                "pid": os.getpid(),
                "weights": self.routing.weights,
                "backends": self.routing.backends,
                "tracks": {key: track for key, (_, track) in self.routing.labels.items()},
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if request.path == CONTROL_PATH:
            return await self.control(request)
        if request.path == METRICS_PATH:
            return await self.metrics(request)
        chosen = self.routing.choose()
        if chosen is None:
            self.requests.labels(NO_VERSION, "503").inc()
            return web.json_response({"error": "no version serves"}, status=503)
        key, urls = chosen
        version, track = self.routing.label(key)
        body = await request.read()
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
        forwarded_for = [h for h in (request.headers.get("X-Forwarded-For"), request.remote) if h]
        headers["X-Forwarded-For"] = ", ".join(forwarded_for)
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Proto"] = request.scheme
        assert self._session is not None
        started = time.perf_counter()
        status, out_headers, payload = 502, CIMultiDict[str](), b""
        for url in urls:
            try:
                async with self._session.request(
                    request.method,
                    url + request.path_qs,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                ) as upstream:
                    payload = await upstream.read()
                    status = upstream.status
                    out_headers = CIMultiDict(
                        (k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
                    )
                break
            except aiohttp.ClientConnectorError:
                continue  # refused before anything was sent: another instance may take it
            except (aiohttp.ClientError, TimeoutError) as exc:
                payload = json.dumps({"error": f"upstream failed: {type(exc).__name__}"}).encode()
                out_headers = CIMultiDict({"Content-Type": "application/json"})
                break
        else:
            payload = json.dumps({"error": "no instance of the version answered"}).encode()
            out_headers = CIMultiDict({"Content-Type": "application/json"})
        took = time.perf_counter() - started
        self.duration.labels(version).observe(took)
        self.requests.labels(version, str(status)).inc()
        self.track_duration.labels(version, track).observe(took)
        self.track_requests.labels(version, track, str(status)).inc()
        out_headers[VERSION_HEADER] = version
        return web.Response(status=status, body=payload, headers=out_headers)

    async def run(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self.check_reload(force=True))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.check_reload(force=True)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._upstream_timeout),
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0),
        )
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            await self.watch()
        finally:
            await runner.cleanup()
            await self._session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--state", type=Path, required=True, help="the target's state file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--upstream-timeout", type=float, default=UPSTREAM_TIMEOUT_S)
    args = parser.parse_args(argv)
    disable_created_metrics()  # the proxy is its own process: this global setting is ours
    proxy = Proxy(args.state, upstream_timeout=args.upstream_timeout)
    try:
        asyncio.run(proxy.run(args.host, args.port))
    except OSError as exc:
        print(f"proxy cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
