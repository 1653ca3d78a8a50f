"""User impact of one analysis: what the new version costs the people it serves.

Pure, from the target's own scrapes (``Facts.scrapes``) over the whole analysis (the
first good scrape to the last): the share of traffic on the new version (the step's
weight, and the measured requests per version), the requests estimated to be
affected by its extra errors (canary error rate - stable error rate, times the
canary's requests, floored at 0) and by its extra latency (the canary's requests
slower than the stable's p99, less the 1% expected to be slower at equal speed), and
the users affected when the analysis names a user metric (``impact.users_query``):
the canary's users times the share of its requests that were affected.

It is recorded as one ``impact`` measurement, with every figure in ``detail``. It
takes part in the verdict only when ``impact`` sets a limit (``detail.gating``);
otherwise it is recorded for information. Its outcome is Successful, unless a
limit of ``impact`` (``max_affected_requests``, ``max_affected_users``) is breached
(Failed) or cannot be judged for want of data (Inconclusive). Without any request
to the new version it is Inconclusive when the analysis has an ``impact`` section
(no traffic is not evidence of no impact), and left out otherwise: the metric
checks then say why nothing was measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters.metrics import problem_measurement
from consumers.verification.facts import Facts, ScrapeAttempt
from consumers.verification.policy import AnalysisPolicy, ImpactPolicy
from consumers.verification.prometheus import P99, Scrape, Window, bucket_deltas, count_above, window
from events.deployment import DeploymentPlanned
from events.verification import Measurement, Outcome

IMPACT = "impact"


@dataclass(frozen=True, slots=True)
class Span:
    """The good scrapes an analysis is measured between: the first (every window
    starts there), the one before the last, and the last."""

    first: ScrapeAttempt
    previous: ScrapeAttempt
    last: ScrapeAttempt

    @property
    def seconds(self) -> float:
        return round(self.last.at_s - self.first.at_s, 3)

    @property
    def latest_seconds(self) -> float:
        return round(self.last.at_s - self.previous.at_s, 3)


def span_of(scrapes: Sequence[ScrapeAttempt] | None) -> Span | None:
    """The span of the good scrapes; None with fewer than two."""
    good = [s for s in scrapes or () if s.counters is not None]
    if len(good) < 2:
        return None
    return Span(good[0], good[-2], good[-1])


def counters(attempt: ScrapeAttempt) -> Scrape:
    assert attempt.counters is not None
    return attempt.counters


def step_weight(plan: DeploymentPlanned, index: int) -> int | None:
    """The share of traffic (percent) the plan gives the new version at step
    ``index``: the last weight set at or before it (100 once promoted)."""
    for step in reversed(plan.strategy.steps[: index + 1]):
        if step.kind == "promote":
            return 100
        if step.kind == "set_weight" and step.weight is not None:
            return step.weight
    return None


def affected_by_errors(canary: Window, stable: Window | None) -> float | None:
    """The canary's requests that failed beyond the stable's error rate."""
    if canary.error_rate is None or stable is None or stable.error_rate is None:
        return None
    return max(0.0, (canary.error_rate - stable.error_rate) * canary.requests)


def affected_by_latency(slower: float | None, canary_requests: float) -> float | None:
    """The canary's requests slower than the stable's p99, beyond the 1% that would be
    at equal speed."""
    if slower is None:
        return None
    return max(0.0, slower - (1 - P99) * canary_requests)


def _rate(w: Window | None) -> float | None:
    return None if w is None else w.error_rate


def figures(
    canary: Window,
    stable: Window | None,
    *,
    canary_buckets: Sequence[tuple[float, float]] = (),
    weight: int | None = None,
    users: float | None = None,
) -> dict[str, Any]:
    """Every impact figure from the two versions' traffic over the analysis; a figure
    that cannot be computed is None."""
    total = canary.requests + (stable.requests if stable is not None else 0.0)
    stable_p99 = stable.latency_p99_s if stable is not None else None
    slower = count_above(stable_p99, canary_buckets) if stable_p99 is not None else None
    by_errors = affected_by_errors(canary, stable)
    by_latency = affected_by_latency(slower, canary.requests)
    known = [f for f in (by_errors, by_latency) if f is not None]
    # an upper estimate: a request both failed and slow is counted twice
    affected = sum(known) if known else None
    affected_share = affected / canary.requests if affected is not None and canary.requests > 0 else None
    affected_users = None
    if users is not None and affected_share is not None:
        affected_users = users * min(1.0, affected_share)
    return {
        "weight_pct": weight,
        "share_by_weight": None if weight is None else weight / 100,
        "share_measured": canary.requests / total if total > 0 else None,
        "canary_requests": canary.requests,
        "stable_requests": None if stable is None else stable.requests,
        "canary_error_rate": canary.error_rate,
        "stable_error_rate": _rate(stable),
        "affected_by_errors": by_errors,
        "stable_p99_s": stable_p99,
        "canary_p99_s": canary.latency_p99_s,
        "canary_slower_than_stable_p99": slower,
        "affected_by_latency": by_latency,
        "affected_requests": affected,
        "canary_users": users,
        "affected_users": affected_users,
    }


def judge_impact(figs: dict[str, Any], policy: ImpactPolicy | None) -> tuple[Outcome, str]:
    """Successful unless a limit is breached (Failed) or its figure is unknown
    (Inconclusive)."""
    if policy is None:
        return "Successful", ""
    limits = (
        ("affected_requests", policy.max_affected_requests, "requests"),
        ("affected_users", policy.max_affected_users, "users"),
    )
    for key, limit, noun in limits:
        if limit is None:
            continue
        value = figs.get(key)
        if value is None:
            return "Inconclusive", f"the affected {noun} could not be estimated"
        if value > limit:
            return "Failed", f"an estimated {value:.4g} {noun} affected, above max {limit:.4g}"
    return "Successful", ""


def _users(facts: Facts, policy: ImpactPolicy | None) -> tuple[float | None, dict[str, Any]]:
    """The canary's users, and how they were found, for the record."""
    if policy is None or policy.users_query is None:
        return None, {"users_source": "no user metric named"}
    if facts.users is None:
        return None, {"users_source": "the user metric was not queried"}
    detail = {"users_source": facts.users.to_detail()}
    problem = problem_measurement(IMPACT, facts.users)
    if problem is not None:
        why = problem.error or str(problem.detail.get("reason", problem.outcome))
        return None, {**detail, "users_missing": why}
    return facts.users.value, detail


def measure_impact(facts: Facts, policy: AnalysisPolicy, *, weight: int | None = None) -> list[Measurement]:
    """The ``impact`` measurement of one analysis; nothing when the target's metrics
    were not scraped for it (no built-in metrics, no ``impact`` section)."""
    if not policy.scrapes_wanted:
        return []
    if facts.scrapes is None and facts.metrics_unavailable is None:
        if policy.impact is None:
            return []  # recorded only where it was measured; nothing gates on it
        return [
            _measurement("Inconclusive", {"weight_pct": weight, "reason": "the metrics were not measured"})
        ]
    base = {"weight_pct": weight}
    span = span_of(facts.scrapes)
    if span is None:
        why = facts.metrics_unavailable or "fewer than two good scrapes of the target's metrics"
        return _no_data(policy, {**base, "reason": why})
    before, after = counters(span.first), counters(span.last)
    canary = window(before, after, facts.canary)
    stable = window(before, after, facts.stable) if facts.stable else None
    if not canary.requests > 0:
        detail = {**base, "window_s": span.seconds, "reason": "no requests reached the new version"}
        return _no_data(policy, detail)
    users, users_detail = _users(facts, policy.impact)
    figs = figures(
        canary,
        stable,
        canary_buckets=bucket_deltas(before, after, facts.canary),
        weight=weight,
        users=users,
    )
    outcome, reason = judge_impact(figs, policy.impact)
    detail = {
        **figs,
        **users_detail,
        "window_s": span.seconds,
        "canary_version": facts.canary,
        "stable_version": facts.stable,
    }
    if reason:
        detail["reason"] = reason
    threshold = policy.impact.max_affected_requests if policy.impact is not None else None
    return [
        _measurement(
            outcome, {**detail, "gating": gates(policy)}, value=figs["affected_requests"], threshold=threshold
        )
    ]


def gates(policy: AnalysisPolicy) -> bool:
    """Whether the impact can decide the analysis: only with a limit set."""
    impact = policy.impact
    return impact is not None and (
        impact.max_affected_requests is not None or impact.max_affected_users is not None
    )


def is_informative(m: Measurement) -> bool:
    """An impact measurement recorded for information only: the verdict leaves it out."""
    return m.metric == IMPACT and m.detail.get("gating") is False


def _no_data(policy: AnalysisPolicy, detail: dict[str, Any]) -> list[Measurement]:
    """Inconclusive when the analysis asked for the impact; else nothing is recorded
    (the metric checks that wanted the same scrapes already say why there is no data)."""
    return (
        [] if policy.impact is None else [_measurement("Inconclusive", {**detail, "gating": gates(policy)})]
    )


def _measurement(
    outcome: Outcome, detail: dict[str, Any], *, value: float | None = None, threshold: float | None = None
) -> Measurement:
    return Measurement(metric=IMPACT, outcome=outcome, value=value, threshold=threshold, detail=detail)
