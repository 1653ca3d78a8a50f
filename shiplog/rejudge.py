"""Re-judging a recorded deployment with another analysis policy.

Every verification event records the measurements it was decided from — health
answers, the built-in metrics' traffic windows, every query round's raw results, the
judge's sample ranges. ``rejudge`` replays them, step by step, through another
policy with the same pure functions verification decides with (``assess_health``,
``assess_metric``, ``assess_query``, the judge, ``verdict_over``), so re-judging
with the policy the deployment ran with reproduces the recorded decisions exactly,
and another policy shows what it would have decided: thresholds tuned on real
history before they are turned on.

Only what was measured can be judged again: a check the new policy adds, or rounds
beyond the recorded ones, are not invented — such a check is Inconclusive, saying
it was not recorded.

``analysis`` is the click group (``shiplog analysis rejudge DEPLOYMENT --policy
FILE [--json]``); ``load_events`` reads the deployment's stream from the log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from consumers.verification.analysis import (
    HEALTH,
    TARGET,
    Verdict,
    assess_health,
    assess_metric,
    assess_query,
    error_measurement,
    inconclusive,
    round_from_measurement,
    verdict_over,
    wants_judge,
    wants_metrics,
)
from consumers.verification.comparison import (
    compared_track,
    is_judge_metric,
    measure_judge,
    range_from_measurement,
)
from consumers.verification.facts import Facts, JudgeRange, Probe
from consumers.verification.impact import IMPACT
from consumers.verification.policy import AnalysisPolicy, policy_of
from consumers.verification.prometheus import Window
from consumers.verification.slo import SLO
from events.deployment import DeploymentPlanned, deployment_stream
from events.envelope import CloudEvent
from events.errors import InvalidInput
from events.registry import REGISTRY
from events.verification import (
    Measurement,
    Outcome,
    VerificationFailed,
    VerificationInconclusive,
    VerificationPassed,
)

_VERIFIED = (VerificationPassed, VerificationFailed, VerificationInconclusive)
#: the built-in metrics' measurement names
BUILT_IN = frozenset({"error_rate", "latency_p99"})


@dataclass(frozen=True)
class StepRejudged:
    """One verified step: what was decided then, and what the policy decides now."""

    step_index: int
    kind: str
    recorded_outcome: Outcome
    recorded_reason: str
    outcome: Outcome
    reason: str
    measurements: list[Measurement] = field(default_factory=list)
    #: False: nothing was recorded to judge again, the recorded decision stands
    replayed: bool = True

    @property
    def changed(self) -> bool:
        return (self.outcome, self.reason) != (self.recorded_outcome, self.recorded_reason)

    def as_json(self) -> dict[str, Any]:
        return {
            "step_index": self.step_index,
            "kind": self.kind,
            "recorded": {"outcome": self.recorded_outcome, "reason": self.recorded_reason},
            "rejudged": {"outcome": self.outcome, "reason": self.reason},
            "changed": self.changed,
            "replayed": self.replayed,
            "measurements": [m.model_dump(mode="json") for m in self.measurements],
        }


# --- the pure part -----------------------------------------------------------------


def read_policy(raw: Any) -> AnalysisPolicy:
    """A policy from a YAML document: a mapping with an ``analysis:`` section, or the
    bare analysis mapping, in the pipeline's format — validated and completed with
    the pipeline's defaults exactly as planning records it in a plan. Raises
    ``InvalidInput`` saying what is wrong."""
    from consumers.planning.pipeline import Analysis

    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidInput("the policy file must hold a mapping (an `analysis:` section or its content)")
    body = raw["analysis"] if isinstance(raw.get("analysis"), Mapping) else raw
    try:
        spec = Analysis.model_validate(body)
        # as planning records it (``consumers.planning.core``): unset options dropped
        recorded = spec.model_dump(mode="json", exclude_none=True)
        if spec.health is None:
            recorded["health"] = None
        return policy_of(recorded)
    except ValidationError as exc:
        raise InvalidInput(f"the analysis policy is invalid: {exc}") from exc


def _stable_of(status: Mapping[str, Any], canary: str) -> str | None:
    """As ``gather.stable_version``, from the recorded status."""
    others = [t for t in status.get("tracks") or () if t.get("version") != canary]
    if not others:
        return None
    best = min(others, key=lambda t: (t.get("role") != "stable", -float(t.get("weight") or 0)))
    return str(best["version"])


def _health(recorded: Sequence[Measurement], policy: AnalysisPolicy) -> list[Measurement]:
    assert policy.health is not None
    mine = [m for m in recorded if m.metric == HEALTH]
    if not mine:
        return [inconclusive(HEALTH, "health was not checked")]
    out = []
    for m in mine:
        if "url" not in m.detail:
            out.append(m)  # no instance to check, or not checked: nothing to re-judge
            continue
        probes = [
            Probe(status=a) if isinstance(a, int) else Probe(error=str(a))
            for a in m.detail.get("answers") or ()
        ]
        out.append(assess_health(str(m.detail["url"]), probes, policy.health))
    return out


def _window(traffic: Mapping[str, Any] | None) -> Window | None:
    if traffic is None:
        return None
    return Window(float(traffic["requests"]), float(traffic["errors"]), traffic.get("latency_p99_s"))


def _scrapes(recorded: Sequence[Measurement]) -> list[Measurement]:
    """One recorded measurement per scrape (or per reason nothing was scraped): a
    scrape recorded one measurement per check, so a name seen again starts the next."""
    out: list[Measurement] = []
    seen: set[str] = set()
    for m in recorded:
        if m.metric not in BUILT_IN:
            continue
        if not seen or m.metric in seen:
            out.append(m)
            seen = set()
        seen.add(m.metric)
    return out


def _metrics(recorded: Sequence[Measurement], policy: AnalysisPolicy) -> list[Measurement]:
    checks = policy.metrics
    scrapes = _scrapes(recorded)
    if not scrapes:
        return [inconclusive(c.name, "the metrics were not recorded") for c in checks]
    out: list[Measurement] = []
    for m in scrapes:
        if m.outcome == "Error" and "canary" not in m.detail:
            out.extend(error_measurement(c.name, m.error or "scrape failed") for c in checks)
        elif "canary" in m.detail:
            detail = {k: m.detail.get(k) for k in ("window_s", "canary", "stable", "load")}
            canary, stable = _window(m.detail["canary"]), _window(m.detail.get("stable"))
            out.extend(assess_metric(c, canary, stable, detail=detail) for c in checks)
        else:
            out.extend(inconclusive(c.name, str(m.detail.get("reason", ""))) for c in checks)
    return out


def _queries(recorded: Sequence[Measurement], policy: AnalysisPolicy) -> list[Measurement]:
    out: list[Measurement] = []
    for check in policy.queries:
        mine = [m for m in recorded if m.metric == check.name]
        if not mine:
            why = "the query was not recorded"
            out.append(inconclusive(check.name, why, source="prometheus", dry_run=check.dry_run))
        for m in mine:
            try:
                run = round_from_measurement(m, check.compared_track)
            except ValueError:
                out.append(m.model_copy(update={"detail": {**m.detail, "dry_run": check.dry_run}}))
                continue
            out.append(assess_query(check, run))
    return out


def _ranges(recorded: Sequence[Measurement], track: str) -> tuple[JudgeRange, ...] | None:
    """The recorded judge ranges; a range compared with another track than the one
    asked for now has no compared side (the judge makes that NoData)."""
    kept = [m for m in recorded if is_judge_metric(m) and "ranges" in m.detail]
    if not kept:
        return None
    ranges = []
    for m in kept:
        r = range_from_measurement(m)
        if r.compared_track != track:
            why = f"the recorded samples compared with {r.compared_track}, not {track}"
            r = JudgeRange(
                r.check, r.start, r.end, r.step_s, r.canary_version, r.canary, track, compared_missing=why
            )
        ranges.append(r)
    return tuple(ranges)


def remeasure(
    recorded: Sequence[Measurement], policy: AnalysisPolicy, kind: str, canary: str
) -> list[Measurement]:
    """The measurements ``policy`` takes from what was recorded, in ``measure``'s order."""
    out = [m for m in recorded if m.metric == TARGET]
    status = next((m.detail for m in recorded if m.metric == TARGET and m.outcome == "Successful"), None)
    if status is None:
        return out
    if policy.health is not None:
        out.extend(_health(recorded, policy))
    stable = _stable_of(status, canary)
    if wants_metrics(kind, policy, stable):
        out.extend(_metrics(recorded, policy))
        out.extend(_queries(recorded, policy))
        # The impact and the SLO burn rate are kept as recorded (their inputs are in
        # their detail, but another policy's windows could not be re-derived from
        # them); the burn rate only under a policy that has an SLO at all.
        out.extend(m for m in recorded if m.metric == IMPACT)
        if policy.slo is not None:
            out.extend(m for m in recorded if m.metric == SLO)
    if wants_judge(kind, policy):
        assert policy.judge is not None
        track, _, _ = compared_track(policy.judge.baseline, status.get("tracks") or [], canary, stable)
        facts = Facts(
            canary=canary, stable=stable, status=dict(status), judge_ranges=_ranges(recorded, track)
        )
        out.extend(measure_judge(facts, policy))
    return out


def _plan(events: Iterable[CloudEvent]) -> DeploymentPlanned:
    for event in events:
        if event.type_name == DeploymentPlanned.TYPE:
            return REGISTRY.payload(event, DeploymentPlanned)
    raise InvalidInput("the deployment's stream holds no deployment.planned event")


def rejudge(events: Sequence[CloudEvent], policy: AnalysisPolicy) -> list[StepRejudged]:
    """Every verification of the deployment whose stream is ``events``, recorded
    outcome against what ``policy`` decides from the same measurements."""
    plan = _plan(events)
    out: list[StepRejudged] = []
    for event in events:
        model = next((m for m in _VERIFIED if m.TYPE == event.type_name), None)
        if model is None:
            continue
        verified = REGISTRY.payload(event, model)
        kind = plan.strategy.steps[verified.step_index].kind
        measurements: list[Measurement] = []
        if verified.measurements:
            measurements = remeasure(verified.measurements, policy, kind, plan.version)
            verdict = verdict_over(measurements, policy)
        else:
            # nothing was recorded (the plan's policy was invalid, nothing could be
            # looked at): no policy can decide otherwise from nothing
            verdict = Verdict(verified.outcome, verified.reason)
        out.append(
            StepRejudged(
                step_index=verified.step_index,
                kind=kind,
                recorded_outcome=verified.outcome,
                recorded_reason=verified.reason,
                outcome=verdict.outcome,
                reason=verdict.reason,
                measurements=measurements,
                replayed=bool(verified.measurements),
            )
        )
    return out


# --- the shell ---------------------------------------------------------------------


async def load_events(log: Any, deployment: str) -> list[CloudEvent]:
    """The deployment's stream from the log (``PostgresEventLog.read_stream``)."""
    recorded = await log.read_stream(deployment_stream(deployment))
    if not recorded:
        raise InvalidInput(f"no deployment {deployment!r} in the log")
    return [r.event for r in recorded]


async def rejudge_from_log(
    dsn: str, schema: str, deployment: str, policy: AnalysisPolicy
) -> list[StepRejudged]:
    from adapters.eventlog import PostgresEventLog

    log = await PostgresEventLog.connect(dsn, schema=schema, migrate_schema=False)
    try:
        return rejudge(await load_events(log, deployment), policy)
    finally:
        await log.close()


def render(deployment: str, steps: Sequence[StepRejudged]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not steps:
        console.print(f"deployment {deployment} has no recorded verification")
    for step in steps:
        mark = "[yellow]changed[/yellow]" if step.changed else "[green]same[/green]"
        table = Table(title=f"{deployment} step {step.step_index} ({step.kind}): {mark}")
        table.add_column("")
        table.add_column("outcome")
        table.add_column("reason", overflow="fold")
        table.add_row("recorded", step.recorded_outcome, step.recorded_reason)
        table.add_row(
            "rejudged", step.outcome, step.reason if step.replayed else "nothing recorded to replay"
        )
        console.print(table)


@click.group()
def analysis() -> None:
    """Analysis policies against recorded deployments."""


@analysis.command("rejudge")
@click.argument("deployment")
@click.option(
    "--policy",
    "policy_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML with an `analysis:` section (pipeline format) or the bare analysis mapping",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
def rejudge_command(deployment: str, policy_file: Path, as_json: bool) -> None:
    """Replay DEPLOYMENT's recorded measurements through another analysis policy and
    show, step by step, what it would have decided."""
    import asyncio

    from shiplog.settings import Settings

    try:
        policy = read_policy(yaml.safe_load(policy_file.read_text()))
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"not YAML: {exc}", param_hint="--policy") from exc
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from exc
    settings = Settings().with_running_dev(kafka=False, database=True)
    if not settings.database_url:
        raise click.ClickException("no database configured (SHIPLOG_DATABASE_URL)")
    steps = asyncio.run(rejudge_from_log(settings.database_url, settings.log_schema, deployment, policy))
    if as_json:
        click.echo(json.dumps({"deployment": deployment, "steps": [s.as_json() for s in steps]}, indent=2))
    else:
        render(deployment, steps)
