"""Reading a target's Prometheus text metrics: per-version counters, and what happened
between two scrapes (requests, 5xx answers, latency p99). Pure: text in, numbers out.

The names are what the local target's proxy exposes (and what any target's
``metrics_url`` is expected to expose): ``shiplog_proxy_requests_total{version,code}``
and the histogram ``shiplog_proxy_request_duration_seconds{version}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

REQUESTS_TOTAL = "shiplog_proxy_requests_total"
DURATION_BUCKET = "shiplog_proxy_request_duration_seconds_bucket"
P99 = 0.99


@dataclass(frozen=True)
class VersionCounters:
    """One version's cumulative counters in one scrape."""

    #: requests by status code
    requests: Mapping[str, float] = field(default_factory=dict)
    #: histogram upper bound (``le``) -> cumulative count of observations
    buckets: Mapping[float, float] = field(default_factory=dict)


#: version -> its counters
Scrape = Mapping[str, VersionCounters]


@dataclass(frozen=True)
class Window:
    """One version's traffic between two scrapes."""

    requests: float
    errors: float
    #: None: no latency observations in the window
    latency_p99_s: float | None = None

    @property
    def error_rate(self) -> float | None:
        """5xx / all; None without requests (never 0: no data is not a good rate)."""
        if not self.requests > 0:  # also False for NaN
            return None
        return self.errors / self.requests


def parse_scrape(text: str) -> dict[str, VersionCounters]:
    """Per-version counters from Prometheus text; raises ``ValueError`` on bad text."""
    requests: dict[str, dict[str, float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            version = sample.labels.get("version")
            if version is None:
                continue
            if sample.name == REQUESTS_TOTAL:
                by_code = requests.setdefault(version, {})
                code = sample.labels.get("code", "")
                by_code[code] = by_code.get(code, 0.0) + float(sample.value)
            elif sample.name == DURATION_BUCKET and "le" in sample.labels:
                by_le = buckets.setdefault(version, {})
                le = float(sample.labels["le"])
                by_le[le] = by_le.get(le, 0.0) + float(sample.value)
    return {
        version: VersionCounters(requests.get(version, {}), buckets.get(version, {}))
        for version in requests.keys() | buckets.keys()
    }


def _increase(before: float, after: float) -> float:
    # A counter that went down was reset (the proxy restarted): count from zero,
    # as Prometheus' increase() does.
    return after - before if after >= before else after


def window(before: Scrape, after: Scrape, version: str) -> Window:
    """What ``version`` served between two scrapes (zero if it is in neither)."""
    old = before.get(version, VersionCounters())
    new = after.get(version, VersionCounters())
    requests = errors = 0.0
    for code, count in new.requests.items():
        delta = _increase(old.requests.get(code, 0.0), count)
        requests += delta
        if code.startswith("5"):
            errors += delta
    buckets = sorted((le, _increase(old.buckets.get(le, 0.0), count)) for le, count in new.buckets.items())
    return Window(requests, errors, histogram_quantile(P99, buckets))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile from cumulative buckets sorted by upper bound, interpolating
    linearly inside a bucket as Prometheus' ``histogram_quantile`` does. None when it
    cannot be known: no ``+Inf`` bucket, no observations, or NaN counts."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    # Deltas of separately reset series may break monotonicity; Prometheus evens it out.
    counts: list[float] = []
    for _, count in buckets:
        if math.isnan(count):
            return None
        counts.append(max(count, counts[-1]) if counts else count)
    total = counts[-1]
    if not total > 0:
        return None
    rank = q * total
    b = next(i for i, count in enumerate(counts) if count >= rank)
    if b == len(buckets) - 1:
        # in the +Inf bucket: the best known bound is the highest finite one
        return buckets[-2][0] if len(buckets) > 1 else None
    upper = buckets[b][0]
    if b == 0:
        lower, below = (0.0 if upper > 0 else upper), 0.0
    else:
        lower, below = buckets[b - 1][0], counts[b - 1]
    in_bucket = counts[b] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * ((rank - below) / in_bucket)


def bucket_deltas(before: Scrape, after: Scrape, version: str) -> list[tuple[float, float]]:
    """``version``'s latency histogram between two scrapes: cumulative counts by
    upper bound, sorted (empty if it has none)."""
    old = before.get(version, VersionCounters())
    new = after.get(version, VersionCounters())
    return sorted((le, _increase(old.buckets.get(le, 0.0), count)) for le, count in new.buckets.items())


def count_above(threshold: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """How many observations were slower than ``threshold``, interpolating linearly
    inside a bucket (the inverse of ``histogram_quantile``). None when it cannot be
    known: no ``+Inf`` bucket, no observations, NaN counts."""
    if not buckets or not math.isinf(buckets[-1][0]) or any(math.isnan(c) for _, c in buckets):
        return None
    counts: list[float] = []
    for _, count in buckets:
        counts.append(max(count, counts[-1]) if counts else count)
    total = counts[-1]
    if not total > 0:
        return None
    lower, below = 0.0, 0.0
    for (upper, _), cumulative in zip(buckets, counts, strict=True):
        if threshold < upper:
            if math.isinf(upper):
                return total - below  # beyond the last finite bound: all of this bucket
            share = (threshold - lower) / (upper - lower) if upper > lower else 1.0
            at_or_below = below + (cumulative - below) * max(0.0, share)
            return max(0.0, total - at_or_below)
        lower, below = upper, cumulative
    return 0.0
