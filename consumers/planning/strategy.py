"""Which strategy an environment gets, as a list of concrete steps, and why.

``select_strategy`` is pure: the configured strategy and the target's capabilities
in, a ``StrategyPlan`` and a reason out. The plan's ``analysis`` steps are where
execution waits for verification's verdict; ``pause`` steps are durable timers
(or, without a duration, a wait for ``shiplog promote``); every other step is
applied through the target.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.targets import Capabilities
from consumers.planning.pipeline import (
    AutoStrategy,
    BlueGreenStrategy,
    CanaryStep,
    CanaryStrategy,
    Environment,
    RollingStrategy,
    default_canary_steps,
)
from events.errors import DomainRefusal

PlanStepKind = Literal[
    "rolling",  # target: replace instances, `batch_size` at a time
    "preview",  # target: start the new colour beside the active one
    "switch",  # target: all traffic to the new colour
    "scale_down",  # target: stop everything but the new version
    "set_weight",  # target: `weight`% to the canary
    "promote",  # target: the canary becomes stable at 100%
    "pause",  # execution: wait `duration_s`, or until promoted when None
    "analysis",  # execution: wait for verification's verdict
]
#: the step kinds execution leaves to itself and verification; the rest go to the target
CONTROL_STEPS = frozenset({"pause", "analysis"})


class PlanStep(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: PlanStepKind
    weight: int | None = Field(default=None, ge=0, le=100, description="set_weight")
    batch_size: int | None = Field(default=None, ge=1, description="rolling")
    max_unavailable: int | None = Field(default=None, ge=0, description="rolling")
    duration_s: int | None = Field(default=None, ge=0, description="pause; None: until promoted")

    @property
    def applies_to_target(self) -> bool:
        return self.kind not in CONTROL_STEPS

    def __str__(self) -> str:
        if self.kind == "set_weight":
            return f"{self.weight}%"
        if self.kind == "pause":
            return f"pause {self.duration_s}s" if self.duration_s is not None else "pause until promoted"
        if self.kind == "rolling":
            return f"rolling (batch {self.batch_size}, max unavailable {self.max_unavailable})"
        return self.kind


class StrategyPlan(BaseModel):
    """The concrete steps of one deployment, in order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Literal["rolling", "blue_green", "canary"]
    replicas: int = Field(ge=1)
    steps: tuple[PlanStep, ...]

    def __str__(self) -> str:
        return " -> ".join(str(step) for step in self.steps)


class StrategyNotSupported(DomainRefusal):
    """The configured strategy needs something the environment's target cannot do."""


def select_strategy(env: Environment, capabilities: Capabilities) -> tuple[StrategyPlan, str]:
    """The plan for ``env`` on a target with ``capabilities``, and why it was chosen.

    ``auto`` picks canary where the target can split traffic and the analysis has
    metrics, blue-green where it can run two colours, rolling otherwise. An explicit
    strategy the target cannot carry out raises ``StrategyNotSupported``.
    """
    strategy = env.strategy
    target = f"target {env.target.type!r}"
    if isinstance(strategy, RollingStrategy):
        plan = rolling_plan(strategy)
        return plan, f"rolling, as configured: {plan}"
    if isinstance(strategy, BlueGreenStrategy):
        if not capabilities.two_colours:
            raise StrategyNotSupported(f"blue_green needs a target that can run two colours; {target} cannot")
        plan = blue_green_plan(strategy)
        return plan, f"blue_green, as configured: {plan}"
    if isinstance(strategy, CanaryStrategy):
        if not capabilities.traffic_split:
            raise StrategyNotSupported(f"canary needs a target that can split traffic; {target} cannot")
        plan = canary_plan(strategy.replicas, strategy.steps)
        return plan, f"canary, as configured: {plan}"
    return _auto(strategy, env, capabilities, target)


def _auto(
    strategy: AutoStrategy, env: Environment, capabilities: Capabilities, target: str
) -> tuple[StrategyPlan, str]:
    metrics = len(env.analysis.metrics) + len(env.analysis.queries) + len(env.analysis.cloudwatch_queries)
    if capabilities.traffic_split and metrics:
        plan = canary_plan(strategy.replicas, default_canary_steps())
        why = f"{target} can split traffic and the analysis has {metrics} metric check(s)"
        return plan, f"canary (auto: {why}): {plan}"
    if capabilities.two_colours:
        plan = blue_green_plan(BlueGreenStrategy(replicas=strategy.replicas))
        if capabilities.traffic_split:
            why = f"{target} can split traffic but the analysis has no metrics; it can run two colours"
        else:
            why = f"{target} can run two colours but not split traffic"
        return plan, f"blue_green (auto: {why}): {plan}"
    plan = rolling_plan(RollingStrategy(replicas=strategy.replicas))
    if capabilities.traffic_split:
        why = f"{target} can split traffic but the analysis has no metrics, and it cannot run two colours"
    else:
        why = f"{target} can neither split traffic nor run two colours"
    return plan, f"rolling (auto: {why}): {plan}"


def rolling_plan(strategy: RollingStrategy) -> StrategyPlan:
    """Roll, then analyse the result."""
    roll = PlanStep(kind="rolling", batch_size=strategy.batch_size, max_unavailable=strategy.max_unavailable)
    return StrategyPlan(
        strategy="rolling", replicas=strategy.replicas, steps=(roll, PlanStep(kind="analysis"))
    )


def blue_green_plan(strategy: BlueGreenStrategy) -> StrategyPlan:
    """Preview (analysed if asked), switch, analyse, keep the old colour for the
    scale-down delay, then stop it."""
    steps = [PlanStep(kind="preview")]
    if strategy.preview_analysis:
        steps.append(PlanStep(kind="analysis"))
    steps += [PlanStep(kind="switch"), PlanStep(kind="analysis")]
    if strategy.scale_down_delay_s:
        steps.append(PlanStep(kind="pause", duration_s=strategy.scale_down_delay_s))
    steps.append(PlanStep(kind="scale_down"))
    return StrategyPlan(strategy="blue_green", replicas=strategy.replicas, steps=tuple(steps))


def canary_plan(replicas: int, configured: list[CanaryStep]) -> StrategyPlan:
    """The configured steps; ``set_weight: 100`` is the promotion, added if missing."""
    steps: list[PlanStep] = []
    for step in configured:
        if step.set_weight == 100:
            steps.append(PlanStep(kind="promote"))
        elif step.set_weight is not None:
            steps.append(PlanStep(kind="set_weight", weight=step.set_weight))
        elif step.pause is not None:
            steps.append(PlanStep(kind="pause", duration_s=step.pause.duration_s))
        else:
            steps.append(PlanStep(kind="analysis"))
    if not steps or steps[-1].kind != "promote":
        steps.append(PlanStep(kind="promote"))
    return StrategyPlan(strategy="canary", replicas=replicas, steps=tuple(steps))
