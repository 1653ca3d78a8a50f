"""Verification against real HTTP servers: ``gather`` probes and scrapes a little
aiohttp service started here, behind a fake target that only answers ``status()``;
``decide`` judges what it found. No broker or database: the two are called directly.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from adapters.targets import Capabilities, TargetStatus, Track
from consumers.contract import Ports
from consumers.deployment.state import DeploymentState, fold
from consumers.verification import VERIFICATION, Facts, decide, gather
from events.deployment import DeploymentPlanned, PlannedStep, StrategyPlan, TargetRef
from events.envelope import CloudEvent
from events.execution import StepApplied, StepStarted
from events.registry import REGISTRY, new_event
from events.verification import VerificationFailed, VerificationInconclusive, VerificationPassed

CANARY, STABLE = "2.0", "1.0"
DEPLOYMENT = "shop.staging.r-9"
STEPS = [PlannedStep(kind="set_weight", weight=25), PlannedStep(kind="analysis"), PlannedStep(kind="rolling")]
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, float("inf"))
#: fast enough for a test, slow enough to be real
FAST: dict[str, Any] = {
    "health": {"path": "/healthz", "timeout_s": 1, "successes": 3, "interval_s": 0.01},
    "interval_s": 0.05,
    "count": 3,
    "consecutive_error_limit": 2,
}
CHECKS = [{"name": "error_rate", "max": 0.05}, {"name": "latency_p99", "max_increase_pct": 50}]


@dataclass
class Version:
    health: int = 200
    #: what requests through the endpoint get, and how long they say they took
    answer: int = 200
    latency_s: float = 0.02
    #: requests that arrive on their own between two scrapes: (code, count)
    per_scrape: list[tuple[str, int]] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    seconds: float = 0.0

    def record(self, code: str, n: int = 1) -> None:
        self.requests[code] = self.requests.get(code, 0) + n
        for i, le in enumerate(BUCKETS):
            if self.latency_s <= le:
                self.buckets[i] += n
        self.seconds += self.latency_s * n


@dataclass
class Service:
    """A canary and a stable instance, a weighted endpoint in front of them and the
    endpoint's metrics in Prometheus text, written by hand; the counters move on
    every scrape by what ``per_scrape`` says, and on every request through it."""

    versions: dict[str, Version]
    canary_weight: int = 25
    scrapes: int = 0
    metrics_status: int = 200
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(status=self.versions[request.match_info["version"]].health)

    async def endpoint(self, request: web.Request) -> web.Response:
        n, w = next(self._turn), self.canary_weight
        # spread evenly: request n goes to the canary when it crosses a weight boundary
        version = CANARY if (n + 1) * w // 100 > n * w // 100 else STABLE
        served = self.versions[version]
        served.record(str(served.answer))
        return web.Response(status=served.answer, text=version)

    async def metrics(self, request: web.Request) -> web.Response:
        if self.metrics_status != 200:
            return web.Response(status=self.metrics_status)
        if self.scrapes:
            for v in self.versions.values():
                for code, n in v.per_scrape:
                    v.record(code, n)
        self.scrapes += 1
        return web.Response(text=self.exposition(), content_type="text/plain")

    def exposition(self) -> str:
        lines = [
            "# HELP shiplog_proxy_requests_total Requests through the proxy.",
            "# TYPE shiplog_proxy_requests_total counter",
        ]
        for name, v in self.versions.items():
            lines += [
                f'shiplog_proxy_requests_total{{version="{name}",code="{c}"}} {n}'
                for c, n in v.requests.items()
            ]
        lines += [
            "# HELP shiplog_proxy_request_duration_seconds Upstream time.",
            "# TYPE shiplog_proxy_request_duration_seconds histogram",
        ]
        for name, v in self.versions.items():
            for le, n in zip(BUCKETS, v.buckets, strict=True):
                bound = "+Inf" if le == float("inf") else str(le)
                lines.append(
                    f'shiplog_proxy_request_duration_seconds_bucket{{version="{name}",le="{bound}"}} {n}'
                )
            lines.append(f'shiplog_proxy_request_duration_seconds_count{{version="{name}"}} {v.buckets[-1]}')
            lines.append(f'shiplog_proxy_request_duration_seconds_sum{{version="{name}"}} {v.seconds}')
        return "\n".join(lines) + "\n"


@dataclass
class FakeTarget:
    """Only ``status()`` is used by verification."""

    status_of: TargetStatus | None
    TYPE: str = "fake"
    capabilities: Capabilities = field(default_factory=Capabilities)
    calls: int = 0

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        self.calls += 1
        if self.status_of is None:
            raise ConnectionRefusedError("the target's API is down")
        return self.status_of


@dataclass
class Running:
    service: Service
    base: str

    def status(self, *, stable: bool = True, metrics_url: str | None = "default") -> TargetStatus:
        tracks = [Track(version=CANARY, role="canary", weight=25, urls=[f"{self.base}/i/{CANARY}"])]
        if stable:
            tracks.append(Track(version=STABLE, role="stable", weight=75, urls=[f"{self.base}/i/{STABLE}"]))
        return TargetStatus(
            service="shop",
            environment="staging",
            reachable=True,
            tracks=tracks,
            endpoint=f"{self.base}/app",
            metrics_url=f"{self.base}/metrics" if metrics_url == "default" else metrics_url,
        )


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    service = Service({CANARY: Version(), STABLE: Version()})
    app = web.Application()
    app.router.add_get("/i/{version}/healthz", service.healthz)
    app.router.add_get("/metrics", service.metrics)
    app.router.add_get("/app/{tail:.*}", service.endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Running(service, f"http://{host}:{port}")
    finally:
        await runner.cleanup()


def deployment(analysis: dict[str, Any], trigger: CloudEvent) -> DeploymentState:
    plan = DeploymentPlanned(
        deployment_id=DEPLOYMENT,
        release_id="r-9",
        service="shop",
        version=CANARY,
        artifact=f"shop:{CANARY}",
        environment="staging",
        stage=1,
        strategy=StrategyPlan(type="canary", reason="configured", steps=STEPS),
        target=TargetRef(type="fake", settings={"anything": 1}),
        analysis=analysis,
        plan_hash="h",
    )
    return fold([emit(plan), trigger])


def emit(data: Any) -> CloudEvent:
    return new_event(data, source="shiplog/execution", subject=DEPLOYMENT, correlationid="r-9")


def analysis_started() -> CloudEvent:
    return emit(StepStarted(deployment_id=DEPLOYMENT, index=1, step_id="s1", step=STEPS[1]))


def applied(index: int) -> CloudEvent:
    return emit(
        StepApplied(deployment_id=DEPLOYMENT, index=index, step_id=f"s{index}", step=STEPS[index], ok=True)
    )


async def verify(
    target: FakeTarget, analysis: dict[str, Any], trigger: CloudEvent | None = None
) -> tuple[CloudEvent, Facts]:
    trigger = trigger or analysis_started()
    state = deployment(analysis, trigger)
    seen: list[tuple[str, dict[str, Any]]] = []

    def targets(type_: str, settings: dict[str, Any]) -> FakeTarget:
        seen.append((type_, settings))
        return target

    facts = await VERIFICATION.run_gather(Ports(targets=targets), state, trigger)
    assert seen[0] == ("fake", {"anything": 1})
    [verdict] = VERIFICATION.run_decide(state, trigger, datetime.now(UTC), **facts)
    assert verdict.causationid == trigger.id and verdict.correlationid == "r-9"
    return verdict, facts["facts"]


def outcomes(verdict: CloudEvent) -> list[tuple[str, str]]:
    return [(m["metric"], m["outcome"]) for m in verdict.data["measurements"]]


async def test_a_healthy_canary_passes(running: Running) -> None:
    running.service.versions[CANARY].per_scrape = [("200", 10)]
    running.service.versions[STABLE].per_scrape = [("200", 30)]
    verdict, _ = await verify(FakeTarget(running.status()), {**FAST, "metrics": CHECKS})
    data = REGISTRY.payload(verdict, VerificationPassed)
    assert data.outcome == "Successful", data.reason
    assert (
        outcomes(verdict)
        == [("target", "Successful"), ("health", "Successful")]
        + [
            ("error_rate", "Successful"),
            ("latency_p99", "Successful"),
        ]
        * 3
        + [("impact", "Successful")]  # recorded, not gating: no impact limits are set
    )
    last = data.measurements[-3]
    assert last.detail["canary"]["requests"] == 30 and last.detail["stable"]["requests"] == 90
    impact = data.measurements[-1]
    assert impact.detail["share_measured"] == 0.25
    assert impact.detail["affected_requests"] == pytest.approx(0)
    assert data.measurements[1].detail["answers"] == [200, 200, 200]
    assert running.service.scrapes == 4  # the baseline and three measurements


async def test_a_canary_answering_500_fails(running: Running) -> None:
    canary = running.service.versions[CANARY]
    canary.per_scrape = [("200", 5), ("500", 5)]
    running.service.versions[STABLE].per_scrape = [("200", 30)]
    verdict, _ = await verify(FakeTarget(running.status()), {**FAST, "metrics": CHECKS})
    data = REGISTRY.payload(verdict, VerificationFailed)
    assert data.outcome == "Failed"
    assert ("error_rate", "Failed") in outcomes(verdict)
    assert "error_rate Failed" in data.reason


async def test_an_unhealthy_new_version_fails_after_a_step(running: Running) -> None:
    running.service.versions[CANARY].health = 500
    verdict, facts = await verify(FakeTarget(running.status()), FAST, trigger=applied(2))
    data = REGISTRY.payload(verdict, VerificationFailed)
    assert (data.outcome, data.step_index) == ("Failed", 2)
    assert outcomes(verdict) == [("target", "Successful"), ("health", "Failed")]
    # 3 in a row within 6 attempts is out of reach after 4 failures: probing stops there
    assert data.measurements[1].detail["answers"] == [500] * 4
    assert facts.scrapes is None  # a rolling step measures no metrics


async def test_no_requests_is_inconclusive(running: Running) -> None:
    verdict, _ = await verify(FakeTarget(running.status()), {**FAST, "metrics": CHECKS})
    data = REGISTRY.payload(verdict, VerificationInconclusive)
    assert data.outcome == "Inconclusive"
    assert ("error_rate", "Inconclusive") in outcomes(verdict)
    assert all(
        m.detail["reason"] == "no requests reached the new version"
        for m in data.measurements
        if m.metric == "error_rate"
    )


async def test_load_through_the_endpoint_gives_the_metrics_data(running: Running) -> None:
    analysis = {**FAST, "metrics": CHECKS, "load": {"requests": 120, "concurrency": 10}}
    verdict, facts = await verify(FakeTarget(running.status()), analysis)
    data = REGISTRY.payload(verdict, VerificationPassed)
    assert data.outcome == "Successful", data.reason
    assert facts.load is not None and (facts.load.sent, facts.load.failed) == (120, 0)
    served = running.service.versions
    assert sum(served[CANARY].requests.values()) == 30 and sum(served[STABLE].requests.values()) == 90
    assert data.measurements[-2].detail["load"] == {"sent": 120, "failed": 0}


async def test_load_on_a_failing_canary_fails_it(running: Running) -> None:
    running.service.versions[CANARY].answer = 503
    analysis = {**FAST, "metrics": CHECKS, "load": {"requests": 60}}
    verdict, _ = await verify(FakeTarget(running.status()), analysis)
    assert REGISTRY.payload(verdict, VerificationFailed).outcome == "Failed"


async def test_a_weight_change_beside_a_stable_version_measures_metrics(running: Running) -> None:
    running.service.versions[CANARY].per_scrape = [("200", 10)]
    running.service.versions[STABLE].per_scrape = [("200", 10)]
    verdict, facts = await verify(
        FakeTarget(running.status()), {**FAST, "metrics": CHECKS}, trigger=applied(0)
    )
    assert REGISTRY.payload(verdict, VerificationPassed).step_index == 0
    assert facts.scrapes is not None


async def test_a_weight_change_without_a_stable_version_checks_health_only(running: Running) -> None:
    verdict, facts = await verify(
        FakeTarget(running.status(stable=False)), {**FAST, "metrics": CHECKS}, trigger=applied(0)
    )
    assert outcomes(verdict) == [("target", "Successful"), ("health", "Successful")]
    assert facts.scrapes is None and running.service.scrapes == 0


async def test_metrics_that_cannot_be_read_end_in_error(running: Running) -> None:
    running.service.metrics_status = 500
    verdict, facts = await verify(FakeTarget(running.status()), {**FAST, "metrics": CHECKS})
    data = REGISTRY.payload(verdict, VerificationFailed)
    assert data.outcome == "Error"
    assert facts.scrapes is not None and len(facts.scrapes) == 3  # consecutive_error_limit 2, then gives up
    assert "HTTP 500" in data.reason


async def test_a_target_without_a_metrics_endpoint_is_inconclusive(running: Running) -> None:
    verdict, _ = await verify(FakeTarget(running.status(metrics_url=None)), {**FAST, "metrics": CHECKS})
    assert REGISTRY.payload(verdict, VerificationInconclusive).outcome == "Inconclusive"


async def test_a_target_that_does_not_answer_is_an_error_not_a_crash(running: Running) -> None:
    target = FakeTarget(None)
    verdict, _ = await verify(target, FAST)
    data = REGISTRY.payload(verdict, VerificationFailed)
    assert data.outcome == "Error"
    assert target.calls == 3  # consecutive_error_limit 2: the third error in a row ends it
    assert all("the target's API is down" in (m.error or "") for m in data.measurements)


async def test_an_instance_that_is_gone_fails_health(running: Running) -> None:
    status = running.status().model_copy(
        update={"tracks": [Track(version=CANARY, role="canary", urls=["http://127.0.0.1:9"])]}
    )
    verdict, _ = await verify(FakeTarget(status), FAST, trigger=applied(2))
    data = REGISTRY.payload(verdict, VerificationFailed)
    assert outcomes(verdict) == [("target", "Successful"), ("health", "Failed")]
    assert all(isinstance(a, str) for a in data.measurements[1].detail["answers"])


async def test_a_redelivery_after_the_verdict_measures_nothing(running: Running) -> None:
    trigger = applied(2)
    state = deployment(FAST, trigger)
    target = FakeTarget(running.status())
    ports = Ports(targets=lambda type_, settings: target)
    facts = await gather(ports, state, trigger)
    [verdict] = decide(state, trigger, now=datetime.now(UTC), facts=facts)
    verified = VERIFICATION.evolve(state, verdict)
    calls = target.calls
    assert await gather(ports, verified, trigger) is None
    assert target.calls == calls
    assert decide(verified, trigger, now=datetime.now(UTC), facts=None) == []
