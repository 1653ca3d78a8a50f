"""Reading the target's Prometheus text: per-version counters, windows, p99."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from consumers.verification.prometheus import (
    VersionCounters,
    histogram_quantile,
    parse_scrape,
    window,
)

INF = float("inf")


def proxy_text(requests: dict[tuple[str, str], int], latencies: dict[str, list[float]]) -> str:
    """What the local target's proxy serves, made the way it makes it."""
    registry = CollectorRegistry()
    counter = Counter("shiplog_proxy_requests", "r", ["version", "code"], registry=registry)
    histogram = Histogram("shiplog_proxy_request_duration_seconds", "d", ["version"], registry=registry)
    for (version, code), n in requests.items():
        counter.labels(version, code).inc(n)
    for version, values in latencies.items():
        for value in values:
            histogram.labels(version).observe(value)
    return generate_latest(registry).decode()


def test_parses_the_proxys_own_exposition() -> None:
    text = proxy_text({("1.0", "200"): 7, ("2.0", "200"): 3, ("2.0", "503"): 1}, {"2.0": [0.02, 0.3]})
    scrape = parse_scrape(text)
    assert scrape["1.0"].requests == {"200": 7.0}
    assert scrape["2.0"].requests == {"200": 3.0, "503": 1.0}
    assert scrape["2.0"].buckets[INF] == 2.0
    assert scrape["2.0"].buckets[0.025] == 1.0


def test_parses_hand_written_text_without_type_lines() -> None:
    text = (
        'shiplog_proxy_requests_total{version="a",code="200"} 5\n'
        'shiplog_proxy_requests_total{code="500",version="a"} 1\n'
        'shiplog_proxy_request_duration_seconds_bucket{version="a",le="0.1"} 4\n'
        'shiplog_proxy_request_duration_seconds_bucket{version="a",le="+Inf"} 6\n'
        'unrelated_total{version="a"} 99\n'
        'shiplog_proxy_requests_total{code="200"} 3\n'
    )
    assert parse_scrape(text) == {"a": VersionCounters({"200": 5.0, "500": 1.0}, {0.1: 4.0, INF: 6.0})}


def test_bad_text_raises() -> None:
    with pytest.raises(ValueError):
        parse_scrape('shiplog_proxy_requests_total{version="a" 5\n')


def test_a_window_counts_what_happened_between_two_scrapes() -> None:
    before = parse_scrape(proxy_text({("2", "200"): 10, ("2", "500"): 1}, {"2": [0.01] * 11}))
    after = parse_scrape(
        proxy_text({("2", "200"): 28, ("2", "500"): 3, ("2", "404"): 2}, {"2": [0.01] * 11 + [0.2] * 22})
    )
    w = window(before, after, "2")
    assert (w.requests, w.errors) == (22.0, 2.0)
    assert w.error_rate == pytest.approx(2 / 22)
    # only the new observations count: all of them in the (0.1, 0.25] bucket
    assert w.latency_p99_s is not None and 0.1 < w.latency_p99_s <= 0.25


def test_a_version_without_traffic_has_no_error_rate_and_no_latency() -> None:
    scrape = parse_scrape(proxy_text({("1", "200"): 5}, {"1": [0.1]}))
    w = window(scrape, scrape, "1")
    assert (w.requests, w.error_rate, w.latency_p99_s) == (0.0, None, None)
    assert window(scrape, scrape, "unknown").requests == 0


def test_a_reset_counter_counts_from_zero() -> None:
    before = {"v": VersionCounters({"200": 100.0})}
    after = {"v": VersionCounters({"200": 4.0})}
    assert window(before, after, "v").requests == 4.0


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.99, [(0.1, 0), (0.2, 100), (INF, 100)], 0.1 + 0.1 * 0.99),
        (0.5, [(0.1, 50), (0.2, 100), (INF, 100)], 0.1),
        (0.5, [(1.0, 100), (INF, 100)], 0.5),
        # in the +Inf bucket: the highest finite bound is the best answer
        (0.99, [(0.1, 10), (INF, 100)], 0.1),
        (0.99, [(INF, 10)], None),
        # nothing observed, no +Inf bucket, NaN: not known
        (0.99, [(0.1, 0), (INF, 0)], None),
        (0.99, [(0.1, 5), (0.2, 10)], None),
        (0.99, [(0.1, float("nan")), (INF, 10)], None),
        (0.99, [], None),
    ],
)
def test_histogram_quantile_as_prometheus(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    result = histogram_quantile(q, buckets)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)
