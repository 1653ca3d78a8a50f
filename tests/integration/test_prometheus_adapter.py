"""The Prometheus metrics adapter against a real Prometheus loaded with known series
(see ``tests/prometheus.py``): rendered templates return the values computed by
hand; failures of every kind come back as results, and map to Error or
Inconclusive measurements, never to a pass."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from adapters.metrics import (
    MetricsCredentials,
    QueryResult,
    Sample,
    create_metrics,
    problem_measurement,
    to_measurement,
)
from adapters.metrics.prometheus import (
    PrometheusMetrics,
    QueryContext,
    QueryTemplate,
    TemplateError,
    Track,
    promql_duration,
)
from events.errors import InvalidInput
from events.verification import Outcome
from tests.prometheus import (
    CANARY,
    ENVIRONMENT,
    ERROR_RATE,
    IDLE_SERVICE,
    LATENCY_P99,
    ODD_SERVICE,
    SERVICE,
    STABLE,
    PrometheusServer,
    free_port,
    known,
    prometheus_server,
)

__all__ = ["prometheus_server"]  # the fixture, imported for pytest to find

pytestmark = pytest.mark.timeout(300)  # the first test may install Prometheus


def ctx(
    track: Track, *, version: str | None = None, service: str = SERVICE, window: str = "5m"
) -> QueryContext:
    default = CANARY if track == "canary" else STABLE
    return QueryContext(service, ENVIRONMENT, version or default, track, window)


def below(limit: float) -> Callable[[float], tuple[Outcome, str]]:
    def judge(value: float) -> tuple[Outcome, str]:
        return ("Successful", "") if value <= limit else ("Failed", f"{value:.4g} above {limit:g}")

    return judge


@pytest.fixture
async def prom(prometheus_server: PrometheusServer) -> AsyncIterator[PrometheusMetrics]:
    async with PrometheusMetrics(prometheus_server.url, timeout=5.0) as metrics:
        yield metrics


# --- values from rendered templates ----------------------------------------------


@pytest.mark.parametrize("track", ["canary", "baseline", "stable"])
async def test_templates_return_the_known_error_rate_and_p99_at_an_instant(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer, track: Track
) -> None:
    context = ctx(track)
    expected = known(SERVICE, context.version, track)
    at = prometheus_server.at

    error_rate = await prom.query(QueryTemplate(ERROR_RATE).render(context), at)
    p99 = await prom.query(QueryTemplate(LATENCY_P99).render(context), at)

    assert error_rate.status == "ok", error_rate.message
    assert error_rate.value == pytest.approx(expected.error_rate, rel=1e-9)
    assert error_rate.samples[0].timestamp == pytest.approx(at.timestamp())
    assert p99.status == "ok", p99.message
    assert p99.value == pytest.approx(expected.p99_s, rel=1e-9)


async def test_canary_and_stable_differ_as_their_series_do(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer
) -> None:
    template = QueryTemplate(ERROR_RATE)
    canary = await prom.query(template.render(ctx("canary")), prometheus_server.at)
    stable = await prom.query(template.render(ctx("stable")), prometheus_server.at)

    judge = below(0.02)
    canary_m = to_measurement("error_rate", canary, judge, baseline=stable.value, threshold=0.02)
    stable_m = to_measurement("error_rate", stable, judge, threshold=0.02)

    assert (canary_m.outcome, stable_m.outcome) == ("Failed", "Successful")
    assert canary_m.value == pytest.approx(0.05) and canary_m.baseline == pytest.approx(0.01)
    assert canary_m.detail["reason"] == "0.05 above 0.02"
    assert canary_m.detail["query"] == template.render(ctx("canary"))
    assert canary_m.detail["samples"][0]["v"] == pytest.approx(0.05)


@pytest.mark.parametrize(("track", "template"), [("canary", ERROR_RATE), ("stable", LATENCY_P99)])
async def test_a_range_query_returns_the_known_value_at_every_step(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer, track: Track, template: str
) -> None:
    context = ctx(track)
    expected = known(SERVICE, context.version, track)
    want = expected.error_rate if template == ERROR_RATE else expected.p99_s
    end = prometheus_server.at
    start = end - timedelta(minutes=30)

    result = await prom.query_range(QueryTemplate(template).render(context), start, end, timedelta(minutes=5))

    assert result.status == "ok", result.message
    assert len(result.series) == 1
    (series,) = result.series
    assert [t for t, _ in series.points] == [start.timestamp() + 300 * i for i in range(7)]
    assert series.values == pytest.approx([want] * 7, rel=1e-9)
    assert result.params == {"start": start.timestamp(), "end": end.timestamp(), "step": 300.0}


async def test_label_values_are_escaped_for_the_string_literal_they_stand_in(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer
) -> None:
    context = ctx("canary", service=ODD_SERVICE)
    double = QueryTemplate(ERROR_RATE)
    single = QueryTemplate(ERROR_RATE.replace('service="{{service}}"', "service='{{service}}'"))
    raw = QueryTemplate(ERROR_RATE.replace('service="{{service}}"', "service=`{{service}}`"))

    for template in (double, single, raw):
        result = await prom.query(template.render(context), prometheus_server.at)
        assert result.status == "ok", f"{template.render(context)}: {result.message}"
        assert result.value == pytest.approx(0.1)


async def test_a_value_in_a_regex_matcher_matches_only_itself(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer
) -> None:
    # a bare "1.5.0" would also match the decoy version "1x5x0" (error rate 0.5)
    template = QueryTemplate(ERROR_RATE.replace('version="{{version}}"', 'version=~"{{version}}"'))
    rendered = template.render(ctx("canary"))

    result = await prom.query(rendered, prometheus_server.at)

    assert 'version=~"1\\\\.5\\\\.0"' in rendered
    assert result.value == pytest.approx(0.05)


async def test_a_window_from_a_timedelta_renders_as_a_promql_duration(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer
) -> None:
    context = QueryContext(SERVICE, ENVIRONMENT, CANARY, "canary", timedelta(minutes=2))
    result = await prom.query(QueryTemplate(ERROR_RATE).render(context), prometheus_server.at)
    assert "[120s]" in result.query
    assert result.value == pytest.approx(0.05)


# --- what is not a number ----------------------------------------------------------


async def test_a_series_that_does_not_exist_is_empty_and_inconclusive(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer
) -> None:
    promql = QueryTemplate(ERROR_RATE).render(ctx("canary", service="no-such-service"))

    instant = await prom.query(promql, prometheus_server.at)
    ranged = await prom.query_range(
        promql, prometheus_server.at - timedelta(minutes=10), prometheus_server.at, 60
    )

    assert (instant.status, ranged.status) == ("empty", "empty")
    assert instant.value is None and "no series" in instant.message
    measurement = to_measurement("error_rate", instant, below(1.0))
    assert measurement.outcome == "Inconclusive"
    assert measurement.value is None
    assert measurement.detail["reason"] == "the query returned no series"
    assert problem_measurement("error_rate", ranged) is not None


@pytest.mark.parametrize("template", [ERROR_RATE, LATENCY_P99])
async def test_no_traffic_gives_nan_and_an_inconclusive_measurement(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer, template: str
) -> None:
    promql = QueryTemplate(template).render(ctx("canary", service=IDLE_SERVICE))

    instant = await prom.query(promql, prometheus_server.at)
    ranged = await prom.query_range(
        promql, prometheus_server.at - timedelta(minutes=10), prometheus_server.at, 60
    )

    assert (instant.status, ranged.status) == ("nan", "nan")
    assert math.isnan(instant.samples[0].value)
    assert instant.value is None
    assert len(ranged.series[0].points) == 11  # the points are kept for whoever wants them
    # even a judge that would pass anything never sees NaN
    measurement = to_measurement("error_rate", instant, lambda _: ("Successful", ""))
    assert measurement.outcome == "Inconclusive"
    assert "not finite" in measurement.detail["reason"]
    # recorded as JSON without losing what came back
    assert json.loads(measurement.model_dump_json())["detail"]["samples"][0]["v"] == "NaN"


async def test_a_scalar_nan_is_nan_too(prom: PrometheusMetrics) -> None:
    result = await prom.query("0/0")
    assert result.status == "nan"
    assert result.samples[0].labels == {}


async def test_an_instant_query_of_several_series_is_an_error_measurement(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer
) -> None:
    # no sum(): one value per code, where a metric needs one
    promql = f'rate(http_requests_total{{service="{SERVICE}",version="{CANARY}",track="canary"}}[5m])'
    result = await prom.query(promql, prometheus_server.at)

    assert result.status == "ok" and len(result.samples) == 2
    measurement = to_measurement("error_rate", result, below(1.0))
    assert measurement.outcome == "Error"
    assert "2 series" in (measurement.error or "")


# --- failures ------------------------------------------------------------------------


async def test_a_bad_query_is_an_error_result_with_prometheus_message(prom: PrometheusMetrics) -> None:
    result = await prom.query("sum(rate(http_requests_total[5m])")

    assert result.status == "error"
    assert result.error_type == "bad_data"
    assert "parse error" in result.message
    assert result.attempts == 1  # a refused query is not retried
    measurement = to_measurement("error_rate", result, below(1.0))
    assert measurement.outcome == "Error"
    assert measurement.error == result.message


async def test_a_bad_range_is_an_error_result(
    prom: PrometheusMetrics, prometheus_server: PrometheusServer
) -> None:
    at = prometheus_server.at
    result = await prom.query_range("vector(1)", at, at - timedelta(minutes=5), 60)
    assert (result.status, result.error_type) == ("error", "bad_data")
    assert "end timestamp must not be before start time" in result.message


async def test_prometheus_down_gives_error_results_fast_and_never_raises() -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    now = datetime.now(UTC)
    async with PrometheusMetrics(down, timeout=1.0) as metrics:
        started = time.monotonic()
        instant = await metrics.query("vector(1)", now)
        ranged = await metrics.query_range("vector(1)", now - timedelta(minutes=5), now, 60)
        online = await metrics.is_online()
        elapsed = time.monotonic() - started

    for result in (instant, ranged):
        assert result.status == "error"
        assert result.error_type == "unavailable"
        assert "cannot reach Prometheus" in result.message
        assert result.attempts > 1  # retried ...
        assert result.elapsed_s <= 1.0  # ... within the call's timeout
    assert online is False
    assert elapsed < 3 * 1.0 + 0.5
    measurements = [to_measurement("error_rate", r, below(1.0)) for r in (instant, ranged)]
    assert [m.outcome for m in measurements] == ["Error", "Error"]
    assert all("cannot reach Prometheus" in (m.error or "") for m in measurements)


async def test_a_server_that_never_answers_is_a_timeout_within_the_timeout() -> None:
    hold: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hold.append(writer)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with PrometheusMetrics(f"http://127.0.0.1:{port}", timeout=0.5) as metrics:
            started = time.monotonic()
            result = await metrics.query("vector(1)")
            elapsed = time.monotonic() - started
    finally:
        for writer in hold:
            writer.close()
        server.close()
        await server.wait_closed()

    assert (result.status, result.error_type) == ("error", "timeout")
    assert "did not answer within 0.5 s" in result.message
    assert 0.4 < elapsed < 1.0


def _transport(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return httpx.MockTransport(handler)


_SUCCESS = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "2"]}]},
}


async def test_a_5xx_is_retried_until_an_answer_within_the_timeout() -> None:
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(503, text="busy"),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(200, json=_SUCCESS),
    ]
    async with httpx.AsyncClient(transport=_transport(answers, seen)) as http:
        result = await PrometheusMetrics("http://prom.test", timeout=2.0, http=http).query("vector(2)")

    assert (result.status, result.value, result.attempts) == ("ok", 2.0, 3)
    assert len(seen) == 3


async def test_retries_stop_when_the_timeout_would_be_spent() -> None:
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=_transport([httpx.Response(500, text="boom")], seen)) as http:
        started = time.monotonic()
        result = await PrometheusMetrics("http://prom.test", timeout=0.5, http=http).query("vector(2)")
        elapsed = time.monotonic() - started

    assert (result.status, result.error_type) == ("error", "unavailable")
    assert "HTTP 500: boom" in result.message
    assert 2 <= len(seen) <= 4  # 0.1 s, 0.2 s pauses; not a third that would pass 0.5 s
    assert elapsed < 0.5


async def test_queries_carry_the_configured_headers_credentials_and_deadline() -> None:
    seen: list[httpx.Request] = []
    credentials = MetricsCredentials(bearer_token=SecretStr("s3cret"))
    async with httpx.AsyncClient(transport=_transport([httpx.Response(200, json=_SUCCESS)], seen)) as http:
        metrics = create_metrics(
            "prometheus",
            {"base_url": "http://prom.test/prefix/", "timeout_s": 3, "headers": {"X-Scope-OrgID": "team-a"}},
            credentials,
            http=http,
        )
        at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        await metrics.query('up{job="x"}', at)

    (request,) = seen
    assert request.method == "POST" and request.url.path == "/prefix/api/v1/query"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["X-Scope-OrgID"] == "team-a"
    form = dict(httpx.QueryParams(request.content.decode()))
    assert form["query"] == 'up{job="x"}'
    assert float(form["time"]) == at.timestamp()
    assert 0 < float(form["timeout"]) <= 3


async def test_a_garbled_answer_is_an_error_result() -> None:
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=_transport([httpx.Response(200, text="<html>")], seen)) as http:
        result = await PrometheusMetrics("http://prom.test", http=http).query("vector(1)")
    assert (result.status, result.error_type) == ("error", "invalid_response")


async def test_is_online_against_the_real_server(prom: PrometheusMetrics) -> None:
    assert await prom.is_online() is True


def test_an_unknown_provider_type_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown metrics provider type 'datadog'"):
        create_metrics("datadog", {})
    with pytest.raises(InvalidInput, match="base_url"):
        create_metrics("prometheus", {"timeout_s": 1})


# --- templates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('up{service="{{serivce}}"}', "unknown placeholder {{serivce}}"),
        ('up{service="{{ service.name }}"}', "unknown placeholder"),
        ("up{service={{service}}}", "must be inside a quoted label value"),
        ('up{service="{{service}}}', "unterminated"),
        ('up{service="{{service"}', "unbalanced"),
        ("   ", "empty"),
    ],
)
def test_a_template_that_cannot_be_rendered_safely_is_refused_when_read(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        QueryTemplate(template)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (QueryContext(SERVICE, ENVIRONMENT, "", "canary", "5m"), "version must be a non-empty string"),
        (QueryContext(SERVICE, ENVIRONMENT, CANARY, "blue", "5m"), "track 'blue'"),  # type: ignore[arg-type]
        (QueryContext(SERVICE, ENVIRONMENT, CANARY, "canary", "5 minutes"), "not a PromQL duration"),
        (QueryContext(SERVICE, ENVIRONMENT, CANARY, "canary", 0), "window must be positive"),
    ],
)
def test_values_that_cannot_be_rendered_are_refused(context: QueryContext, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        QueryTemplate(ERROR_RATE).render(context)


def test_a_placeholder_in_a_comment_is_left_alone() -> None:
    template = QueryTemplate('# by {{owner}}, don\'t panic\nup{service="{{service}}"}')
    assert template.placeholders == {"service"}
    assert template.render(ctx("canary")).endswith('up{service="checkout"}')


@pytest.mark.parametrize(
    ("window", "rendered"), [("1h30m", "1h30m"), (timedelta(seconds=90), "90s"), (0.25, "250ms"), (60, "60s")]
)
def test_windows_render_as_promql_durations(window: str | timedelta | float, rendered: str) -> None:
    assert promql_duration(window) == rendered


def test_template_errors_are_value_errors_for_pydantic() -> None:
    # so a policy model validating a template with it reports a validation error
    assert issubclass(TemplateError, ValueError) and issubclass(TemplateError, InvalidInput)


def test_a_naive_query_time_is_refused() -> None:
    metrics = PrometheusMetrics("http://prom.test")
    with pytest.raises(InvalidInput, match="time zone"):
        asyncio.run(metrics.query("vector(1)", datetime(2025, 1, 1)))


def test_an_ok_result_reaches_the_judge_with_its_value() -> None:
    result = QueryResult("q", "ok", samples=(Sample({}, 1.0, 0.5),))
    assert to_measurement("m", result, below(1.0)).outcome == "Successful"
    assert to_measurement("m", result, below(0.1)).outcome == "Failed"
