"""The verification consumer's imperative part: look at the target and measure.

``gather`` asks the target what serves (``Target.status``), probes every instance
of the new version on its health path, and — when metrics are wanted — scrapes the
target's metrics endpoint ``count + 1`` times ``interval_s`` apart (the first good
scrape is the baseline each window is measured from), optionally sending load
through the target's endpoint between scrapes so there is traffic to measure.

It judges nothing: every answer, status code and counter goes back as ``Facts``
for the pure ``decide``. No exception escapes: a failure to reach the target or its
metrics is recorded as an error and becomes an Error measurement. Running it twice
(a redelivery) only measures again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from dataclasses import replace
from typing import Any

import aiohttp
from pydantic import ValidationError

from adapters.targets import TargetStatus
from consumers.deployment.state import DeploymentState
from consumers.verification.analysis import wants_metrics
from consumers.verification.core import Check, check_for
from consumers.verification.facts import Facts, HealthObservation, LoadResult, Probe, ScrapeAttempt
from consumers.verification.policy import AnalysisPolicy, HealthPolicy, LoadPolicy, policy_of
from consumers.verification.prometheus import parse_scrape
from events.envelope import CloudEvent

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    """An exception as one line for the record (never with credentials: the
    messages here come from HTTP clients and targets, which name URLs only)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def join_url(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path.lstrip('/')}"


def stable_version(status: TargetStatus, canary: str) -> str | None:
    """The version serving beside the new one: the stable track, else any other."""
    others = [t for t in status.tracks if t.version != canary]
    if not others:
        return None
    return min(others, key=lambda t: (t.role != "stable", -t.weight)).version


def status_summary(status: TargetStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", include={"reachable", "tracks", "endpoint", "metrics_url"})


async def gather(ports: Any, state: DeploymentState, event: CloudEvent) -> Facts | None:
    """Measure what the event calls for; None when it calls for nothing."""
    check = check_for(state, event)
    if check is None:
        return None
    try:
        policy = policy_of(check.plan)
    except ValidationError:
        return None  # decide reports the invalid policy
    try:
        async with aiohttp.ClientSession() as http:
            return await observe(ports, check, policy, http)
    except Exception as exc:  # a bug here must still end in a verdict, not a crash
        log.exception("verification of %s step %s failed", check.plan.deployment_id, check.index)
        return Facts(canary=check.plan.version, status_errors=(f"verification failed: {describe(exc)}",))


async def observe(ports: Any, check: Check, policy: AnalysisPolicy, http: aiohttp.ClientSession) -> Facts:
    plan = check.plan
    status, errors = await read_status(ports, check, policy)
    if status is None:
        return Facts(canary=plan.version, status_errors=tuple(errors))
    stable = stable_version(status, plan.version)
    facts = Facts(
        canary=plan.version, stable=stable, status_errors=tuple(errors), status=status_summary(status)
    )
    if policy.health is not None:
        urls = list(dict.fromkeys(u for t in status.tracks if t.version == plan.version for u in t.urls))
        health = await asyncio.gather(*(probe_instance(http, url, policy.health) for url in urls))
        facts = replace(facts, health=tuple(health))
    if wants_metrics(check.kind, policy, stable):
        if status.metrics_url is None:
            facts = replace(facts, metrics_unavailable="the target exposes no metrics endpoint")
        else:
            scrapes, load = await measure_traffic(http, status, policy)
            facts = replace(facts, scrapes=scrapes, load=load)
    return facts


async def read_status(
    ports: Any, check: Check, policy: AnalysisPolicy
) -> tuple[TargetStatus | None, list[str]]:
    """The target's status, retried ``interval_s`` apart until it answers reachable
    or ``consecutive_error_limit`` is exceeded; every failed attempt is recorded."""
    plan = check.plan
    errors: list[str] = []
    for attempt in range(policy.consecutive_error_limit + 1):
        if attempt:
            await asyncio.sleep(policy.interval_s)
        try:
            if ports is None or ports.targets is None:
                raise RuntimeError("no targets port configured")
            target = ports.targets(plan.target.type, plan.target.settings)
            if inspect.isawaitable(target):
                target = await target
            status = await target.status(plan.service, plan.environment)
        except Exception as exc:
            errors.append(f"target status: {describe(exc)}")
            continue
        if not status.reachable:
            errors.append(f"target {plan.target.type} is not reachable")
            continue
        return status, errors
    return None, errors


async def probe(http: aiohttp.ClientSession, url: str, timeout_s: float) -> Probe:
    started = time.perf_counter()
    try:
        async with http.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
        ) as resp:
            await resp.read()
            return Probe(status=resp.status, elapsed_s=time.perf_counter() - started)
    except TimeoutError:
        return Probe(error=f"no answer within {timeout_s:g}s", elapsed_s=time.perf_counter() - started)
    except Exception as exc:
        return Probe(error=describe(exc), elapsed_s=time.perf_counter() - started)


async def probe_instance(
    http: aiohttp.ClientSession, base_url: str, health: HealthPolicy
) -> HealthObservation:
    """Probe until ``successes`` answers in a row, or until that can no longer happen
    within ``health.attempts`` probes."""
    url = join_url(base_url, health.path)
    probes: list[Probe] = []
    run = 0
    for attempt in range(health.attempts):
        if run >= health.successes or health.attempts - attempt < health.successes - run:
            break
        if attempt:
            await asyncio.sleep(health.interval_s)
        result = await probe(http, url, health.timeout_s)
        probes.append(result)
        run = run + 1 if result.ok else 0
    return HealthObservation(url=url, probes=tuple(probes))


async def scrape(http: aiohttp.ClientSession, url: str, timeout_s: float, at_s: float) -> ScrapeAttempt:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            text = await resp.text()
            if resp.status != 200:
                return ScrapeAttempt(at_s=at_s, error=f"metrics endpoint answered HTTP {resp.status}")
        return ScrapeAttempt(at_s=at_s, counters=parse_scrape(text))
    except TimeoutError:
        return ScrapeAttempt(at_s=at_s, error=f"metrics endpoint: no answer within {timeout_s:g}s")
    except Exception as exc:
        return ScrapeAttempt(at_s=at_s, error=f"metrics endpoint: {describe(exc)}")


def split_load(total: int, parts: int) -> list[int]:
    """``total`` requests in ``parts`` batches as even as can be, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


async def send_load(http: aiohttp.ClientSession, url: str, requests: int, load: LoadPolicy) -> LoadResult:
    """GET ``url`` ``requests`` times, ``load.concurrency`` at a time; any answer
    counts as sent (the metrics judge it), no answer as failed."""
    gate = asyncio.Semaphore(load.concurrency)
    first_error: list[str] = []

    async def one() -> bool:
        async with gate:
            try:
                async with http.get(
                    url, timeout=aiohttp.ClientTimeout(total=load.timeout_s), allow_redirects=False
                ) as resp:
                    await resp.read()
                return True
            except Exception as exc:
                if not first_error:
                    first_error.append(describe(exc))
                return False

    answered = await asyncio.gather(*(one() for _ in range(requests)))
    return LoadResult(
        sent=requests, failed=answered.count(False), error=first_error[0] if first_error else None
    )


async def measure_traffic(
    http: aiohttp.ClientSession, status: TargetStatus, policy: AnalysisPolicy
) -> tuple[tuple[ScrapeAttempt, ...], LoadResult | None]:
    """A baseline scrape, then ``count`` scrapes ``interval_s`` apart, each measured
    from the baseline; a failed scrape is retried in the next slot until
    ``consecutive_error_limit`` is exceeded. With a load policy, a share of the
    requests goes through the endpoint before each measuring scrape."""
    assert status.metrics_url is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    batches: list[int] = []
    load: LoadResult | None = None
    if policy.load is not None:
        if status.endpoint is None:
            load = LoadResult(error="the target has no endpoint to send load through")
        else:
            batches = split_load(policy.load.requests, policy.count)
            load = LoadResult()
    attempts: list[ScrapeAttempt] = []
    baseline = False
    measured = errors_in_a_row = 0
    while measured < policy.count and errors_in_a_row <= policy.consecutive_error_limit:
        if attempts:
            due = started + attempts[-1].at_s + policy.interval_s
            if baseline and batches and policy.load is not None and status.endpoint is not None:
                sent = await send_load(
                    http, join_url(status.endpoint, policy.load.path), batches.pop(0), policy.load
                )
                assert load is not None
                load = LoadResult(
                    sent=load.sent + sent.sent,
                    failed=load.failed + sent.failed,
                    error=load.error or sent.error,
                )
            await asyncio.sleep(max(0.0, due - loop.time()))
        attempt = await scrape(http, status.metrics_url, policy.scrape_timeout_s, loop.time() - started)
        attempts.append(attempt)
        if attempt.counters is None:
            errors_in_a_row += 1
            continue
        errors_in_a_row = 0
        if baseline:
            measured += 1
        baseline = True
    return tuple(attempts), load
