"""Judging what CloudWatch said: alarm states as rollback triggers, and CloudWatch
metric queries against their limits. Pure: facts in, measurements out.

Alarms (measurement ``alarms``, one per lookup): any named alarm in ``ALARM`` is
Failed — and ``alarms`` is a strict check, so one Failed lookup fails the step and
the deployment is rolled back (CodeDeploy's alarm-based rollback). An alarm
CloudWatch does not know is an Error (a misspelt name must not pass silently), as
is a lookup that failed after the retries. ``INSUFFICIENT_DATA`` does not fail: as
for CodeDeploy, only ``ALARM`` triggers; the state is recorded in the detail.

CloudWatch queries (one measurement per round, named by the check): the latest
datapoint against ``max`` / ``min``; no datapoint is Inconclusive and a failed call
an Error (``adapters.metrics.to_measurement``).
"""

from __future__ import annotations

from adapters.metrics import Judge, to_measurement
from adapters.metrics.cloudwatch import AlarmStates
from consumers.verification.facts import Facts
from consumers.verification.policy import AnalysisPolicy, CloudWatchCheck
from events.verification import Measurement, Outcome

ALARMS = "alarms"
#: ``detail.source`` of CloudWatch measurements
CLOUDWATCH = "cloudwatch"


def assess_alarms(states: AlarmStates) -> Measurement:
    """One lookup of the named alarms: Failed if any is in ALARM, Error if the
    lookup failed or an alarm is unknown, else Successful."""
    detail = {"source": CLOUDWATCH, **states.to_detail()}
    if states.error is not None:
        return Measurement(metric=ALARMS, outcome="Error", error=states.error, detail=detail)
    firing = states.firing
    if firing:
        names = ", ".join(f"{a.name} ({a.reason})" if a.reason else a.name for a in firing)
        return Measurement(
            metric=ALARMS,
            outcome="Failed",
            value=len(firing),
            threshold=0,
            detail={**detail, "reason": f"in ALARM: {names}"},
        )
    if states.missing:
        why = f"CloudWatch knows no alarm named {', '.join(states.missing)}"
        return Measurement(metric=ALARMS, outcome="Error", error=why, detail=detail)
    return Measurement(metric=ALARMS, outcome="Successful", value=0, threshold=0, detail=detail)


def measure_alarms(facts: Facts, policy: AnalysisPolicy) -> list[Measurement]:
    if not policy.alarms:
        return []
    if not facts.alarms:
        detail = {"source": CLOUDWATCH, "reason": "the alarms were not looked up"}
        return [Measurement(metric=ALARMS, outcome="Inconclusive", detail=detail)]
    return [assess_alarms(states) for states in facts.alarms]


def _judge(check: CloudWatchCheck) -> Judge:
    def judge(value: float) -> tuple[Outcome, str]:
        if check.max is not None and value > check.max:
            return "Failed", f"{check.name} {value:.4g} above max {check.max:.4g}"
        if check.min is not None and value < check.min:
            return "Failed", f"{check.name} {value:.4g} below min {check.min:.4g}"
        return "Successful", ""

    return judge


def measure_cloudwatch(facts: Facts, policy: AnalysisPolicy) -> list[Measurement]:
    """One measurement per round of every CloudWatch query check; a check that was
    not measured at all is Inconclusive."""
    results = facts.cloudwatch or ()
    out: list[Measurement] = []
    for check in policy.cloudwatch_queries:
        mine = [r for name, r in results if name == check.name]
        extra = {"source": CLOUDWATCH, "limits": check.limits_dict(), "dry_run": check.dry_run}
        if not mine:
            detail = {**extra, "reason": "the query was not measured"}
            out.append(Measurement(metric=check.name, outcome="Inconclusive", detail=detail))
            continue
        for result in mine:
            m = to_measurement(
                check.name, result, _judge(check), threshold=check.max if check.max is not None else check.min
            )
            out.append(m.model_copy(update={"detail": {**m.detail, **extra}}))
    return out
