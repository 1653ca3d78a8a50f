"""SLO error-budget burn rate, with the multi-window rule of the Google SRE workbook.

Burn rate = observed error rate / (1 - SLO target): 1 spends the budget exactly
over the SLO period, 14.4 spends 2% of a 30-day budget in an hour. Each window pair
of the policy fails the step when the new version burns faster than its
``max_burn_rate`` over both the short window (it is still happening) and the long
one (it is not a blip) — an automatic rollback trigger. Only one of the two over the
limit is Successful; a window without data is Inconclusive, never a pass.

Pure. The error rates come from ``slo.error_rate_query`` (``Facts.slo_results``, one
result per window) when the policy has one, else from the target's own scrapes:
short is the latest window between two scrapes, long the whole analysis so far
(their real lengths are recorded beside the configured ones).
"""

from __future__ import annotations

import math
from typing import Any

from adapters.metrics import QueryResult, problem_measurement
from consumers.verification.facts import Facts
from consumers.verification.impact import counters, span_of
from consumers.verification.policy import AnalysisPolicy, BurnWindows, SloPolicy
from consumers.verification.prometheus import window
from events.verification import Measurement, Outcome

SLO = "slo_burn_rate"
#: ``detail.source`` of the two ways an error rate is found
SCRAPES = "scrapes"
QUERY = "prometheus"


def burn_rate(error_rate: float | None, target: float) -> float | None:
    """How fast the error budget burns; None without a finite error rate."""
    if error_rate is None or math.isnan(error_rate) or math.isinf(error_rate):
        return None
    return error_rate / (1 - target)


def assess_burn(
    pair: BurnWindows,
    slo: SloPolicy,
    short: float | None,
    long: float | None,
    *,
    why_missing: dict[str, str] | None = None,
    detail: dict[str, Any] | None = None,
) -> Measurement:
    """One window pair from the new version's error rates over its short and long
    window. The value is the lower of the two burn rates (the rule fires when it is
    over the limit); both are in ``detail``."""
    short_burn, long_burn = burn_rate(short, slo.target), burn_rate(long, slo.target)
    info: dict[str, Any] = {
        **(detail or {}),
        "target": slo.target,
        "short_window": pair.short,
        "long_window": pair.long,
        "short_error_rate": short,
        "long_error_rate": long,
        "short_burn_rate": short_burn,
        "long_burn_rate": long_burn,
        "max_burn_rate": pair.max_burn_rate,
    }

    def measured(outcome: Outcome, reason: str, value: float | None = None) -> Measurement:
        return Measurement(
            metric=SLO,
            outcome=outcome,
            value=value,
            threshold=pair.max_burn_rate,
            detail={**info, "reason": reason},
        )

    if short_burn is None or long_burn is None:
        missing = [w for w, b in (("short", short_burn), ("long", long_burn)) if b is None]
        whys = [f"{w} ({(why_missing or {}).get(w, 'no data')})" for w in missing]
        return measured("Inconclusive", f"no error rate over the {' and '.join(whys)} window")
    names = f"{short_burn:.3g} over {pair.short} and {long_burn:.3g} over {pair.long}"
    value = min(short_burn, long_burn)
    if short_burn > pair.max_burn_rate and long_burn > pair.max_burn_rate:
        return measured("Failed", f"error budget burn rate {names}, both above {pair.max_burn_rate:g}", value)
    return measured("Successful", f"error budget burn rate {names}, limit {pair.max_burn_rate:g}", value)


def _query_rate(result: QueryResult | None) -> tuple[float | None, str]:
    if result is None:
        return None, "not queried"
    problem = problem_measurement(SLO, result)
    if problem is not None:
        return None, problem.error or str(problem.detail.get("reason", problem.outcome))
    if result.value is None:
        return None, "the result has no single value"
    return result.value, ""


def _from_queries(facts: Facts, slo: SloPolicy) -> list[Measurement]:
    results = dict(facts.slo_results or ())
    out = []
    for pair in slo.windows:
        short, short_why = _query_rate(results.get(pair.short))
        long, long_why = _query_rate(results.get(pair.long))
        recorded = {w: results[w].to_detail() for w in (pair.short, pair.long) if results.get(w) is not None}
        out.append(
            assess_burn(
                pair,
                slo,
                short,
                long,
                why_missing={"short": short_why, "long": long_why},
                detail={"source": QUERY, "template": slo.error_rate_query, "results": recorded},
            )
        )
    return out


def _from_scrapes(facts: Facts, slo: SloPolicy) -> list[Measurement]:
    span = span_of(facts.scrapes)
    if span is None:
        why = facts.metrics_unavailable or "fewer than two good scrapes of the target's metrics"
        return [
            assess_burn(
                pair, slo, None, None, why_missing={"short": why, "long": why}, detail={"source": SCRAPES}
            )
            for pair in slo.windows
        ]
    latest = window(counters(span.previous), counters(span.last), facts.canary)
    whole = window(counters(span.first), counters(span.last), facts.canary)
    no_requests = "no requests reached the new version"
    detail = {
        "source": SCRAPES,
        "version": facts.canary,
        "short_window_s": span.latest_seconds,
        "long_window_s": span.seconds,
        "short_requests": latest.requests,
        "long_requests": whole.requests,
    }
    return [
        assess_burn(
            pair,
            slo,
            latest.error_rate,
            whole.error_rate,
            why_missing={"short": no_requests, "long": no_requests},
            detail=detail,
        )
        for pair in slo.windows
    ]


def measure_slo(facts: Facts, policy: AnalysisPolicy) -> list[Measurement]:
    """One ``slo_burn_rate`` measurement per window pair; none without an SLO."""
    slo = policy.slo
    if slo is None:
        return []
    if slo.error_rate_query is not None:
        return _from_queries(facts, slo)
    return _from_scrapes(facts, slo)
