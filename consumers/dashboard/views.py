"""What the deployment page shows, shaped from its recorded stream: the timeline,
each verification with its measurements, the judge's score, and charts of the new
version (canary) against the version it is compared with (baseline / stable).

Pure over the recorded events; ``web`` reads the stream and renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.eventlog.records import RecordedEvent
from consumers.dashboard.chart import Series, line_chart
from consumers.verification.analysis import HEALTH, TARGET
from consumers.verification.comparison import JUDGE
from consumers.verification.impact import IMPACT
from consumers.verification.slo import SLO
from events.envelope import CloudEvent

VERIFIED = {
    "shiplog.verification.passed": "passed",
    "shiplog.verification.failed": "failed",
    "shiplog.verification.inconclusive": "inconclusive",
}
#: measurements that are not a metric of the new version against another (nothing
#: to chart): the target's status, health, the judge's summary, the impact, the SLO
NOT_CHARTED = frozenset({TARGET, HEALTH, JUDGE, IMPACT, SLO})


@dataclass(frozen=True)
class TimelineEntry:
    at: str
    kind: str
    actor: str | None
    summary: str
    outcome: str


@dataclass
class Analysis:
    step_index: int | None
    outcome: str
    reason: str
    at: str
    measurements: list[dict[str, Any]]
    judge_score: float | None = None
    judge_verdict: str | None = None


@dataclass
class AnalysisView:
    runs: list[Analysis] = field(default_factory=list)
    #: rendered SVG, one per charted metric
    charts: list[str] = field(default_factory=list)
    judge_score: float | None = None
    judge_verdict: str | None = None


def short_type(event: CloudEvent) -> str:
    return event.type_name.removeprefix("shiplog.")


def summary(event: CloudEvent) -> str:
    data = event.data
    for key in ("reason", "rule", "why", "comment"):
        if data.get(key):
            return str(data[key])[:200]
    step = data.get("step")
    if isinstance(step, Mapping):
        weight = f" {step['weight']}%" if step.get("weight") is not None else ""
        failed = "" if data.get("ok", True) else f" FAILED: {data.get('error')}"
        return f"step {data.get('index')}: {step.get('kind')}{weight}{failed}"
    if "version" in data and "service" in data:
        return f"{data['service']} {data['version']}"
    if data.get("level"):
        return f"level {data['level']}"
    return ""


def _outcome(event: CloudEvent) -> str:
    name = event.type_name
    if name.endswith(("failed", "rolled_back", "denied", "rejected", "refused")):
        return "bad"
    if name.endswith(("succeeded", "passed", "approved", "recorded", "completed")):
        return "good"
    if name.endswith(("requested", "paused", "inconclusive", "scheduled")):
        return "wait"
    return ""


def timeline(history: Sequence[RecordedEvent]) -> list[TimelineEntry]:
    return [
        TimelineEntry(
            at=r.recorded_at.isoformat(timespec="milliseconds"),
            kind=short_type(r.event),
            actor=r.event.actor,
            summary=summary(r.event),
            outcome=_outcome(r.event),
        )
        for r in history
    ]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _range_points(detail: Mapping[str, Any], track: str) -> tuple[tuple[float, float], ...]:
    ranges = detail.get("ranges")
    if not isinstance(ranges, Mapping):
        return ()
    result = ranges.get(track)
    if not isinstance(result, Mapping):
        return ()
    series = result.get("series") or []
    if not series:
        return ()
    out = []
    start = None
    for t, v in series[0].get("points") or ():
        x, y = _number(t), _number(v)
        if x is None or y is None:
            continue
        start = x if start is None else start
        out.append((x - start, y))
    return tuple(out)


def analysis(history: Sequence[RecordedEvent]) -> AnalysisView:
    """Every verification of the deployment, and a chart per metric: per round for
    the built-in and query checks (value against baseline), over time for each
    query the judge compared (every point of both tracks)."""
    view = AnalysisView()
    rounds: dict[str, list[tuple[float | None, float | None]]] = {}
    thresholds: dict[str, float | None] = {}
    ranged: dict[str, tuple[Series, Series, str]] = {}
    for record in history:
        event = record.event
        outcome = VERIFIED.get(event.type_name)
        if outcome is None:
            continue
        measurements = [m for m in event.data.get("measurements") or [] if isinstance(m, Mapping)]
        run = Analysis(
            step_index=event.data.get("step_index"),
            outcome=outcome,
            reason=str(event.data.get("reason") or ""),
            at=record.recorded_at.isoformat(timespec="seconds"),
            measurements=[dict(m) for m in measurements],
        )
        for m in measurements:
            metric = str(m.get("metric"))
            detail = m.get("detail") or {}
            if metric == JUDGE:
                run.judge_score = _number(m.get("value"))
                run.judge_verdict = detail.get("verdict") if isinstance(detail, Mapping) else None
                view.judge_score, view.judge_verdict = run.judge_score, run.judge_verdict
                continue
            if metric in NOT_CHARTED:
                continue
            if isinstance(detail, Mapping) and isinstance(detail.get("ranges"), Mapping):
                track = str(detail["ranges"].get("compared_track") or "baseline")
                canary = Series("canary", "canary", _range_points(detail, "canary"))
                compared = Series(track, "baseline", _range_points(detail, "compared"))
                ranged[metric] = (canary, compared, track)
                continue
            value, baseline = _number(m.get("value")), _number(m.get("baseline"))
            if value is None and baseline is None:
                continue
            rounds.setdefault(metric, []).append((value, baseline))
            thresholds[metric] = _number(m.get("threshold"))
        view.runs.append(run)
    for metric, values in rounds.items():
        new = tuple((float(i + 1), v) for i, (v, _) in enumerate(values) if v is not None)
        old = tuple((float(i + 1), b) for i, (_, b) in enumerate(values) if b is not None)
        view.charts.append(
            line_chart(
                f"{metric}: canary vs baseline",
                [Series("canary", "canary", new), Series("baseline (stable)", "baseline", old)],
                x_label="analysis round",
                threshold=thresholds.get(metric),
            )
        )
    for metric, (canary_series, compared_series, track) in ranged.items():
        view.charts.append(
            line_chart(
                f"{metric}: canary vs {track}",
                [canary_series, compared_series],
                x_label="seconds into the window",
            )
        )
    return view
