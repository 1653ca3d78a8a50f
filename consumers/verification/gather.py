"""The verification consumer's imperative part: look at the target and measure.

``gather`` asks the target what serves (``Target.status``), probes every instance
of the new version on its health path, and — when metrics are wanted — at once:

- scrapes the target's metrics endpoint ``count + 1`` times ``interval_s`` apart
  (the first good scrape is the baseline each window is measured from), optionally
  sending load through the target's endpoint between scrapes;
- runs every query check against the analysis's Prometheus: after its initial
  delay, every ``interval_s``, the template rendered for the new version (track
  ``canary``) and for the compared track (the version serving beside it, as track
  ``stable`` or ``baseline``), both evaluated at the same instant, until ``count``
  rounds were measured or more than ``consecutive_error_limit`` rounds in a row
  were errors (as Argo counts them: errors are not measurements). One httpx client
  per gather, closed at its end; header secrets are resolved here and kept out of
  everything recorded.

It judges nothing: every answer, status code, counter and query result goes back as
``Facts`` for the pure ``decide`` (it only asks ``analysis`` whether a round was an
Error, to know when to stop). No exception escapes: a failure to reach the target,
its metrics or Prometheus is recorded as an error and becomes an Error measurement.
Running it twice (a redelivery) only measures again.

Queries are evaluated at ``ports.extra["clock"]()`` when the ports give one (an
aware datetime; tests freeze it inside backfilled data), else at the wall clock.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
from pydantic import ValidationError

from adapters.metrics import MetricsProvider, QueryResult, create_metrics
from adapters.metrics.cloudwatch import AlarmStates, CloudWatchMetrics
from adapters.metrics.prometheus import PrometheusMetrics, QueryContext, QueryTemplate, TemplateError, Track
from adapters.targets import TargetStatus
from consumers.deployment.state import DeploymentState
from consumers.secrets import resolve_values
from consumers.verification.analysis import assess_query, wants_judge, wants_metrics
from consumers.verification.comparison import compared_track
from consumers.verification.core import Check, check_for
from consumers.verification.facts import (
    Facts,
    HealthObservation,
    History,
    JudgeRange,
    LoadResult,
    PreviousValue,
    Probe,
    QueryRound,
    ScrapeAttempt,
)
from consumers.verification.policy import (
    AnalysisPolicy,
    HealthPolicy,
    JudgePolicy,
    LoadPolicy,
    PrometheusSettings,
    QueryCheck,
    Schedule,
    VsPrevious,
    policy_of,
)
from consumers.verification.prometheus import parse_scrape
from events.deployment import DeploymentPlanned, DeploymentSucceeded, deployment_stream
from events.envelope import CloudEvent
from events.errors import InvalidInput
from events.registry import REGISTRY
from events.verification import VerificationPassed

log = logging.getLogger(__name__)

#: the instant a query is evaluated at
Clock = Callable[[], datetime]
#: the most earlier successful deployments read looking for a check's previous values
HISTORY_SCAN_LIMIT = 50


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
    # CloudWatch is watched while the rest is measured, so an alarm mid-analysis counts
    cloudwatch = asyncio.ensure_future(
        watch_cloudwatch(policy, check, wants_metrics(check.kind, policy, stable), clock_of(ports))
    )
    try:
        facts = await _observe_target(ports, check, policy, http, status, stable, facts)
    except BaseException:
        cloudwatch.cancel()
        raise
    return replace(facts, **await cloudwatch)


async def _observe_target(
    ports: Any,
    check: Check,
    policy: AnalysisPolicy,
    http: aiohttp.ClientSession,
    status: TargetStatus,
    stable: str | None,
    facts: Facts,
) -> Facts:
    plan = check.plan
    if policy.health is not None:
        urls = list(dict.fromkeys(u for t in status.tracks if t.version == plan.version for u in t.urls))
        health = await asyncio.gather(*(probe_instance(http, url, policy.health) for url in urls))
        facts = replace(facts, health=tuple(health))
    if wants_metrics(check.kind, policy, stable):
        scraped, (queried, ranges), history = await asyncio.gather(
            scrape_metrics(http, status, policy),
            queries_then_judge(ports, check, policy, status, stable),
            read_history(getattr(ports, "log", None), plan, policy.history_checks()),
        )
        facts = replace(facts, **scraped, queries=queried, judge_ranges=ranges, history=history or None)
        # at the end of the analysis, so the windows cover it
        slo_results, users = await run_impact_queries(
            policy, plan, clock=clock_of(ports), config_dir=getattr(ports, "config_dir", None)
        )
        facts = replace(facts, slo_results=slo_results, users=users)
    return facts


async def queries_then_judge(
    ports: Any, check: Check, policy: AnalysisPolicy, status: TargetStatus, stable: str | None
) -> tuple[tuple[QueryRound, ...] | None, tuple[JudgeRange, ...] | None]:
    """The query checks' rounds, then (at an analysis step with a judge) the judge's
    ranges, ending when the rounds ended so they cover the analysis."""
    clock, config_dir = clock_of(ports), getattr(ports, "config_dir", None)
    queried = await run_queries(policy, check.plan, stable, clock=clock, config_dir=config_dir)
    if not wants_judge(check.kind, policy):
        return queried, None
    assert policy.judge is not None and policy.prometheus is not None
    tracks = [t.model_dump(mode="json") for t in status.tracks]
    track, version, fallback = compared_track(policy.judge.baseline, tracks, check.plan.version, stable)
    if fallback is not None:
        log.info("%s: %s", check.plan.deployment_id, fallback)
    ranges = await run_judge(policy, check.plan, track, version, clock=clock, config_dir=config_dir)
    return queried, ranges


async def scrape_metrics(
    http: aiohttp.ClientSession, status: TargetStatus, policy: AnalysisPolicy
) -> dict[str, Any]:
    """The built-in metrics' facts: scrapes and load, or why there are none."""
    if not policy.scrapes_wanted:
        return {}
    if status.metrics_url is None:
        return {"metrics_unavailable": "the target exposes no metrics endpoint"}
    await asyncio.sleep(policy.initial_delay_s)
    scrapes, load = await measure_traffic(http, status, policy)
    return {"scrapes": scrapes, "load": load}


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
            status = await target.status(plan.service, plan.environment, plan.target.settings)
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


# --- CloudWatch --------------------------------------------------------------------


async def watch_cloudwatch(
    policy: AnalysisPolicy, check: Check, metrics: bool, clock: Clock
) -> dict[str, Any]:
    """The named alarms' states and (when ``metrics``) every CloudWatch query check's
    result, once per round: ``count`` rounds ``interval_s`` apart at an analysis
    step, one after any other step. Never raises: a failed call is in the result."""
    queries = policy.cloudwatch_queries if metrics else []
    if not policy.alarms and not queries:
        return {}
    settings = policy.cloudwatch
    source = CloudWatchMetrics.from_config(
        {}
        if settings is None
        else {
            "region": settings.region,
            "endpoint_url": settings.endpoint_url,
            "timeout_s": settings.timeout_s,
        }
    )
    plan = check.plan
    texts = [(q.name, q.rendered(plan.service, plan.environment, plan.version).text()) for q in queries]
    rounds = policy.count if check.kind == "analysis" else 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    alarms: list[AlarmStates] = []
    results: list[tuple[str, QueryResult]] = []
    for n in range(rounds):
        if n:
            await asyncio.sleep(max(0.0, started + n * policy.interval_s - loop.time()))
        at = clock()
        jobs: list[Any] = [source.query(text, at) for _, text in texts]
        if policy.alarms:
            jobs.append(source.alarm_states(policy.alarms))
        answers = await asyncio.gather(*jobs)
        results += [(name, answer) for (name, _), answer in zip(texts, answers, strict=False)]
        if policy.alarms:
            alarms.append(answers[-1])
    out: dict[str, Any] = {}
    if policy.alarms:
        out["alarms"] = tuple(alarms)
    if queries:
        out["cloudwatch"] = tuple(results)
    return out


# --- query checks ------------------------------------------------------------------


def clock_of(ports: Any) -> Clock:
    """``ports.extra["clock"]`` when the ports give one, else the wall clock."""
    clock = (getattr(ports, "extra", None) or {}).get("clock")
    if callable(clock):
        return clock
    return lambda: datetime.now(UTC)


def _failed(query: str, at: datetime, error_type: str, message: str) -> QueryResult:
    return QueryResult(
        query, "error", message=message, error_type=error_type, params={"time": at.timestamp()}
    )


def _scrub(result: QueryResult, secrets: Sequence[str]) -> QueryResult:
    """A result whose message cannot give a header's secret away (an HTTP library's
    complaint about a header may quote its value)."""
    message = result.message
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return result if message == result.message else replace(result, message=message)


async def run_query(
    source: MetricsProvider | str,
    template: QueryTemplate,
    context: QueryContext,
    at: datetime,
    secrets: Sequence[str] = (),
) -> QueryResult:
    """One query's result; ``source`` is the provider, or why there is none. Never
    raises: a template that cannot be rendered, a missing provider, a provider that
    raises after all are error results."""
    try:
        query = template.render(context)
    except TemplateError as exc:
        return _failed(template.text, at, "template", f"cannot render the query: {exc}")
    if isinstance(source, str):
        return _failed(query, at, "unavailable", source)
    try:
        result = await source.query(query, at)
    except Exception as exc:  # the protocol says it never raises; a bug must still be an Error
        log.exception("metrics provider raised on %s", query)
        result = _failed(query, at, "exception", f"the metrics provider raised {describe(exc)}")
    return _scrub(result, secrets)


async def query_round(
    source: MetricsProvider | str,
    plan: DeploymentPlanned,
    check: QueryCheck,
    compared_version: str | None,
    *,
    attempt: int,
    at: datetime,
    secrets: Sequence[str] = (),
) -> QueryRound:
    """The check's query for the new version and the compared track, both at ``at``."""
    template = QueryTemplate(check.query)

    def context(version: str, track: Track) -> QueryContext:
        return QueryContext(plan.service, plan.environment, version, track, check.window)

    track = check.compared_track
    jobs = [run_query(source, template, context(plan.version, "canary"), at, secrets)]
    missing = None
    if track is not None and compared_version is None:
        missing = f"no {track} version serves beside {plan.version} to compare with"
    elif track is not None and compared_version is not None:
        jobs.append(run_query(source, template, context(compared_version, track), at, secrets))
    results = await asyncio.gather(*jobs)
    return QueryRound(
        check=check.name,
        attempt=attempt,
        at=at,
        canary_version=plan.version,
        canary=results[0],
        compared_version=compared_version if track is not None else None,
        compared=results[1] if len(results) > 1 else None,
        compared_missing=missing,
    )


async def query_check(
    source: MetricsProvider | str,
    plan: DeploymentPlanned,
    check: QueryCheck,
    schedule: Schedule,
    compared_version: str | None,
    *,
    clock: Clock,
    secrets: Sequence[str] = (),
) -> list[QueryRound]:
    """Every round of one check: after ``initial_delay_s``, one every ``interval_s``
    until ``count`` were measured or more than ``consecutive_error_limit`` in a row
    were Errors (then the check stops: it ends as Error)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(schedule.initial_delay_s)
    started = loop.time()
    rounds: list[QueryRound] = []
    measured = errors_in_a_row = 0
    while measured < schedule.count and errors_in_a_row <= schedule.limits.consecutive_error_limit:
        if rounds:
            await asyncio.sleep(max(0.0, started + len(rounds) * schedule.interval_s - loop.time()))
        run = await query_round(
            source, plan, check, compared_version, attempt=len(rounds), at=clock(), secrets=secrets
        )
        rounds.append(run)
        if assess_query(check, run).outcome == "Error":
            errors_in_a_row += 1
        else:
            errors_in_a_row, measured = 0, measured + 1
    return rounds


def provider_headers(settings: PrometheusSettings, config_dir: Any) -> dict[str, str]:
    """The headers with their secrets resolved; raises ``InvalidInput`` naming the
    header (never the value) when one does not resolve."""
    refs = {name: ref.as_value() for name, ref in settings.headers.items()}
    return resolve_values(refs, config_dir) if refs else {}


@asynccontextmanager
async def provider_of(
    settings: PrometheusSettings, config_dir: Any
) -> AsyncIterator[tuple[MetricsProvider | str, list[str]]]:
    """``(provider, header secrets)``, closed afterwards; the provider is a string
    saying why when it cannot be built (a secret that does not resolve, an invalid
    URL), which makes every query an error result."""
    async with httpx.AsyncClient(trust_env=False) as client:
        source: MetricsProvider | str
        secrets: list[str] = []
        try:
            headers = provider_headers(settings, config_dir)
            secrets = list(headers.values())
            source = create_metrics(
                PrometheusMetrics.TYPE,
                {"base_url": settings.url, "timeout_s": settings.timeout_s, "headers": headers},
                http=client,
            )
        except InvalidInput as exc:
            source = f"the prometheus provider cannot be used: {exc}"
        try:
            yield source, secrets
        finally:
            if not isinstance(source, str):
                await source.aclose()


async def run_queries(
    policy: AnalysisPolicy,
    plan: DeploymentPlanned,
    compared_version: str | None,
    *,
    clock: Clock,
    config_dir: Any = None,
) -> tuple[QueryRound, ...] | None:
    """Every query check at once, against one provider built from the plan's
    settings; None when the analysis has no query checks. A provider that cannot be
    built makes every round an error, so each check ends as Error after its
    consecutive-error limit."""
    if not policy.queries:
        return None
    settings = policy.prometheus
    assert settings is not None  # the policy refuses query checks without a provider
    async with provider_of(settings, config_dir) as (source, secrets):
        per_check = await asyncio.gather(
            *(
                query_check(
                    source,
                    plan,
                    check,
                    policy.schedule(check),
                    compared_version,
                    clock=clock,
                    secrets=secrets,
                )
                for check in policy.queries
            )
        )
    return tuple(run for rounds in per_check for run in rounds)


# --- the judge's samples -----------------------------------------------------------


async def run_range(
    source: MetricsProvider | str,
    template: QueryTemplate,
    context: QueryContext,
    start: datetime,
    end: datetime,
    step_s: float,
    secrets: Sequence[str] = (),
) -> QueryResult:
    """One range query's result; never raises (as ``run_query``)."""
    params = {"start": start.timestamp(), "end": end.timestamp(), "step": step_s}
    try:
        query = template.render(context)
    except TemplateError as exc:
        return QueryResult(
            template.text,
            "error",
            message=f"cannot render the query: {exc}",
            error_type="template",
            params=params,
        )
    if isinstance(source, str):
        return QueryResult(query, "error", message=source, error_type="unavailable", params=params)
    try:
        result = await source.query_range(query, start, end, step_s)
    except Exception as exc:  # the protocol says it never raises; a bug must still be an Error
        log.exception("metrics provider raised on %s", query)
        return QueryResult(
            query,
            "error",
            message=f"the metrics provider raised {describe(exc)}",
            error_type="exception",
            params=params,
        )
    return _scrub(result, secrets)


async def judge_range(
    source: MetricsProvider | str,
    plan: DeploymentPlanned,
    check: QueryCheck,
    judge: JudgePolicy,
    track: Track,
    version: str | None,
    *,
    end: datetime,
    secrets: Sequence[str] = (),
) -> JudgeRange:
    """One judged query over the lookback, for the canary and the compared track."""
    start = end - timedelta(seconds=judge.lookback_s)
    template = QueryTemplate(check.query)

    def context(v: str, t: Track) -> QueryContext:
        return QueryContext(plan.service, plan.environment, v, t, check.window)

    jobs = [run_range(source, template, context(plan.version, "canary"), start, end, judge.step_s, secrets)]
    if version is not None:
        jobs.append(run_range(source, template, context(version, track), start, end, judge.step_s, secrets))
    results = await asyncio.gather(*jobs)
    return JudgeRange(
        check=check.name,
        start=start,
        end=end,
        step_s=judge.step_s,
        canary_version=plan.version,
        canary=results[0],
        compared_track=track,
        compared_version=version,
        compared=results[1] if len(results) > 1 else None,
        compared_missing=None if version is not None else f"no {track} version serves beside {plan.version}",
    )


async def run_judge(
    policy: AnalysisPolicy,
    plan: DeploymentPlanned,
    track: str,
    version: str | None,
    *,
    clock: Clock,
    config_dir: Any = None,
) -> tuple[JudgeRange, ...]:
    """Every judged query's ranges at once, ending now (``clock``)."""
    judge = policy.judge
    settings = policy.prometheus
    assert judge is not None and settings is not None
    end = clock()
    compared: Track = "baseline" if track == "baseline" else "stable"
    async with provider_of(settings, config_dir) as (source, secrets):
        ranges = await asyncio.gather(
            *(
                judge_range(
                    source, plan, policy.query(m.query), judge, compared, version, end=end, secrets=secrets
                )
                for m in judge.metrics
            )
        )
    return tuple(ranges)


# --- SLO and impact queries --------------------------------------------------------


async def run_impact_queries(
    policy: AnalysisPolicy, plan: DeploymentPlanned, *, clock: Clock, config_dir: Any = None
) -> tuple[tuple[tuple[str, QueryResult], ...] | None, QueryResult | None]:
    """``slo.error_rate_query`` for every window and ``impact.users_query``, for the
    new version at one instant; None for each the analysis does not have."""
    slo_template = policy.slo.error_rate_query if policy.slo is not None else None
    users_template = policy.impact.users_query if policy.impact is not None else None
    if slo_template is None and users_template is None:
        return None, None
    assert policy.slo is not None or policy.impact is not None
    settings = policy.prometheus
    assert settings is not None  # the policy refuses these queries without a provider
    at = clock()

    def context(window: str) -> QueryContext:
        return QueryContext(plan.service, plan.environment, plan.version, "canary", window)

    async with provider_of(settings, config_dir) as (source, secrets):
        windows = policy.slo.durations if policy.slo is not None and slo_template is not None else []
        jobs = [run_query(source, QueryTemplate(str(slo_template)), context(w), at, secrets) for w in windows]
        if users_template is not None:
            assert policy.impact is not None
            jobs.append(
                run_query(
                    source, QueryTemplate(users_template), context(policy.impact.users_window), at, secrets
                )
            )
        results = await asyncio.gather(*jobs)
    slo_results = tuple(zip(windows, results[: len(windows)], strict=True)) if slo_template else None
    users = results[-1] if users_template is not None else None
    return slo_results, users


# --- previous releases -------------------------------------------------------------


def _succeeded_types() -> list[str]:
    # the log stores each event's type with its version: every version ever published
    newest = REGISTRY.models[DeploymentSucceeded.TYPE].VERSION
    return [f"{DeploymentSucceeded.TYPE}.v{v}" for v in range(1, newest + 1)]


async def successful_deployments(log: Any, plan: DeploymentPlanned) -> list[str]:
    """The streams of the earlier successful deployments of the plan's service and
    environment, most recent first (the plan's own deployment left out)."""
    prefix = deployment_stream(f"{plan.service}.{plan.environment}.")
    streams: dict[str, None] = {}
    async for row in log.scan(types=_succeeded_types(), stream_prefix=prefix):
        event = log.decode(row).event
        done = REGISTRY.payload(event, DeploymentSucceeded)
        same = (done.service, done.environment) == (plan.service, plan.environment)
        if same and done.deployment_id != plan.deployment_id:
            streams.pop(row.stream_id, None)
            streams[row.stream_id] = None
    return list(reversed(streams))


def recorded_values(events: Sequence[CloudEvent], checks: Sequence[str]) -> dict[str, list[float]]:
    """Each check's finite measured values in the passed verifications of one
    deployment's stream (dry-run measurements left out)."""
    values: dict[str, list[float]] = {name: [] for name in checks}
    for event in events:
        if event.type_name != VerificationPassed.TYPE:
            continue
        for m in REGISTRY.payload(event, VerificationPassed).measurements:
            if (
                m.metric in values
                and m.value is not None
                and math.isfinite(m.value)
                and not m.detail.get("dry_run")
            ):
                values[m.metric].append(m.value)
    return values


def _version_of(events: Sequence[CloudEvent]) -> str:
    for event in events:
        if event.type_name == DeploymentSucceeded.TYPE:
            return REGISTRY.payload(event, DeploymentSucceeded).version
    return ""


async def read_history(
    log: Any, plan: DeploymentPlanned, checks: Mapping[str, VsPrevious]
) -> dict[str, History]:
    """Each check's values in the last ``releases`` successful deployments of the
    plan's service and environment that recorded it (oldest first), reading the
    log's most recent successful deployments first, at most ``HISTORY_SCAN_LIMIT``.
    Never raises: a log that cannot be read is each check's ``error``."""
    if not checks:
        return {}
    if log is None:
        why = "no event log to read previous releases from"
        return {name: History(name, missing=why) for name in checks}
    found: dict[str, list[PreviousValue]] = {name: [] for name in checks}
    try:
        streams = await successful_deployments(log, plan)
        for stream in streams[:HISTORY_SCAN_LIMIT]:
            wanted = [n for n, rule in checks.items() if len(found[n]) < rule.releases]
            if not wanted:
                break
            events = [r.event for r in await log.read_stream(stream)]
            version = _version_of(events)
            for name, values in recorded_values(events, wanted).items():
                if values:
                    mean = sum(values) / len(values)
                    deployment = stream.removeprefix(deployment_stream(""))
                    found[name].append(PreviousValue(deployment, version, mean, tuple(values)))
    except Exception as exc:
        log_name = type(log).__name__
        logging.getLogger(__name__).warning("reading previous releases from %s failed: %s", log_name, exc)
        return {name: History(name, error=describe(exc)) for name in checks}
    return {name: History(name, previous=tuple(reversed(values))) for name, values in found.items()}
