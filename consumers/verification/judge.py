"""The statistical judge: canary against baseline, metric by metric, then one score.

After Kayenta's ``NetflixACAJudge``: each metric's canary samples are compared with
the baseline's by a Mann-Whitney U test (``scipy.stats.mannwhitneyu``; one-sided
when only one direction of change is bad) and an effect size, the ratio of the
canary's mean (or median) to the baseline's. A metric is

- ``High`` / ``Low``: the difference is significant at the metric's confidence
  level, in a direction that is bad, and the ratio lies beyond the tolerated effect
  (``max_ratio_increase`` / ``min_ratio_decrease``);
- ``Pass``: no significant difference, a change in the harmless direction, or a
  significant one within the tolerance;
- ``NoData``: a side is missing, empty, has fewer than ``min_samples`` usable
  samples, or has NaN under ``nan_strategy="reject"``;
- ``Error``: the samples could not be fetched (``MetricData.error``) or tested.

A sample is one value per interval (the error rate of one minute, the p99 latency of
one minute...), as Kayenta's metric series are.

The score is Kayenta's weighted sum: per group the share of its metrics that pass,
overall ``sum(weight * group score) / sum(weight)``, from 0 to 100. **NoData and
Error count as not passing** (Kayenta drops them from the group instead): a metric
without data can never raise the score. The verdict:

1. a ``critical`` metric classified High or Low -> ``fail``, whatever the score;
2. score >= ``pass_threshold`` -> ``pass``, unless a critical metric is NoData or
   Error, which holds it at ``marginal``;
3. score < ``marginal_threshold`` -> ``fail`` when the metrics that have data fail on
   their own (the score counting NoData and Error as passing is below the marginal
   threshold too); when only missing data pulls it down -> ``marginal``: the absence
   of data never promotes and never rolls back on its own, it asks a person;
4. otherwise ``marginal`` (inconclusive: pause and ask a person; never promote).

Pure: no I/O, no clock, no randomness. Results are frozen pydantic models whose
``model_dump(mode="json")`` can be recorded in an event as it is.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from events.verification import Measurement, Outcome

Direction = Literal["increase", "decrease", "either"]
NanStrategy = Literal["remove", "replace", "reject"]
EffectMeasure = Literal["mean", "median"]
Classification = Literal["Pass", "High", "Low", "NoData", "Error"]
Verdict = Literal["pass", "marginal", "fail"]

# Defaults, in one place.
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_SAMPLES = 10
DEFAULT_PASS_THRESHOLD = 95.0
DEFAULT_MARGINAL_THRESHOLD = 75.0
DEFAULT_GROUP = "default"
#: above this many pairwise differences, the Hodges-Lehmann estimate is taken over
#: evenly spaced quantiles of each side instead of every sample (memory stays bounded)
MAX_PAIRS = 4_000_000
_QUANTILES_PER_SIDE = 2_000

_OUTCOME: dict[Classification, Outcome] = {
    "Pass": "Successful",
    "High": "Failed",
    "Low": "Failed",
    "NoData": "Inconclusive",
    "Error": "Error",
}
_VERDICT_OUTCOME: dict[Verdict, Outcome] = {
    "pass": "Successful",
    "marginal": "Inconclusive",
    "fail": "Failed",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- configuration ---------------------------------------------------------------


class MetricConfig(_Frozen):
    """How one metric is judged.

    ``direction`` names the change that is bad: ``increase`` (latency, errors),
    ``decrease`` (throughput, success rate) or ``either``. ``confidence`` is the
    test's confidence level (alpha = 1 - confidence). A significant change counts
    only beyond the effect-size tolerance: canary/baseline ratio above
    ``max_ratio_increase`` or below ``min_ratio_decrease`` (1.0: any significant
    change counts). ``effect`` picks the centre the ratio is taken of.

    ``nan_strategy`` (NaN and +/-inf alike, they are never a measurement):
    ``remove`` drops them (the rest must still reach ``min_samples``), ``replace``
    reads them as 0.0 (for counts where no data means none happened), ``reject``
    makes the metric NoData.
    """

    name: str = Field(min_length=1)
    direction: Direction = "increase"
    confidence: float = Field(default=DEFAULT_CONFIDENCE, gt=0.5, lt=1.0)
    max_ratio_increase: float = Field(default=1.0, ge=1.0)
    min_ratio_decrease: float = Field(default=1.0, gt=0.0, le=1.0)
    effect: EffectMeasure = "mean"
    critical: bool = False
    group: str = Field(default=DEFAULT_GROUP, min_length=1)
    nan_strategy: NanStrategy = "remove"
    min_samples: int = Field(default=DEFAULT_MIN_SAMPLES, ge=3)

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence


class JudgeConfig(_Frozen):
    """The metrics to judge, the weight of each group, and the score thresholds.

    Without ``group_weights`` every group weighs the same; with them, every group a
    metric names must have a weight (no silent default).
    """

    metrics: tuple[MetricConfig, ...] = Field(min_length=1)
    group_weights: dict[str, float] = Field(default_factory=dict)
    pass_threshold: float = Field(default=DEFAULT_PASS_THRESHOLD, ge=0, le=100)
    marginal_threshold: float = Field(default=DEFAULT_MARGINAL_THRESHOLD, ge=0, le=100)

    @model_validator(mode="after")
    def _consistent(self) -> JudgeConfig:
        names = [m.name for m in self.metrics]
        if len(names) != len(set(names)):
            raise ValueError(f"each metric may be configured once: {names}")
        if self.marginal_threshold > self.pass_threshold:
            raise ValueError(
                f"marginal_threshold {self.marginal_threshold} is above pass_threshold {self.pass_threshold}"
            )
        if any(w <= 0 for w in self.group_weights.values()):
            raise ValueError(f"group weights must be positive: {self.group_weights}")
        if self.group_weights:
            missing = sorted({m.group for m in self.metrics} - set(self.group_weights))
            if missing:
                raise ValueError(f"groups without a weight: {missing}")
        return self

    def weight(self, group: str) -> float:
        return self.group_weights.get(group, 1.0) if self.group_weights else 1.0


# --- input -----------------------------------------------------------------------


#: one value per interval: a list, a tuple or a one-dimensional numpy array
Samples = Sequence[float] | np.ndarray


@dataclass(frozen=True, slots=True)
class MetricData:
    """One metric's samples (one value per interval) for the canary and the
    baseline; ``error`` when they could not be fetched (the metric is then Error)."""

    canary: Samples = field(default_factory=tuple)
    baseline: Samples = field(default_factory=tuple)
    error: str | None = None


# --- results ---------------------------------------------------------------------


class SampleStats(_Frozen):
    """What one side's samples were: how many were used, how many dropped as NaN/inf."""

    count: int
    dropped: int = 0
    mean: float | None = None
    median: float | None = None


class MetricResult(_Frozen):
    """One metric's classification with the figures behind it.

    ``p_value`` is the Mann-Whitney test's (one-sided for ``increase`` /
    ``decrease``); ``effect_size`` the canary/baseline ratio of ``effect`` (None
    when the baseline's centre is not positive: significance alone decides then);
    ``shift`` the Hodges-Lehmann estimate of canary - baseline (the median of all
    pairwise differences) with its confidence interval ``shift_low`` ..
    ``shift_high`` at the metric's confidence level.
    """

    name: str
    classification: Classification
    reason: str
    group: str
    critical: bool
    direction: Direction
    confidence: float
    canary: SampleStats
    baseline: SampleStats
    p_value: float | None = None
    effect_size: float | None = None
    shift: float | None = None
    shift_low: float | None = None
    shift_high: float | None = None

    @property
    def passed(self) -> bool:
        return self.classification == "Pass"

    @property
    def outcome(self) -> Outcome:
        """As a measurement: Pass -> Successful, High/Low -> Failed, NoData ->
        Inconclusive, Error -> Error."""
        return _OUTCOME[self.classification]

    def measurement(self) -> Measurement:
        """This result as a ``Measurement`` for a verification event: value and
        baseline are the two sides' means, every figure is in ``detail["judge"]``."""
        return Measurement(
            metric=self.name,
            outcome=self.outcome,
            value=self.canary.mean,
            baseline=self.baseline.mean,
            detail={"judge": self.model_dump(mode="json")},
            error=self.reason if self.classification == "Error" else None,
        )


class GroupScore(_Frozen):
    """A group's score: ``passed / total * 100`` (NoData and Error count in total)."""

    name: str
    weight: float
    score: float
    passed: int
    total: int
    classifications: dict[str, int]


class JudgeResult(_Frozen):
    """The verdict over every metric, with the score, the groups and each metric."""

    verdict: Verdict
    score: float
    reason: str
    pass_threshold: float
    marginal_threshold: float
    groups: tuple[GroupScore, ...]
    metrics: tuple[MetricResult, ...]

    @property
    def outcome(self) -> Outcome:
        """As an analysis outcome: pass -> Successful, marginal -> Inconclusive,
        fail -> Failed."""
        return _VERDICT_OUTCOME[self.verdict]

    def measurements(self) -> list[Measurement]:
        return [m.measurement() for m in self.metrics]


# --- one metric ------------------------------------------------------------------


def _clean(samples: Samples, strategy: NanStrategy) -> tuple[np.ndarray, int, bool]:
    """``(usable samples, how many were not finite, rejected)``."""
    values = np.asarray(samples, dtype=float).ravel()
    finite = np.isfinite(values)
    bad = int(values.size - np.count_nonzero(finite))
    if bad == 0:
        return values, 0, False
    if strategy == "reject":
        return values[finite], bad, True
    if strategy == "replace":
        return np.where(finite, values, 0.0), bad, False
    return values[finite], bad, False


def _stats(values: np.ndarray, dropped: int) -> SampleStats:
    if values.size == 0:
        return SampleStats(count=0, dropped=dropped)
    return SampleStats(
        count=int(values.size),
        dropped=dropped,
        mean=float(np.mean(values)),
        median=float(np.median(values)),
    )


def _reduced(sorted_values: np.ndarray, limit: int) -> np.ndarray:
    if sorted_values.size <= limit:
        return sorted_values
    return np.quantile(sorted_values, np.linspace(0.0, 1.0, limit))


def hodges_lehmann(canary: np.ndarray, baseline: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """``(shift, low, high)``: the median of all pairwise differences canary -
    baseline and its distribution-free confidence interval (the order statistics of
    the differences at the normal approximation of U's critical value)."""
    a, b = np.sort(canary), np.sort(baseline)
    if a.size * b.size > MAX_PAIRS:
        a, b = _reduced(a, _QUANTILES_PER_SIDE), _reduced(b, _QUANTILES_PER_SIDE)
    diffs = np.sort((a[:, None] - b[None, :]).ravel())
    n, m, pairs = a.size, b.size, diffs.size
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    # Hollander & Wolfe: the C-th smallest and the C-th largest difference (1-based)
    c = math.floor(pairs / 2.0 - z * math.sqrt(n * m * (n + m + 1) / 12.0))
    c = min(max(c, 1), (pairs + 1) // 2)
    return float(np.median(diffs)), float(diffs[c - 1]), float(diffs[pairs - c])


def _ratio(canary: float, baseline: float) -> float | None:
    if baseline <= 0 or canary < 0:
        return None
    return canary / baseline


def classify(config: MetricConfig, data: MetricData | None) -> MetricResult:
    """Classify one metric: Pass, High, Low, NoData or Error, with the reason."""

    def result(
        classification: Classification,
        reason: str,
        canary: SampleStats,
        baseline: SampleStats,
        **figures: float | None,
    ) -> MetricResult:
        return MetricResult(
            name=config.name,
            classification=classification,
            reason=reason,
            group=config.group,
            critical=config.critical,
            direction=config.direction,
            confidence=config.confidence,
            canary=canary,
            baseline=baseline,
            **figures,
        )

    none = SampleStats(count=0)
    if data is None:
        return result("NoData", "no samples were given for this metric", none, none)
    if data.error is not None:
        return result("Error", data.error, none, none)
    canary, canary_bad, canary_rejected = _clean(data.canary, config.nan_strategy)
    baseline, baseline_bad, baseline_rejected = _clean(data.baseline, config.nan_strategy)
    c_stats, b_stats = _stats(canary, canary_bad), _stats(baseline, baseline_bad)
    if canary_rejected or baseline_rejected:
        sides = [s for s, bad in (("canary", canary_rejected), ("baseline", baseline_rejected)) if bad]
        return result("NoData", f"NaN or infinite samples ({', '.join(sides)}), rejected", c_stats, b_stats)
    short = [
        f"{side} has {n} usable samples" + (f" ({bad} NaN/inf dropped)" if bad else "")
        for side, n, bad in (
            ("canary", canary.size, canary_bad),
            ("baseline", baseline.size, baseline_bad),
        )
        if n < config.min_samples
    ]
    if short:
        return result("NoData", f"{'; '.join(short)}, {config.min_samples} needed", c_stats, b_stats)

    centre = np.mean if config.effect == "mean" else np.median
    ratio = _ratio(float(centre(canary)), float(centre(baseline)))
    if np.all(canary == canary[0]) and np.all(baseline == canary[0]):
        return result(
            "Pass", f"every sample is {canary[0]:g}", c_stats, b_stats, p_value=1.0, effect_size=ratio
        )
    alternative = {"increase": "greater", "decrease": "less", "either": "two-sided"}[config.direction]
    try:
        from scipy import stats  # imported here: a second and more, on every CLI start otherwise

        test = stats.mannwhitneyu(canary, baseline, alternative=alternative)
        p = float(test.pvalue)
        shift, low, high = hodges_lehmann(canary, baseline, config.confidence)
    except (ValueError, FloatingPointError) as exc:
        return result("Error", f"the Mann-Whitney test failed: {exc}", c_stats, b_stats)
    if math.isnan(p):
        return result("Error", "the Mann-Whitney test gave no p-value", c_stats, b_stats)
    figures: dict[str, float | None] = {
        "p_value": p,
        "effect_size": ratio,
        "shift": shift,
        "shift_low": low,
        "shift_high": high,
    }
    classification, reason = _judge_difference(config, p, ratio, shift, c_stats, b_stats)
    return result(classification, reason, c_stats, b_stats, **figures)


def _judge_difference(
    config: MetricConfig,
    p: float,
    ratio: float | None,
    shift: float,
    canary: SampleStats,
    baseline: SampleStats,
) -> tuple[Classification, str]:
    alpha = config.alpha
    if p >= alpha:
        return "Pass", f"no significant difference (p={p:.3g} >= {alpha:.3g})"
    # the direction of a significant difference: the shift, else (ties) the means
    higher = shift > 0 or (shift == 0 and (canary.mean or 0.0) > (baseline.mean or 0.0))
    shown = "undefined (baseline not positive)" if ratio is None else f"x{ratio:.3g}"
    if higher:
        if config.direction == "decrease":
            return "Pass", f"increased ({shown}); only a decrease is bad"
        if ratio is not None and ratio <= config.max_ratio_increase:
            return "Pass", (
                f"significant increase (p={p:.3g}) of {shown} within the tolerance "
                f"x{config.max_ratio_increase:g}"
            )
        return (
            "High",
            f"increased {shown} (p={p:.3g} < {alpha:.3g}, tolerance x{config.max_ratio_increase:g})",
        )
    if config.direction == "increase":
        return "Pass", f"decreased ({shown}); only an increase is bad"
    if ratio is not None and ratio >= config.min_ratio_decrease:
        return "Pass", (
            f"significant decrease (p={p:.3g}) of {shown} within the tolerance x{config.min_ratio_decrease:g}"
        )
    return "Low", f"decreased {shown} (p={p:.3g} < {alpha:.3g}, tolerance x{config.min_ratio_decrease:g})"


# --- the score and the verdict ---------------------------------------------------


def _group_scores(config: JudgeConfig, results: Sequence[MetricResult]) -> tuple[GroupScore, ...]:
    groups: dict[str, list[MetricResult]] = {}
    for r in results:
        groups.setdefault(r.group, []).append(r)
    return tuple(
        GroupScore(
            name=name,
            weight=config.weight(name),
            score=100.0 * sum(r.passed for r in members) / len(members),
            passed=sum(r.passed for r in members),
            total=len(members),
            classifications=dict(Counter(r.classification for r in members)),
        )
        for name, members in groups.items()
    )


def _weighted(groups: Sequence[GroupScore], score_of: Mapping[str, float]) -> float:
    total = sum(g.weight for g in groups)
    return round(sum(g.weight * score_of[g.name] for g in groups) / total, 6)


def score_of(config: JudgeConfig, results: Sequence[MetricResult]) -> tuple[float, tuple[GroupScore, ...]]:
    """The overall score (0-100) and each group's, NoData and Error counting as not
    passing."""
    groups = _group_scores(config, results)
    return _weighted(groups, {g.name: g.score for g in groups}), groups


def _optimistic_score(config: JudgeConfig, results: Sequence[MetricResult]) -> float:
    """The score if every NoData and Error metric had passed: what the data shows."""
    as_passed = [
        r.model_copy(update={"classification": "Pass"}) if r.classification in ("NoData", "Error") else r
        for r in results
    ]
    return score_of(config, as_passed)[0]


def judge(config: JudgeConfig, data: Mapping[str, MetricData]) -> JudgeResult:
    """Judge every configured metric of ``data`` (a metric without an entry is
    NoData) and score them; samples of a metric that is not configured are refused
    (``ValueError``), as they would otherwise be silently ignored."""
    unknown = sorted(set(data) - {m.name for m in config.metrics})
    if unknown:
        raise ValueError(f"samples for metrics that are not configured: {unknown}")
    results = tuple(classify(m, data.get(m.name)) for m in config.metrics)
    score, groups = score_of(config, results)
    verdict, reason = _verdict(config, results, score)
    return JudgeResult(
        verdict=verdict,
        score=score,
        reason=reason,
        pass_threshold=config.pass_threshold,
        marginal_threshold=config.marginal_threshold,
        groups=groups,
        metrics=results,
    )


def _names(results: Sequence[MetricResult]) -> str:
    return ", ".join(f"{r.name} {r.classification}" for r in results)


def _verdict(config: JudgeConfig, results: Sequence[MetricResult], score: float) -> tuple[Verdict, str]:
    critical_bad = [r for r in results if r.critical and r.classification in ("High", "Low")]
    if critical_bad:
        return "fail", f"critical metric failed: {_names(critical_bad)} (score {score:g})"
    not_passing = [r for r in results if not r.passed]
    missing_critical = [r for r in results if r.critical and r.classification in ("NoData", "Error")]
    if score >= config.pass_threshold:
        if missing_critical:
            return "marginal", (
                f"score {score:g} >= {config.pass_threshold:g} but a critical metric has no verdict: "
                f"{_names(missing_critical)}"
            )
        tail = f"; not passing: {_names(not_passing)}" if not_passing else ""
        return "pass", f"score {score:g} >= {config.pass_threshold:g}{tail}"
    if score < config.marginal_threshold:
        if _optimistic_score(config, results) < config.marginal_threshold:
            return "fail", f"score {score:g} < {config.marginal_threshold:g}: {_names(not_passing)}"
        return "marginal", (
            f"score {score:g} < {config.marginal_threshold:g} for lack of data: {_names(not_passing)}"
        )
    return "marginal", (
        f"score {score:g} between {config.marginal_threshold:g} and {config.pass_threshold:g}: "
        f"{_names(not_passing)}"
    )


__all__ = [
    "Classification",
    "Direction",
    "GroupScore",
    "JudgeConfig",
    "JudgeResult",
    "MetricConfig",
    "MetricData",
    "MetricResult",
    "NanStrategy",
    "SampleStats",
    "Samples",
    "Verdict",
    "classify",
    "hodges_lehmann",
    "judge",
    "score_of",
]
