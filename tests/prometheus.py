"""A real Prometheus for tests, loaded with known series.

``prometheus_server`` (session scope) writes the series of ``KNOWN`` as OpenMetrics
text, backfills them with ``promtool tsdb create-blocks-from openmetrics`` into a
fresh TSDB *before* starting the server (blocks added later show only after a
reload), starts ``prometheus`` on a free port, waits for ``/-/ready`` and stops it
afterwards. The series end a few minutes before the session starts and span
``SPAN``: well within the default 15-day retention.

Nothing skips for want of Prometheus: when ``prometheus`` or ``promtool`` is not on
PATH the fixture installs the Debian package (``apt-get``, as root or with sudo) or
fails, saying why.

Every series is a straight line — counters grow by the same amount every ``STEP_S``
— so ``rate`` over any window inside the data is exact, and the expected values
(error rate, p99 from ``histogram_quantile``) can be computed by hand.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

STEP_S = 10
SPAN = timedelta(hours=3)
#: the data ends this long before the session starts (so it is settled in the blocks)
END_BEFORE_NOW = timedelta(minutes=5)
READY_TIMEOUT_S = 30.0
INSTALL_TIMEOUT_S = 240  # within the test module's timeout

SERVICE = "checkout"
ENVIRONMENT = "production"
STABLE = "1.4.1"
CANARY = "1.5.0"
#: a canary that behaves exactly like stable (the judge must pass it)
HEALTHY_CANARY = "1.5.1"
#: a label value that needs escaping in a PromQL string literal
ODD_SERVICE = 'o\'brien "quoted" \\ svc'
#: a service that took no traffic at all: its ratios are 0/0 = NaN
IDLE_SERVICE = "idle"
#: bucket upper bounds of the latency histogram
BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")

ERROR_RATE = (
    'sum(rate(http_requests_total{service="{{service}}",env="{{environment}}",'
    'version="{{version}}",track="{{track}}",code=~"5.."}[{{window}}]))'
    ' / sum(rate(http_requests_total{service="{{service}}",env="{{environment}}",'
    'version="{{version}}",track="{{track}}"}[{{window}}]))'
)
LATENCY_P99 = (
    "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{"
    'service="{{service}}",env="{{environment}}",version="{{version}}",track="{{track}}"}[{{window}}])))'
)


@dataclass(frozen=True)
class Known:
    """One version of one service on one track, and what its queries must return."""

    service: str
    version: str
    track: str
    #: per step: answers other than 5xx, 5xx answers
    ok_per_step: int
    errors_per_step: int
    #: per step: cumulative observations per bucket bound (``BOUNDS``)
    buckets_per_step: tuple[int, ...]
    #: what the error-rate and p99 templates must return (None: NaN)
    error_rate: float | None
    p99_s: float | None

    @property
    def labels(self) -> str:
        return (
            f'service="{_om_escape(self.service)}",env="{ENVIRONMENT}",'
            f'version="{_om_escape(self.version)}",track="{self.track}"'
        )


KNOWN: tuple[Known, ...] = (
    # stable: 1% 5xx; p99 in the (0.25, 0.5] bucket: 0.25 + 0.25 * (99 - 98) / 2
    Known(SERVICE, STABLE, "stable", 99, 1, (50, 90, 98, 100, 100, 100), 0.01, 0.375),
    # the same old version started fresh beside the canary: 2% 5xx, same latency
    Known(SERVICE, STABLE, "baseline", 98, 2, (50, 90, 98, 100, 100, 100), 0.02, 0.375),
    # canary: 5% 5xx; p99 in the (0.5, 1] bucket: 0.5 + 0.5 * (99 - 96) / 4
    Known(SERVICE, CANARY, "canary", 95, 5, (40, 70, 90, 96, 100, 100), 0.05, 0.875),
    # a version whose dots a regex matcher must not take for "any character"
    Known(SERVICE, "1x5x0", "canary", 50, 50, (0, 0, 0, 0, 100, 100), 0.5, 0.995),
    Known(ODD_SERVICE, CANARY, "canary", 90, 10, (100, 100, 100, 100, 100, 100), 0.1, 0.0495),
    Known(IDLE_SERVICE, CANARY, "canary", 0, 0, (0, 0, 0, 0, 0, 0), None, None),
    # a canary as good as stable: 1% 5xx, p99 0.375 s
    Known(SERVICE, HEALTHY_CANARY, "canary", 99, 1, (50, 90, 98, 100, 100, 100), 0.01, 0.375),
)


def known(service: str, version: str, track: str) -> Known:
    return next(k for k in KNOWN if (k.service, k.version, k.track) == (service, version, track))


@dataclass(frozen=True)
class PrometheusServer:
    url: str
    #: the first and the last instant with data
    data_start: datetime
    data_end: datetime
    log: Path

    @property
    def at(self) -> datetime:
        """An instant well inside the data, where every ``rate(...[5m])`` is exact."""
        return self.data_end - timedelta(minutes=30)


def _om_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(start: int, end: int, series: Sequence[Known] = KNOWN) -> str:
    """The known series from ``start`` to ``end`` (Unix seconds, both included), one
    sample every ``STEP_S``, in OpenMetrics text: families not interleaved, each
    series in time order, ``# EOF`` last."""
    times = range(start, end + 1, STEP_S)
    lines = ["# HELP http_requests Requests answered.", "# TYPE http_requests counter"]
    for k in series:
        for code, per_step in (("200", k.ok_per_step), ("500", k.errors_per_step)):
            lines.extend(
                f'http_requests_total{{{k.labels},code="{code}"}} {n * per_step} {t}'
                for n, t in enumerate(times)
            )
    lines += [
        "# HELP http_request_duration_seconds Time to answer.",
        "# TYPE http_request_duration_seconds histogram",
    ]
    for k in series:
        total = k.buckets_per_step[-1]
        for n, t in enumerate(times):
            for bound, per_step in zip(BOUNDS, k.buckets_per_step, strict=True):
                lines.append(
                    f'http_request_duration_seconds_bucket{{{k.labels},le="{bound}"}} {n * per_step} {t}'
                )
            lines.append(f"http_request_duration_seconds_count{{{k.labels}}} {n * total} {t}")
            lines.append(f"http_request_duration_seconds_sum{{{k.labels}}} {n * total * 0.1:.3f} {t}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


# --- finding (or installing) and running Prometheus ----------------------------------


def _binaries() -> tuple[str, str] | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return (prometheus, promtool) if prometheus and promtool else None


def ensure_installed() -> tuple[str, str]:
    """``(prometheus, promtool)``; installs the Debian package when either is missing."""
    found = _binaries()
    if found:
        return found
    apt = shutil.which("apt-get")
    sudo: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            pytest.fail("prometheus/promtool are not installed and neither root nor sudo can install them")
        sudo = ["sudo", "-n"]
    if apt is None:
        pytest.fail("prometheus/promtool are not on PATH and there is no apt-get to install them with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        [*sudo, apt, "update", "-qq"],
        [*sudo, apt, "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    found = _binaries()
    if not found:
        pytest.fail("the prometheus package was installed but prometheus/promtool are not on PATH")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def backfill(promtool: str, data: str, workdir: Path, tsdb: Path) -> None:
    source = workdir / "data.om"
    source.write_text(data)
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        pytest.fail(
            f"promtool backfill failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail(f"prometheus was not ready within {READY_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    prometheus, promtool = ensure_installed()
    workdir = tmp_path_factory.mktemp("prometheus")
    tsdb = workdir / "tsdb"
    tsdb.mkdir()
    end = int((datetime.now(UTC) - END_BEFORE_NOW).timestamp()) // 60 * 60
    start = end - int(SPAN.total_seconds())
    backfill(promtool, openmetrics(start, end), workdir, tsdb)
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tsdb}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        _wait_ready(url, process, log)
        yield PrometheusServer(
            url=url,
            data_start=datetime.fromtimestamp(start, UTC),
            data_end=datetime.fromtimestamp(end, UTC),
            log=log,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
