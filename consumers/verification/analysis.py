"""Judging what was observed: measurements with outcomes, and one verdict over them.

Pure functions, after Argo Rollouts' ``utils/evaluate`` and ``analysis/analysis.go``:
each measurement is Successful, Failed, Inconclusive or Error; each check (the
target's status, the health of the new version, every metric) tolerates
``failure_limit`` failed and ``inconclusive_limit`` inconclusive measurements and
``consecutive_error_limit`` errors in a row; the verdict is the worst check's
outcome. Missing data, zero requests and NaN are Inconclusive, never a pass, and a
check without a single Successful measurement does not pass either.

A query check's measurement keeps everything it was judged from in ``detail``: the
template, window and limits, the evaluation time, and each track's raw result
(rendered PromQL, status, samples with their timestamps, message) — so it can be
judged again under another policy (``round_from_measurement`` then
``assess_query``). Dry-run measurements (``detail.dry_run``) are recorded and
reported but never count towards the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from adapters.metrics import QueryResult, Sample, Series, problem_measurement
from adapters.metrics.prometheus import Track
from consumers.verification.alarms import ALARMS, measure_alarms, measure_cloudwatch
from consumers.verification.comparison import JUDGE, gating, measure_judge
from consumers.verification.facts import Facts, History, Probe, QueryRound
from consumers.verification.impact import is_informative, measure_impact
from consumers.verification.policy import AnalysisPolicy, HealthPolicy, Limits, MetricCheck, QueryCheck
from consumers.verification.previous import assess_vs_previous, increase_limit
from consumers.verification.prometheus import Window, window
from consumers.verification.slo import SLO, measure_slo
from events.verification import Measurement, Outcome

#: the measurement names of the two checks that are not metrics
TARGET = "target"
HEALTH = "health"
#: checks that tolerate no failed and no inconclusive measurement: an instance of
#: the new version that does not answer its health check is never acceptable, and
#: neither is an error budget burning over its limit (or not known to burn less)
STRICT: frozenset[str] = frozenset({HEALTH, SLO, ALARMS})
#: ``detail.source`` of a query check's measurements
PROMETHEUS = "prometheus"

_RANK: dict[str, int] = {"Successful": 0, "Inconclusive": 1, "Error": 2, "Failed": 3}


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str


# --- single measurements ---------------------------------------------------------


def error_measurement(metric: str, error: str, **detail: Any) -> Measurement:
    """A measurement that could not be taken (an adapter raised, an endpoint failed)."""
    return Measurement(metric=metric, outcome="Error", error=error, detail=detail)


def inconclusive(metric: str, reason: str, **detail: Any) -> Measurement:
    return Measurement(metric=metric, outcome="Inconclusive", detail={"reason": reason, **detail})


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def _longest_run(probes: Sequence[Probe]) -> int:
    best = run = 0
    for probe in probes:
        run = run + 1 if probe.ok else 0
        best = max(best, run)
    return best


def assess_health(url: str, probes: Sequence[Probe], policy: HealthPolicy) -> Measurement:
    """Successful when ``policy.successes`` probes in a row answered 2xx in time;
    Inconclusive without probes; Failed otherwise (refused and timed out included:
    an instance that does not answer is unhealthy)."""
    answers = [p.status if p.status is not None else p.error for p in probes]
    detail: dict[str, Any] = {"url": url, "answers": answers}
    if not probes:
        return inconclusive(HEALTH, "not probed", url=url)
    run = _longest_run(probes)
    outcome: Outcome = "Successful" if run >= policy.successes else "Failed"
    if outcome == "Failed":
        detail["reason"] = f"{run} consecutive healthy answers of {policy.successes} needed"
    return Measurement(metric=HEALTH, outcome=outcome, value=run, threshold=policy.successes, detail=detail)


def metric_value(name: str, traffic: Window | None) -> float | None:
    """The metric over a window; None when there is nothing to compute it from."""
    if traffic is None or not traffic.requests > 0:
        return None
    raw = traffic.error_rate if name == "error_rate" else traffic.latency_p99_s
    return _finite(raw)


def assess_metric(
    check: MetricCheck,
    canary: Window | None,
    stable: Window | None,
    *,
    detail: Mapping[str, Any] | None = None,
    history: History | None = None,
) -> Measurement:
    """One measurement of a metric of the new version (``canary``) against its limits;
    ``max_increase_pct`` compares with the version serving beside it (``stable``),
    ``max_increase_pct_vs_previous`` with previous releases (``history``)."""
    value = metric_value(check.name, canary)
    baseline = metric_value(check.name, stable)
    info: dict[str, Any] = {**(detail or {}), "compare": check.compare}

    def measured(outcome: Outcome, threshold: float | None, reason: str = "") -> Measurement:
        extra = {"reason": reason} if reason else {}
        return Measurement(
            metric=check.name,
            outcome=outcome,
            value=value,
            baseline=baseline,
            threshold=threshold,
            detail={**info, **extra},
        )

    if value is None:
        if canary is None or not canary.requests > 0:
            return measured("Inconclusive", check.max, "no requests reached the new version")
        return measured("Inconclusive", check.max, f"no {check.name} data for the new version")
    if check.max is not None and value > check.max:
        return measured("Failed", check.max, f"{check.name} {value:.4g} above max {check.max:.4g}")
    threshold = check.max
    if check.max_increase_pct is not None:
        if baseline is None:
            return measured("Inconclusive", check.max, f"no {check.name} of a stable version to compare with")
        limit = baseline * (1 + check.max_increase_pct / 100)
        if value > limit:
            pct = check.max_increase_pct
            why = f"{check.name} {value:.4g} more than {pct:g}% above stable's {baseline:.4g}"
            return measured("Failed", limit, why)
        threshold = limit if threshold is None else min(threshold, limit)
    rule = check.max_increase_pct_vs_previous
    if rule is not None:
        relative = assess_vs_previous(check.name, value, rule, history)
        info["vs_previous"] = relative.detail
        if relative.outcome is not None:
            return measured(relative.outcome, relative.limit or threshold, relative.reason)
        if relative.limit is not None:
            threshold = relative.limit if threshold is None else min(threshold, relative.limit)
    return measured("Successful", threshold)


# --- query checks ----------------------------------------------------------------


def is_dry_run(m: Measurement) -> bool:
    return m.detail.get("dry_run") is True


def _why(problem: Measurement) -> str:
    return problem.error or str(problem.detail.get("reason", "")) or problem.outcome


def _track_detail(track: str, version: str | None, result: QueryResult) -> dict[str, Any]:
    return {"track": track, "version": version, **result.to_detail()}


def query_detail(check: QueryCheck, run: QueryRound) -> dict[str, Any]:
    """What a query measurement records: enough to judge it again without Prometheus."""
    detail: dict[str, Any] = {
        "source": PROMETHEUS,
        "template": check.query,
        "window": check.window,
        "compare": check.compare,
        "limits": check.limits_dict(),
        "dry_run": check.dry_run,
        "attempt": run.attempt,
        "at": run.at.isoformat(),
        "canary": _track_detail("canary", run.canary_version, run.canary),
    }
    track = check.compared_track
    if track is not None and run.compared is not None:
        detail[track] = _track_detail(track, run.compared_version, run.compared)
    elif track is not None:
        detail["compared_missing"] = run.compared_missing or f"the {track} track was not queried"
    return detail


def assess_query(check: QueryCheck, run: QueryRound, history: History | None = None) -> Measurement:
    """One measurement of a query check from one round, in this order: the new
    version's result cannot be judged (error: Error; empty, NaN: Inconclusive; more
    than one series: Error); its value is above ``max`` or below ``min`` (Failed);
    with ``max_increase_pct``, the compared track's result cannot be judged or is
    missing (Error / Inconclusive), or the value is more than ``max_increase_pct``
    above it (Failed); with ``max_increase_pct_vs_previous``, previous releases
    cannot be compared with (``assess_vs_previous``) or the value is above their
    mean by more than allowed (Failed); else Successful."""
    detail = query_detail(check, run)
    value = run.canary.value
    baseline = run.compared.value if run.compared is not None else None
    track = check.compared_track

    def measured(
        outcome: Outcome, reason: str = "", threshold: float | None = None, error: str | None = None
    ) -> Measurement:
        extra = {"reason": reason} if reason else {}
        return Measurement(
            metric=check.name,
            outcome=outcome,
            value=value,
            baseline=baseline,
            threshold=threshold,
            error=error,
            detail={**detail, **extra},
        )

    problem = problem_measurement(check.name, run.canary)
    if problem is not None:
        why = f"canary: {_why(problem)}"
        return measured(problem.outcome, why, error=why if problem.outcome == "Error" else None)
    if value is None:
        return measured("Error", error="canary: the result has no single value")
    if check.max is not None and value > check.max:
        return measured("Failed", f"{check.name} {value:.4g} above max {check.max:.4g}", check.max)
    if check.min is not None and value < check.min:
        return measured("Failed", f"{check.name} {value:.4g} below min {check.min:.4g}", check.min)
    uppers = [check.max] if check.max is not None else []
    if check.max_increase_pct is not None and track is not None:
        if run.compared is None:
            return measured("Inconclusive", str(detail["compared_missing"]))
        problem = problem_measurement(check.name, run.compared)
        if problem is not None:
            why = f"{track}: {_why(problem)}"
            return measured(problem.outcome, why, error=why if problem.outcome == "Error" else None)
        if baseline is None:
            return measured("Error", error=f"{track}: the result has no single value")
        limit = increase_limit(baseline, check.max_increase_pct)
        if value > limit:
            pct = check.max_increase_pct
            why = f"{check.name} {value:.4g} more than {pct:g}% above {track}'s {baseline:.4g}"
            return measured("Failed", why, limit)
        uppers.append(limit)
    rule = check.max_increase_pct_vs_previous
    if rule is not None:
        relative = assess_vs_previous(check.name, value, rule, history)
        detail["vs_previous"] = relative.detail
        if relative.outcome is not None:
            error = relative.reason if relative.outcome == "Error" else None
            return measured(relative.outcome, relative.reason, relative.limit, error=error)
        if relative.limit is not None:
            uppers.append(relative.limit)
    return measured("Successful", threshold=min(uppers) if uppers else check.min)


def measure_queries(facts: Facts, policy: AnalysisPolicy) -> list[Measurement]:
    """One measurement per round of every query check, check by check; a check that
    was not measured at all is Inconclusive."""
    rounds = facts.queries or ()
    history = facts.history or {}
    out: list[Measurement] = []
    for check in policy.queries:
        mine = [r for r in rounds if r.check == check.name]
        if mine:
            out.extend(assess_query(check, r, history.get(check.name)) for r in mine)
        else:
            why = "the query was not measured"
            out.append(inconclusive(check.name, why, source=PROMETHEUS, dry_run=check.dry_run))
    return out


def result_from_detail(detail: Mapping[str, Any]) -> QueryResult:
    """A result as ``QueryResult.to_detail`` recorded it (``float`` reads the "NaN",
    "+Inf" and "-Inf" it writes for values JSON has no number for)."""
    samples = tuple(
        Sample(dict(s.get("labels") or {}), float(s["t"]), float(s["v"])) for s in detail.get("samples") or ()
    )
    series = tuple(
        Series(dict(s.get("labels") or {}), tuple((float(t), float(v)) for t, v in s.get("points") or ()))
        for s in detail.get("series") or ()
    )
    params = {k: float(detail[k]) for k in ("time", "start", "end", "step") if k in detail}
    return QueryResult(
        query=str(detail.get("query", "")),
        status=detail["status"],
        samples=samples,
        series=series,
        message=str(detail.get("message", "")),
        error_type=detail.get("error_type"),
        warnings=tuple(detail.get("warnings") or ()),
        params=params,
        attempts=int(detail.get("attempts", 1)),
    )


def round_from_measurement(m: Measurement, compare: Track | None = None) -> QueryRound:
    """The round a recorded query measurement was judged from, to judge it again
    (``assess_query(other_check, round)``); ``compare``: the track to take the
    compared result from, by default the one recorded."""
    detail = m.detail
    if detail.get("source") != PROMETHEUS or "canary" not in detail:
        raise ValueError(f"measurement of {m.metric!r} holds no query results")
    track = compare or (None if detail.get("compare") == "none" else detail.get("compare"))
    compared = detail.get(track) if track else None
    return QueryRound(
        check=m.metric,
        attempt=int(detail.get("attempt", 0)),
        at=datetime.fromisoformat(detail["at"]),
        canary_version=detail["canary"].get("version"),
        canary=result_from_detail(detail["canary"]),
        compared_version=compared.get("version") if compared else None,
        compared=result_from_detail(compared) if compared else None,
        compared_missing=None if compared else detail.get("compared_missing"),
    )


# --- from facts to measurements --------------------------------------------------


def wants_metrics(kind: str, policy: AnalysisPolicy, stable: str | None) -> bool:
    """Metrics (and the impact and SLO figures) are measured by an analysis step, and
    after a weight change while a stable version serves beside the canary (otherwise
    there is nothing to split)."""
    if not (policy.metrics or policy.queries or policy.slo or policy.impact or policy.cloudwatch_queries):
        return False
    return kind == "analysis" or (kind == "set_weight" and stable is not None)


def _traffic(version: str | None, w: Window | None) -> dict[str, Any] | None:
    if version is None or w is None:
        return None
    return {
        "version": version,
        "requests": w.requests,
        "errors": w.errors,
        "error_rate": _finite(w.error_rate),
        "latency_p99_s": _finite(w.latency_p99_s),
    }


def measure_metrics(facts: Facts, policy: AnalysisPolicy) -> list[Measurement]:
    """One measurement per check per scrape after the first good one (the baseline:
    every window runs from it), one Error per check per failed scrape."""
    checks = policy.metrics
    if facts.metrics_unavailable is not None or not facts.scrapes:
        reason = facts.metrics_unavailable or "the metrics were not measured"
        return [inconclusive(c.name, reason) for c in checks]
    load = None if facts.load is None else {"sent": facts.load.sent, "failed": facts.load.failed}
    out: list[Measurement] = []
    baseline = None
    for attempt in facts.scrapes:
        if attempt.counters is None:
            out.extend(error_measurement(c.name, attempt.error or "scrape failed") for c in checks)
            continue
        if baseline is None or baseline.counters is None:
            baseline = attempt
            continue
        canary = window(baseline.counters, attempt.counters, facts.canary)
        stable = window(baseline.counters, attempt.counters, facts.stable) if facts.stable else None
        detail = {
            "window_s": round(attempt.at_s - baseline.at_s, 3),
            "canary": _traffic(facts.canary, canary),
            "stable": _traffic(facts.stable, stable),
            "load": load,
        }
        out.extend(
            assess_metric(c, canary, stable, detail=detail, history=(facts.history or {}).get(c.name))
            for c in checks
        )
    if not out:
        # a baseline and nothing after it: every check must still be accounted for
        out.extend(inconclusive(c.name, "no scrape after the baseline") for c in checks)
    return out


def measure(
    facts: Facts, policy: AnalysisPolicy, kind: str, *, weight: int | None = None
) -> list[Measurement]:
    """Every measurement of one verification run, in the order taken; ``weight``:
    the share of traffic (percent) the step gives the new version, for the impact."""
    out = [error_measurement(TARGET, error) for error in facts.status_errors]
    if facts.status is None:
        return out  # never learned what serves: nothing else could be looked at
    out.append(Measurement(metric=TARGET, outcome="Successful", detail=facts.status))
    if policy.health is not None:
        if facts.health is None:
            out.append(inconclusive(HEALTH, "health was not checked"))
        elif not facts.health:
            out.append(
                Measurement(
                    metric=HEALTH,
                    outcome="Failed",
                    detail={"reason": f"no instance of version {facts.canary} to check"},
                )
            )
        else:
            out.extend(assess_health(o.url, o.probes, policy.health) for o in facts.health)
    # alarms are rollback triggers: looked up at every verification, whatever the step
    out.extend(measure_alarms(facts, policy))
    if wants_metrics(kind, policy, facts.stable):
        out.extend(measure_metrics(facts, policy))
        out.extend(measure_queries(facts, policy))
        out.extend(measure_cloudwatch(facts, policy))
        out.extend(measure_impact(facts, policy, weight=weight))
        out.extend(measure_slo(facts, policy))
    if wants_judge(kind, policy):
        out.extend(measure_judge(facts, policy))
    return out


def wants_judge(kind: str, policy: AnalysisPolicy) -> bool:
    """The statistical judge runs at analysis steps only."""
    return policy.judge is not None and kind == "analysis"


# --- the verdict -----------------------------------------------------------------


def _max_error_run(measurements: Iterable[Measurement]) -> int:
    best = run = 0
    for m in measurements:
        run = run + 1 if m.outcome == "Error" else 0
        best = max(best, run)
    return best


def assess_check(
    measurements: Sequence[Measurement], limits: Limits, *, include_dry_run: bool = False
) -> tuple[Outcome, str]:
    """The outcome of one check from its measurements, in Argo's order: too many
    failures, too many inconclusive, too many errors in a row, then Successful only
    if at least one measurement was. Dry-run measurements are left out unless
    ``include_dry_run`` (to report what a dry-run check would have decided)."""
    if not include_dry_run:
        measurements = [m for m in measurements if not is_dry_run(m)]
    counts = {o: sum(1 for m in measurements if m.outcome == o) for o in _RANK}
    errors_in_a_row = _max_error_run(measurements)
    if counts["Failed"] > limits.failure_limit:
        failed = next(m for m in measurements if m.outcome == "Failed")
        why = failed.detail.get("reason", "")
        return (
            "Failed",
            f"{counts['Failed']} failed (limit {limits.failure_limit}){': ' + why if why else ''}",
        )
    if counts["Inconclusive"] > limits.inconclusive_limit:
        last = next(m for m in reversed(measurements) if m.outcome == "Inconclusive")
        why = last.detail.get("reason", "")
        return (
            "Inconclusive",
            f"{counts['Inconclusive']} inconclusive (limit {limits.inconclusive_limit})"
            f"{': ' + why if why else ''}",
        )
    if errors_in_a_row > limits.consecutive_error_limit:
        last_error = next(m.error for m in reversed(measurements) if m.outcome == "Error")
        return (
            "Error",
            f"{errors_in_a_row} errors in a row (limit {limits.consecutive_error_limit}): {last_error}",
        )
    if counts["Successful"] == 0:
        return "Inconclusive", f"no successful measurement of {len(measurements)}"
    return "Successful", f"{counts['Successful']} of {len(measurements)} successful"


def combine(
    measurements: Sequence[Measurement],
    limits: Limits,
    *,
    strict: Iterable[str] = STRICT,
    per_check: Mapping[str, Limits] | None = None,
) -> Verdict:
    """The verdict over all checks: the worst of them (Failed, Error, Inconclusive,
    Successful), with every check that is not Successful in the reason. A check in
    ``per_check`` is judged with its own limits. Dry-run checks do not count: what
    they would have decided is only added to the reason."""
    if not measurements:
        return Verdict("Inconclusive", "nothing was measured")
    strict = frozenset(strict)
    per_check = per_check or {}
    by_check: dict[str, list[Measurement]] = {}
    dry: dict[str, list[Measurement]] = {}
    for m in measurements:
        (dry if is_dry_run(m) else by_check).setdefault(m.metric, []).append(m)

    def limits_of(name: str) -> Limits:
        own = per_check.get(name, limits)
        return replace(own, failure_limit=0, inconclusive_limit=0) if name in strict else own

    results = {name: assess_check(group, limits_of(name)) for name, group in by_check.items()}
    notes = []
    for name, group in dry.items():
        outcome, why = assess_check(group, limits_of(name), include_dry_run=True)
        notes.append(f"{name} (dry run, not gating) {outcome}: {why}")
    if not results:
        return Verdict("Inconclusive", "; ".join(["only dry-run checks were measured", *notes]))
    worst: Outcome = max((outcome for outcome, _ in results.values()), key=_RANK.__getitem__)
    if worst == "Successful":
        reasons = [f"{name}: {why}" for name, (_, why) in results.items()]
    else:
        reasons = [
            f"{name} {outcome}: {why}" for name, (outcome, why) in results.items() if outcome != "Successful"
        ]
    return Verdict(worst, "; ".join(reasons + notes))


def verdict_over(measurements: Sequence[Measurement], policy: AnalysisPolicy) -> Verdict:
    """The verdict of one verification run under ``policy``: every check's outcome
    combined; the judge's summary is strict (one fail fails, one marginal pauses),
    its per-query measurements are recorded but never gate on their own, and
    neither does an impact measurement without limits."""
    gated = [m for m in gating(measurements) if not is_informative(m)]
    return combine(gated, policy.limits, strict=STRICT | {JUDGE}, per_check=policy.check_limits())
