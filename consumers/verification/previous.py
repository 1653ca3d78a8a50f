"""Relative criteria against previous releases, as Keptn scores them: "at most 10%
above the mean of the last 3 successful releases".

Pure. ``gather`` reads each compared check's values from the log (``Facts.history``:
per earlier successful deployment of the same service and environment, the mean of
the check's measured values in its passed verifications); this compares one
measured value of the new version with their mean. Fewer releases than the rule
needs, or a log that could not be read, is never a pass. The values used are in the
measurement's ``detail.vs_previous``, so the decision can be checked by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.verification.facts import History, PreviousValue
from consumers.verification.policy import VsPrevious
from events.verification import Outcome


@dataclass(frozen=True, slots=True)
class Relative:
    """The rule's finding: ``outcome`` None means within the limit (``limit``)."""

    outcome: Outcome | None
    reason: str = ""
    limit: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def increase_limit(baseline: float, pct: float) -> float:
    """``pct`` % above ``baseline`` (of its magnitude: a negative baseline too)."""
    return baseline + abs(baseline) * pct / 100


def previous_detail(previous: Sequence[PreviousValue]) -> list[dict[str, Any]]:
    return [{"deployment_id": p.deployment_id, "version": p.version, "value": p.value} for p in previous]


def assess_vs_previous(name: str, value: float, rule: VsPrevious, history: History | None) -> Relative:
    """``value`` of check ``name`` against the mean of its last ``rule.releases``
    successful releases: Failed above it by more than ``rule.pct`` %, Inconclusive
    with fewer than ``rule.needed`` of them, Error when the log could not be read."""
    detail: dict[str, Any] = {**rule.as_detail()}
    if history is None:
        why = "previous releases were not read"
        return Relative("Inconclusive", why, detail={**detail, "reason": why})
    if history.error is not None:
        why = f"previous releases could not be read: {history.error}"
        return Relative("Error", why, detail={**detail, "error": history.error})
    used = [p for p in history.previous if math.isfinite(p.value)][-rule.releases :]
    detail["previous"] = previous_detail(used)
    if len(used) < rule.needed:
        why = history.missing or (
            f"{len(used)} previous successful release(s) with a recorded {name}, {rule.needed} needed"
        )
        return Relative("Inconclusive", why, detail={**detail, "reason": why})
    mean = sum(p.value for p in used) / len(used)
    limit = increase_limit(mean, rule.pct)
    detail.update(mean=mean, limit=limit)
    if value > limit:
        why = (
            f"{name} {value:.4g} more than {rule.pct:g}% above the mean {mean:.4g} "
            f"of the last {len(used)} successful releases"
        )
        return Relative("Failed", why, limit, detail)
    return Relative(None, limit=limit, detail=detail)
