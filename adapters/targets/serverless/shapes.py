"""CodeDeploy's predefined Lambda traffic shapes as pipeline canary steps.

A pipeline's canary strategy is a list of steps, each exactly one of ``set_weight``,
``pause`` or ``analysis`` (``consumers.planning.pipeline.CanaryStep``); the planner
turns ``set_weight: 100`` (or the end of the list) into the promotion. ``canary_steps``
expands a named shape into that list, as the plain dicts a pipeline YAML holds, so it
can be pasted into a pipeline or validated with ``CanaryStep.model_validate``::

    canary_steps("Canary10Percent5Minutes")
    # [{"set_weight": 10}, {"pause": {"duration_s": 300}}, {"analysis": {}},
    #  {"set_weight": 100}]

    canary_steps("Linear10PercentEvery1Minute")
    # 10%, pause 60 s, analysis, 20%, pause 60 s, analysis, ... 90%, pause 60 s,
    # analysis, 100%

    canary_steps("AllAtOnce")  # [{"set_weight": 100}]

Where CodeDeploy only waits, shiplog also analyses (``analysis=True``, the
default): the environment's analysis — health, metric and query checks, CloudWatch
alarms — runs at the end of each bake, and a failed one rolls the alias back, as
CodeDeploy's alarm-based rollback does. ``analysis=False`` gives CodeDeploy's exact
shape (pauses only). Names follow CodeDeploy's ``CodeDeployDefault.Lambda...``
configurations; the prefix may be given or not. Custom shapes: ``canary(percent,
minutes)`` and ``linear(percent, minutes)``.
"""

from __future__ import annotations

import re
from typing import Any

from events.errors import InvalidInput

Steps = list[dict[str, Any]]

_PREFIX = "CodeDeployDefault.Lambda"
_CANARY = re.compile(r"^Canary(\d+)Percent(\d+)Minutes?$")
_LINEAR = re.compile(r"^Linear(\d+)PercentEvery(\d+)Minutes?$")

#: CodeDeploy's predefined Lambda configurations
SHAPES: tuple[str, ...] = (
    "Canary10Percent5Minutes",
    "Canary10Percent10Minutes",
    "Canary10Percent15Minutes",
    "Canary10Percent30Minutes",
    "Linear10PercentEvery1Minute",
    "Linear10PercentEvery2Minutes",
    "Linear10PercentEvery3Minutes",
    "Linear10PercentEvery10Minutes",
    "AllAtOnce",
)


def _bake(minutes: int, analysis: bool) -> Steps:
    steps: Steps = [{"pause": {"duration_s": minutes * 60}}]
    if analysis:
        steps.append({"analysis": {}})
    return steps


def canary(percent: int, minutes: int, *, analysis: bool = True) -> Steps:
    """``percent`` % for ``minutes``, then everything."""
    if not 1 <= percent <= 99 or minutes < 1:
        raise InvalidInput(
            f"a canary shape needs 1-99 percent and at least a minute, got {percent}%, {minutes}m"
        )
    return [{"set_weight": percent}, *_bake(minutes, analysis), {"set_weight": 100}]


def linear(percent: int, minutes: int, *, analysis: bool = True) -> Steps:
    """``percent`` % more every ``minutes`` until everything."""
    if not 1 <= percent <= 99 or minutes < 1:
        raise InvalidInput(
            f"a linear shape needs 1-99 percent and at least a minute, got {percent}%, {minutes}m"
        )
    steps: Steps = []
    for weight in range(percent, 100, percent):
        steps += [{"set_weight": weight}, *_bake(minutes, analysis)]
    return [*steps, {"set_weight": 100}]


def canary_steps(shape: str, *, analysis: bool = True) -> Steps:
    """The canary steps of a named shape (``Canary<P>Percent<M>Minutes``,
    ``Linear<P>PercentEvery<M>Minute(s)``, ``AllAtOnce``); raises ``InvalidInput``."""
    name = shape.removeprefix(_PREFIX)
    if name == "AllAtOnce":
        return [{"set_weight": 100}]
    if match := _CANARY.match(name):
        return canary(int(match[1]), int(match[2]), analysis=analysis)
    if match := _LINEAR.match(name):
        return linear(int(match[1]), int(match[2]), analysis=analysis)
    raise InvalidInput(f"unknown traffic shape {shape!r}; known: {', '.join(SHAPES)}")
