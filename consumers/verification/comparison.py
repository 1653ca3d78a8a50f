"""The statistical judge wired into an analysis: which track the canary is compared
with, the samples each judged query gives, and the judge's verdict as measurements.

Pure: ``gather`` fetches the ranges (``Facts.judge_ranges``), this turns them into
the judge's samples and records the verdict — one measurement per judged query
(``judge:<query>``, recorded, never gating on its own: the score decides) and one
``judge`` summary whose outcome is the verdict's (pass -> Successful, marginal ->
Inconclusive, fail -> Failed) and whose value is the score.

Each metric's measurement keeps both tracks' range results (rendered PromQL, every
point) in ``detail``, so ``range_from_measurement`` can give the judge the same
samples again under another policy (``shiplog.rejudge``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters.metrics import QueryResult
from consumers.verification.facts import Facts, JudgeRange
from consumers.verification.judge import JudgeResult, MetricData, judge
from consumers.verification.policy import AnalysisPolicy, JudgePolicy
from events.verification import Measurement

#: the summary measurement's name, and the prefix of each judged query's
JUDGE = "judge"
PREFIX = "judge:"
#: ``detail.source`` of the judge's measurements
SOURCE = "judge"


def metric_name(query: str) -> str:
    return f"{PREFIX}{query}"


def is_judge_metric(m: Measurement) -> bool:
    """A judged query's measurement: recorded, but the summary gates, not it."""
    return m.metric.startswith(PREFIX) and m.detail.get("source") == SOURCE


def gating(measurements: Iterable[Measurement]) -> list[Measurement]:
    """The measurements the verdict is taken over."""
    return [m for m in measurements if not is_judge_metric(m)]


# --- the compared track ----------------------------------------------------------


def compared_track(
    requested: str, tracks: Sequence[Mapping[str, Any]], canary: str, stable: str | None
) -> tuple[str, str | None, str | None]:
    """``(track, version, fallback reason)``: a baseline track the target runs beside
    the canary when one is asked for and there is one; else stable, with the reason
    when a baseline was asked for."""
    if requested == "baseline":
        baseline = [t for t in tracks if t.get("role") == "baseline" and t.get("version") != canary]
        if baseline:
            return "baseline", str(baseline[0]["version"]), None
        roles = ", ".join(sorted({str(t.get("role")) for t in tracks})) or "none"
        why = (
            f"the baseline was not available: the target runs no baseline track beside the canary "
            f"(tracks: {roles}); compared with stable instead"
        )
        return "stable", stable, why
    return "stable", stable, None


# --- samples ---------------------------------------------------------------------


def samples_of(result: QueryResult) -> list[float] | str:
    """The values of a range result's single series (in time order), or why there
    are none to use. No series is no samples (the judge makes that NoData); NaN
    points are kept for the metric's ``nan_strategy``."""
    if result.status == "error":
        return result.message or "the query failed"
    if len(result.series) > 1:
        return (
            f"the query returned {len(result.series)} series where one was expected "
            "(aggregate it, e.g. with sum(...))"
        )
    if result.series:
        return result.series[0].values
    return [s.value for s in result.samples]


def metric_data(r: JudgeRange) -> MetricData:
    canary = samples_of(r.canary)
    if isinstance(canary, str):
        return MetricData(error=f"canary: {canary}")
    if r.compared is None:
        return MetricData(canary=canary, baseline=())
    compared = samples_of(r.compared)
    if isinstance(compared, str):
        return MetricData(error=f"{r.compared_track}: {compared}")
    return MetricData(canary=canary, baseline=compared)


# --- recording -------------------------------------------------------------------


def _result_detail(track: str, version: str | None, result: QueryResult) -> dict[str, Any]:
    return {"track": track, "version": version, **result.to_detail()}


def range_detail(r: JudgeRange) -> dict[str, Any]:
    """What a judged query's measurement records of its ranges."""
    detail: dict[str, Any] = {
        "start": r.start.isoformat(),
        "end": r.end.isoformat(),
        "step_s": r.step_s,
        "compared_track": r.compared_track,
        "canary": _result_detail("canary", r.canary_version, r.canary),
    }
    if r.compared is not None:
        detail["compared"] = _result_detail(r.compared_track, r.compared_version, r.compared)
    else:
        detail["compared_missing"] = r.compared_missing or f"the {r.compared_track} track was not queried"
    return detail


def range_from_measurement(m: Measurement) -> JudgeRange:
    """The ranges a recorded judged query was judged from."""
    # imported here: analysis imports this module
    from consumers.verification.analysis import result_from_detail

    ranges = m.detail.get("ranges")
    if not is_judge_metric(m) or not isinstance(ranges, Mapping):
        raise ValueError(f"measurement of {m.metric!r} holds no judge ranges")
    compared = ranges.get("compared")
    return JudgeRange(
        check=m.metric.removeprefix(PREFIX),
        start=datetime.fromisoformat(ranges["start"]),
        end=datetime.fromisoformat(ranges["end"]),
        step_s=float(ranges["step_s"]),
        canary_version=ranges["canary"].get("version"),
        canary=result_from_detail(ranges["canary"]),
        compared_track=str(ranges["compared_track"]),
        compared_version=compared.get("version") if compared else None,
        compared=result_from_detail(compared) if compared else None,
        compared_missing=None if compared else ranges.get("compared_missing"),
    )


def judge_measurements(
    policy: JudgePolicy, ranges: Sequence[JudgeRange], comparison: Mapping[str, Any]
) -> list[Measurement]:
    """The judge's verdict over ``ranges``: one measurement per judged query, then
    the ``judge`` summary. ``comparison`` (the track asked for, the one used, why
    they differ) goes into every measurement's detail."""
    by_check = {r.check: r for r in ranges}
    data = {m.query: metric_data(by_check[m.query]) for m in policy.metrics if m.query in by_check}
    result: JudgeResult = judge(policy.config(), data)
    out: list[Measurement] = []
    for metric in result.metrics:
        m = metric.measurement()
        detail: dict[str, Any] = {**m.detail, "source": SOURCE, "comparison": dict(comparison)}
        if metric.name in by_check:
            detail["ranges"] = range_detail(by_check[metric.name])
        out.append(m.model_copy(update={"metric": metric_name(metric.name), "detail": detail}))
    summary = result.model_dump(mode="json", exclude={"metrics"})
    out.append(
        Measurement(
            metric=JUDGE,
            outcome=result.outcome,
            value=result.score,
            threshold=result.pass_threshold,
            detail={
                "source": SOURCE,
                "reason": result.reason,
                "verdict": result.verdict,
                "comparison": dict(comparison),
                "judge": summary,
            },
        )
    )
    return out


def measure_judge(facts: Facts, policy: AnalysisPolicy) -> list[Measurement]:
    """The judge's measurements of one analysis; a judge whose samples were not
    fetched at all is one Inconclusive summary (missing data is never a pass)."""
    if policy.judge is None:
        return []
    tracks = (facts.status or {}).get("tracks") or []
    track, _, fallback = compared_track(policy.judge.baseline, tracks, facts.canary, facts.stable)
    comparison = {"requested": policy.judge.baseline, "track": track}
    if fallback is not None:
        comparison["fallback_reason"] = fallback
    if facts.judge_ranges is None:
        reason = "the judge's samples were not measured"
        return [
            Measurement(
                metric=JUDGE,
                outcome="Inconclusive",
                detail={"source": SOURCE, "reason": reason, "comparison": comparison},
            )
        ]
    return judge_measurements(policy.judge, facts.judge_ranges, comparison)
