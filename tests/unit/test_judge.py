"""The statistical judge: per-metric classification, the score and the verdict, with
known answers. Samples are one value per interval, drawn from seeded generators."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from consumers.verification.judge import (
    Classification,
    JudgeConfig,
    JudgeResult,
    MetricConfig,
    MetricData,
    MetricResult,
    Verdict,
    classify,
    hodges_lehmann,
    judge,
)

INTERVALS = 30
SEEDS = range(5)


def p99_latency(rng: np.random.Generator, factor: float = 1.0, n: int = INTERVALS) -> list[float]:
    """Per-interval p99 latency in seconds: ~300 ms with 8% interval-to-interval noise."""
    return list(rng.lognormal(math.log(0.3 * factor), 0.08, n))


def error_rate(
    rng: np.random.Generator, factor: float = 1.0, n: int = INTERVALS, requests: int = 3000
) -> list[float]:
    """Per-interval error rate: binomial errors out of ``requests`` at 0.5% x factor."""
    return list(rng.binomial(requests, 0.005 * factor, n) / requests)


Gen = Callable[[np.random.Generator], list[float]]

LATENCY = MetricConfig(name="latency_p99", max_ratio_increase=1.1, min_ratio_decrease=0.9)
ERRORS = MetricConfig(name="error_rate", max_ratio_increase=1.2)


def one_metric(config: MetricConfig, canary: Gen, baseline: Gen, seed: int) -> MetricResult:
    rng = np.random.default_rng(seed)
    return classify(config, MetricData(canary=canary(rng), baseline=baseline(rng)))


# --- one metric: known answers ---------------------------------------------------


@pytest.mark.parametrize(
    ("case", "config", "canary", "baseline", "expected"),
    [
        ("same latency", LATENCY, p99_latency, p99_latency, "Pass"),
        ("same error rate", ERRORS, error_rate, error_rate, "Pass"),
        ("2x error rate", ERRORS, lambda r: error_rate(r, 2.0), error_rate, "High"),
        ("3x error rate", ERRORS, lambda r: error_rate(r, 3.0), error_rate, "High"),
        ("+25% p99 latency", LATENCY, lambda r: p99_latency(r, 1.25), p99_latency, "High"),
        ("+50% p99 latency", LATENCY, lambda r: p99_latency(r, 1.5), p99_latency, "High"),
        ("-25% latency, increase is bad", LATENCY, lambda r: p99_latency(r, 0.75), p99_latency, "Pass"),
        ("halved errors, increase is bad", ERRORS, lambda r: error_rate(r, 0.5), error_rate, "Pass"),
        (
            "-25% throughput, decrease is bad",
            LATENCY.model_copy(update={"direction": "decrease"}),
            lambda r: p99_latency(r, 0.75),
            p99_latency,
            "Low",
        ),
        (
            "+25% throughput, decrease is bad",
            LATENCY.model_copy(update={"direction": "decrease"}),
            lambda r: p99_latency(r, 1.25),
            p99_latency,
            "Pass",
        ),
        (
            "either: up",
            LATENCY.model_copy(update={"direction": "either"}),
            lambda r: p99_latency(r, 1.3),
            p99_latency,
            "High",
        ),
        (
            "either: down",
            LATENCY.model_copy(update={"direction": "either"}),
            lambda r: p99_latency(r, 0.7),
            p99_latency,
            "Low",
        ),
    ],
)
@pytest.mark.parametrize("seed", SEEDS)
def test_known_differences_are_classified(
    case: str, config: MetricConfig, canary: Gen, baseline: Gen, expected: Classification, seed: int
) -> None:
    result = one_metric(config, canary, baseline, seed)
    assert result.classification == expected, (case, result.reason)
    assert result.canary.count == result.baseline.count == INTERVALS


def test_a_significant_change_within_the_tolerance_passes() -> None:
    # +5% on 200 intervals is significant, but the tolerance allows +10%
    result = one_metric(
        LATENCY, lambda r: p99_latency(r, 1.05, n=200), lambda r: p99_latency(r, n=200), seed=1
    )
    assert result.p_value is not None and result.p_value < 0.05
    assert result.classification == "Pass"
    assert "within the tolerance" in result.reason
    strict = one_metric(
        LATENCY.model_copy(update={"max_ratio_increase": 1.0}),
        lambda r: p99_latency(r, 1.05, n=200),
        lambda r: p99_latency(r, n=200),
        seed=1,
    )
    assert strict.classification == "High"


def test_p_value_and_shift_have_known_values() -> None:
    # disjoint samples of 5: the exact one-sided p-value is 1 / C(10, 5) = 1/252
    config = MetricConfig(name="m", min_samples=5)
    result = classify(config, MetricData(canary=[6, 7, 8, 9, 10], baseline=[1, 2, 3, 4, 5]))
    assert result.classification == "High"
    assert result.p_value == pytest.approx(1 / 252)
    assert result.shift == 5.0
    assert result.effect_size == pytest.approx(8 / 3)


def test_hodges_lehmann_recovers_a_constant_shift() -> None:
    rng = np.random.default_rng(7)
    baseline = rng.normal(10, 1, 40)
    shift, low, high = hodges_lehmann(baseline + 2.0, baseline, 0.95)
    assert shift == pytest.approx(2.0)
    assert low <= 2.0 <= high
    assert high - low < 1.5


def test_every_sample_equal_passes() -> None:
    result = classify(ERRORS, MetricData(canary=[0.0] * 20, baseline=[0.0] * 20))
    assert result.classification == "Pass"
    assert result.reason == "every sample is 0"


def test_errors_on_a_baseline_without_errors_are_high_without_a_ratio() -> None:
    result = classify(ERRORS, MetricData(canary=[0.01] * 15 + [0.02] * 5, baseline=[0.0] * 20))
    assert result.classification == "High"
    assert result.effect_size is None
    assert "baseline not positive" in result.reason


# --- no data is never a pass -----------------------------------------------------

NAN = math.nan
GOOD = [0.3 + 0.01 * i for i in range(20)]


@pytest.mark.parametrize(
    ("case", "config", "data", "expected"),
    [
        ("missing", LATENCY, None, "NoData"),
        ("both empty", LATENCY, MetricData(), "NoData"),
        ("canary empty", LATENCY, MetricData(canary=[], baseline=GOOD), "NoData"),
        ("baseline empty", LATENCY, MetricData(canary=GOOD, baseline=[]), "NoData"),
        ("too few", LATENCY, MetricData(canary=GOOD[:9], baseline=GOOD), "NoData"),
        ("all NaN", LATENCY, MetricData(canary=[NAN] * 20, baseline=[NAN] * 20), "NoData"),
        (
            "NaN removed below minimum",
            LATENCY,
            MetricData(canary=GOOD[:9] + [NAN] * 5, baseline=GOOD),
            "NoData",
        ),
        ("inf removed", LATENCY, MetricData(canary=[math.inf] * 20, baseline=GOOD), "NoData"),
        (
            "one NaN rejected",
            LATENCY.model_copy(update={"nan_strategy": "reject"}),
            MetricData(canary=[*GOOD, NAN], baseline=GOOD),
            "NoData",
        ),
        ("adapter error", LATENCY, MetricData(error="prometheus: connection refused"), "Error"),
    ],
)
def test_missing_data_is_never_a_pass(
    case: str, config: MetricConfig, data: MetricData | None, expected: Classification
) -> None:
    result = classify(config, data)
    assert result.classification == expected, case
    assert not result.passed
    assert result.outcome == ("Inconclusive" if expected == "NoData" else "Error")
    verdict = judge(JudgeConfig(metrics=(config,)), {} if data is None else {config.name: data})
    assert verdict.verdict != "pass"
    assert verdict.score == 0.0


def test_nan_removed_leaves_the_rest_judged() -> None:
    result = classify(LATENCY, MetricData(canary=[*GOOD, NAN, NAN], baseline=GOOD))
    assert result.classification == "Pass"
    assert (result.canary.count, result.canary.dropped) == (20, 2)


def test_nan_replaced_reads_as_zero() -> None:
    config = ERRORS.model_copy(update={"nan_strategy": "replace"})
    result = classify(config, MetricData(canary=[NAN] * 20, baseline=[0.0] * 20))
    assert result.classification == "Pass"
    assert (result.canary.count, result.canary.dropped, result.canary.mean) == (20, 20, 0.0)


def test_missing_data_alone_is_marginal_not_fail() -> None:
    # two of three metrics without data: score 33 < 75, but nothing that was
    # measured failed, so a person decides
    config = JudgeConfig(metrics=(LATENCY, ERRORS, MetricConfig(name="cpu")))
    rng = np.random.default_rng(0)
    result = judge(config, {"latency_p99": MetricData(p99_latency(rng), p99_latency(rng))})
    assert result.score == pytest.approx(100 / 3, abs=1e-5)
    assert result.verdict == "marginal"
    assert "lack of data" in result.reason


def test_a_critical_metric_without_data_holds_a_pass_at_marginal() -> None:
    metrics = (*(MetricConfig(name=f"m{i}") for i in range(20)), MetricConfig(name="errors", critical=True))
    data = {f"m{i}": MetricData(GOOD, GOOD) for i in range(20)}
    result = judge(JudgeConfig(metrics=metrics), data)
    assert result.score == pytest.approx(2000 / 21, abs=1e-5)  # 95.2 >= 95
    assert result.verdict == "marginal"
    assert "critical metric has no verdict" in result.reason


# --- the score and the verdict ---------------------------------------------------

UP = [x * 2 for x in GOOD]  # High against GOOD


def scored(classes: Sequence[tuple[str, str, bool]], **config: object) -> JudgeResult:
    """Metrics named with their group and criticality; a name starting with ``bad``
    gets samples that are High, ``none`` gets none, every other one passes."""
    metrics = tuple(MetricConfig(name=n, group=g, critical=c) for n, g, c in classes)
    data = {
        n: MetricData(UP if n.startswith("bad") else GOOD, GOOD) for n, _, _ in classes if n[:4] != "none"
    }
    return judge(JudgeConfig(metrics=metrics, **config), data)  # type: ignore[arg-type]


def ok(n: int, group: str = "g") -> list[tuple[str, str, bool]]:
    return [(f"ok{i}{group}", group, False) for i in range(n)]


@pytest.mark.parametrize(
    ("case", "classes", "score", "verdict"),
    [
        ("all pass", ok(4), 100.0, "pass"),
        ("1 of 20 fails", [*ok(19), ("bad", "g", False)], 95.0, "pass"),
        ("1 of 4 fails", [*ok(3), ("bad", "g", False)], 75.0, "marginal"),
        ("1 of 5 fails", [*ok(4), ("bad", "g", False)], 80.0, "marginal"),
        ("1 of 10 fails", [*ok(9), ("bad", "g", False)], 90.0, "marginal"),
        ("2 of 4 fail", [*ok(2), ("bad1", "g", False), ("bad2", "g", False)], 50.0, "fail"),
        ("critical fails at 95", [*ok(19), ("bad", "g", True)], 95.0, "fail"),
        ("critical fails at 99", [*ok(99), ("bad", "g", True)], 99.0, "fail"),
        ("critical passes", [*ok(3), ("okc", "g", True)], 100.0, "pass"),
        # a missing metric cannot pass, but alone it does not make a fail either: the
        # measured ones must fail the score even if the missing one had passed
        ("1 fails, 1 missing of 4", [*ok(2), ("bad", "g", False), ("none", "g", False)], 50.0, "marginal"),
        ("1 fails, 1 missing of 3", [*ok(1), ("bad", "g", False), ("none", "g", False)], 100 / 3, "fail"),
    ],
)
def test_score_and_verdict(
    case: str, classes: list[tuple[str, str, bool]], score: float, verdict: Verdict
) -> None:
    result = scored(classes)
    assert result.score == pytest.approx(score, abs=1e-5), case
    assert result.verdict == verdict, (case, result.reason)


def test_group_weights_compute_as_specified() -> None:
    # latency (weight 3): 1 of 2 pass -> 50; errors (weight 1): 1 of 1 -> 100
    classes = [("ok_lat", "latency", False), ("bad_lat", "latency", False), ("ok_err", "errors", False)]
    result = scored(classes, group_weights={"latency": 3, "errors": 1})
    groups = {g.name: g for g in result.groups}
    assert (groups["latency"].score, groups["latency"].passed, groups["latency"].total) == (50.0, 1, 2)
    assert groups["latency"].classifications == {"Pass": 1, "High": 1}
    assert groups["errors"].score == 100.0
    assert result.score == pytest.approx((3 * 50 + 1 * 100) / 4)  # 62.5
    assert result.verdict == "fail"
    # without weights every group weighs the same: (50 + 100) / 2
    assert scored(classes).score == pytest.approx(75.0)


def test_thresholds_are_configurable() -> None:
    classes = [*ok(3), ("bad", "g", False)]
    assert scored(classes, pass_threshold=70, marginal_threshold=50).verdict == "pass"
    assert scored(classes, pass_threshold=100, marginal_threshold=80).verdict == "fail"


@pytest.mark.parametrize(
    "config",
    [
        {"metrics": ()},
        {"metrics": (LATENCY, LATENCY)},
        {"metrics": (LATENCY,), "pass_threshold": 70, "marginal_threshold": 80},
        {"metrics": (LATENCY.model_copy(update={"group": "latency"}),), "group_weights": {"errors": 1}},
        {"metrics": (LATENCY,), "group_weights": {"default": 0}},
    ],
)
def test_invalid_configuration_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        JudgeConfig.model_validate(config)


@pytest.mark.parametrize(
    "metric",
    [
        {"name": "m", "confidence": 1.0},
        {"name": "m", "max_ratio_increase": 0.9},
        {"name": "m", "min_ratio_decrease": 1.1},
        {"name": "m", "min_samples": 2},
        {"name": "m", "direction": "up"},
        {"name": "m", "nan_strategy": "ignore"},
    ],
)
def test_invalid_metric_configuration_is_refused(metric: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MetricConfig.model_validate(metric)


def test_samples_of_an_unconfigured_metric_are_refused() -> None:
    with pytest.raises(ValueError, match="not configured"):
        judge(JudgeConfig(metrics=(LATENCY,)), {"latency_p50": MetricData(GOOD, GOOD)})


# --- results as data -------------------------------------------------------------


def analysis(seed: int) -> JudgeResult:
    rng = np.random.default_rng(seed)
    config = JudgeConfig(
        metrics=(
            ERRORS.model_copy(update={"critical": True, "group": "errors"}),
            LATENCY.model_copy(update={"group": "latency"}),
        ),
        group_weights={"errors": 60, "latency": 40},
    )
    data = {
        "error_rate": MetricData(error_rate(rng, 2.0), error_rate(rng)),
        "latency_p99": MetricData(p99_latency(rng), p99_latency(rng)),
    }
    return judge(config, data)


def test_results_are_deterministic() -> None:
    assert analysis(3).model_dump_json() == analysis(3).model_dump_json()
    assert analysis(3) == analysis(3)


def test_results_round_trip_through_json() -> None:
    result = analysis(3)
    raw = json.loads(json.dumps(result.model_dump(mode="json")))
    assert JudgeResult.model_validate(raw) == result
    assert result.verdict == "fail" and result.outcome == "Failed"


def test_results_become_measurements() -> None:
    result = analysis(3)
    measurements = {m.metric: m for m in result.measurements()}
    assert measurements["error_rate"].outcome == "Failed"
    assert measurements["latency_p99"].outcome == "Successful"
    judged = measurements["error_rate"].detail["judge"]
    assert judged["classification"] == "High"
    assert judged["p_value"] < 0.05
    assert measurements["error_rate"].value == pytest.approx(judged["canary"]["mean"])
    error = classify(LATENCY, MetricData(error="timeout")).measurement()
    assert (error.outcome, error.error) == ("Error", "timeout")
