#!/usr/bin/env python3
"""shiplog benchmark: how often the statistical judge is right, and how soon.

A plain script, not a pytest module (run it with ``scripts/bench-judge``; see
``tests/bench/README.md``, "The judge"). Nothing runs but Python: no database, no
broker.

It generates a suite of canary analyses — a canary and a baseline serving side by
side, one sample per one-minute interval — for services of varied traffic, error
rate and latency, with noise shared by both sides (time of day, a flaky dependency),
noise of each instance (host, neighbours) and of each interval (GC, the requests that
happened to arrive). Some canaries are healthy; the others regress by a known
effect: error rate x1.25, x1.5, x2, x3, or p99 latency +10%, +25%, +50% (a tail
regression: the median stays). Each analysis is judged three ways:

- **Flagger-style fixed thresholds** on the canary alone: each interval is a check
  (error rate < 1%, p99 < 500 ms); the 5th failed check rolls back.
- **fixed tolerance vs baseline**: one check over the window, canary mean error rate
  <= baseline x1.5 and mean p99 <= baseline x1.1 (what ``max_increase_pct`` does).
- **the judge** (``consumers.verification.judge``) in a Kayenta-like configuration:
  error rate and p99 critical, p50 beside p99, groups weighted 50/50, pass 95,
  marginal 75.

Figures: false rollbacks on healthy canaries, detection (rollback) per effect size,
and the intervals needed to decide: every method is run on the first 5, 10, 15,
20, 30, 45 and 60 intervals of each analysis, and the first count from which its
verdict is right at every later count is the time it needed.

Seeded and reproducible: analysis ``i`` draws from ``default_rng([seed, i])``,
whichever worker runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy import special  # noqa: E402

from consumers.verification.judge import JudgeConfig, MetricConfig, MetricData, judge  # noqa: E402
from tests.bench.common import machine_env, make_console  # noqa: E402

Kind = Literal["healthy", "errors", "latency"]
Decision = Literal["promote", "pause", "rollback"]

Z99 = 2.3263478740408408  # the standard normal's 99th percentile
PREFIXES = (5, 10, 15, 20, 30, 45, 60)
DEFAULT_WINDOW = 30
DEFAULT_ANALYSES = 2000
DEFAULT_SEED = 20261127
HEALTHY_SHARE = 0.4

# the population of services (drawn per analysis)
RPS = (10.0, 100.0)  # requests per second to each side, log-uniform
ERROR_RATE = (0.001, 0.005)  # baseline error rate, log-uniform
P99_S = (0.10, 0.35)  # baseline p99 latency, uniform
SIGMA = (0.45, 0.75)  # lognormal shape of request latency, uniform
# noise
DIURNAL = 0.3  # traffic swing over the day (+/-30%)
SHARED_LATENCY_SD = 0.05  # per interval, both sides (load, a dependency)
SHARED_ERROR_SD = 0.20  # per interval, both sides (a flaky dependency)
INSTANCE_LATENCY_SD = 0.03  # per side, the whole analysis (host, neighbours)
INSTANCE_ERROR_SD = 0.05
JITTER_LATENCY_SD = 0.03  # per side and interval (GC, noisy neighbour)

# Flagger-style checks
FLAGGER_MAX_ERROR_RATE = 0.01
FLAGGER_MAX_P99_S = 0.5
FLAGGER_THRESHOLD = 5  # failed checks before rollback
AIM_FALSE_ROLLBACKS = 0.01
AIM_DETECTION = 0.95

#: Kayenta-like: its judge ran at 98% confidence; the effect tolerances sit above
#: the instance-to-instance spread (chosen on seed 7, not on the default seed)
JUDGE = JudgeConfig(
    metrics=(
        MetricConfig(
            name="error_rate", max_ratio_increase=1.5, confidence=0.98, critical=True, group="errors"
        ),
        MetricConfig(
            name="latency_p99", max_ratio_increase=1.15, confidence=0.98, critical=True, group="latency"
        ),
        MetricConfig(name="latency_p50", max_ratio_increase=1.15, confidence=0.98, group="latency"),
    ),
    group_weights={"errors": 50, "latency": 50},
    pass_threshold=95,
    marginal_threshold=75,
)

# fixed tolerance vs baseline: the judge's own effect tolerances, without the test
TOLERANCE_ERROR = JUDGE.metrics[0].max_ratio_increase
TOLERANCE_P99 = JUDGE.metrics[1].max_ratio_increase

METHODS = ("flagger", "tolerance", "judge")
METHOD_TITLE = {
    "flagger": "Flagger-style fixed thresholds",
    "tolerance": "fixed tolerance vs baseline",
    "judge": "judge (Kayenta-like)",
}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    kind: Kind
    factor: float  # error-rate multiplier, or p99 multiplier

    @property
    def regression(self) -> bool:
        return self.kind != "healthy"


HEALTHY = Scenario("healthy", "healthy", 1.0)
REGRESSIONS = (
    Scenario("error rate x1.25", "errors", 1.25),
    Scenario("error rate x1.5", "errors", 1.5),
    Scenario("error rate x2", "errors", 2.0),
    Scenario("error rate x3", "errors", 3.0),
    Scenario("p99 latency +10%", "latency", 1.10),
    Scenario("p99 latency +25%", "latency", 1.25),
    Scenario("p99 latency +50%", "latency", 1.50),
)
SCENARIOS = (HEALTHY, *REGRESSIONS)
AIMED = {"error rate x2", "p99 latency +25%"}


def scenario_of(i: int, analyses: int) -> Scenario:
    """The first 40% are healthy, the rest cycle through the regressions."""
    healthy = round(analyses * HEALTHY_SHARE)
    return HEALTHY if i < healthy else REGRESSIONS[(i - healthy) % len(REGRESSIONS)]


# --- the simulation --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One side's samples, one per interval."""

    error_rate: np.ndarray
    p50: np.ndarray
    p99: np.ndarray


def _side(
    rng: np.random.Generator,
    requests: np.ndarray,
    error_p: np.ndarray,
    log_median: np.ndarray,
    sigma: float,
) -> Series:
    """One side over every interval: a binomial error count out of that interval's
    requests, and the p50 and p99 of as many lognormal request latencies. A sample
    quantile of ``n`` requests is their ``ceil(q n)``-th smallest, and the k-th
    smallest of ``n`` uniforms is Beta(k, n + 1 - k): drawing it and mapping it
    through the latency's quantile function gives the sample quantile's exact
    distribution without drawing each request (p50 and p99 are drawn independently;
    within one interval they are nearly so)."""
    errors = rng.binomial(requests, np.minimum(error_p, 1.0))

    def quantile(q: float) -> np.ndarray:
        k = np.ceil(q * requests)
        return np.exp(log_median + sigma * special.ndtri(rng.beta(k, requests + 1 - k)))

    return Series(error_rate=errors / requests, p50=quantile(0.5), p99=quantile(0.99))


def simulate(
    rng: np.random.Generator, scenario: Scenario, intervals: int
) -> tuple[Series, Series, dict[str, float]]:
    """(canary, baseline, the service drawn) for one analysis of ``intervals`` minutes."""
    rps = math.exp(rng.uniform(math.log(RPS[0]), math.log(RPS[1])))
    rate = math.exp(rng.uniform(math.log(ERROR_RATE[0]), math.log(ERROR_RATE[1])))
    p99 = rng.uniform(*P99_S)
    sigma = rng.uniform(*SIGMA)
    start = rng.uniform(0, 1440)  # the minute of the day the analysis starts
    t = np.arange(intervals)
    day = 1.0 + DIURNAL * np.sin(2 * np.pi * (start + t) / 1440.0)
    shared_latency = rng.normal(0.0, SHARED_LATENCY_SD, intervals)
    shared_error = rng.normal(0.0, SHARED_ERROR_SD, intervals)
    # busier hours are a little slower and fail a little more, on both sides
    log_median = math.log(p99) - Z99 * sigma + 0.15 * (day - 1.0) + shared_latency
    error_p = rate * (1.0 + 0.5 * (day - 1.0)) * np.exp(shared_error)

    def side(error_factor: float, sigma_side: float) -> Series:
        requests = np.maximum(rng.poisson(rps * 60.0 * day), 1)
        instance_latency = rng.normal(0.0, INSTANCE_LATENCY_SD)
        instance_error = math.exp(rng.normal(0.0, INSTANCE_ERROR_SD))
        jitter = rng.normal(0.0, JITTER_LATENCY_SD, intervals)
        # a tail regression keeps the median: only the shape (sigma_side) widens
        median = log_median + instance_latency + jitter
        return _side(rng, requests, error_p * instance_error * error_factor, median, sigma_side)

    baseline = side(1.0, sigma)
    error_factor = scenario.factor if scenario.kind == "errors" else 1.0
    canary_sigma = sigma + math.log(scenario.factor) / Z99 if scenario.kind == "latency" else sigma
    canary = side(error_factor, canary_sigma)
    service = {
        "rps": rps,
        "error_rate": rate,
        "p99_s": p99,
        "sigma": sigma,
        "errors_per_min": rate * rps * 60,
    }
    return canary, baseline, service


# --- the three methods -----------------------------------------------------------


def flagger(canary: Series, k: int) -> Decision:
    failed = (canary.error_rate[:k] >= FLAGGER_MAX_ERROR_RATE) | (canary.p99[:k] >= FLAGGER_MAX_P99_S)
    return "rollback" if int(failed.sum()) >= FLAGGER_THRESHOLD else "promote"


def tolerance(canary: Series, baseline: Series, k: int) -> Decision:
    errors_ok = canary.error_rate[:k].mean() <= baseline.error_rate[:k].mean() * TOLERANCE_ERROR
    p99_ok = canary.p99[:k].mean() <= baseline.p99[:k].mean() * TOLERANCE_P99
    return "promote" if errors_ok and p99_ok else "rollback"


_JUDGE_DECISION: dict[str, Decision] = {"pass": "promote", "marginal": "pause", "fail": "rollback"}


def judged(canary: Series, baseline: Series, k: int) -> Decision:
    result = judge(
        JUDGE,
        {
            "error_rate": MetricData(canary.error_rate[:k], baseline.error_rate[:k]),
            "latency_p99": MetricData(canary.p99[:k], baseline.p99[:k]),
            "latency_p50": MetricData(canary.p50[:k], baseline.p50[:k]),
        },
    )
    return _JUDGE_DECISION[result.verdict]


def run_one(task: tuple[int, int, int]) -> dict[str, Any]:
    """One analysis: its scenario, the service drawn, and each method's decision at
    every prefix of its intervals."""
    seed, i, analyses = task
    scenario = scenario_of(i, analyses)
    rng = np.random.default_rng([seed, i])
    canary, baseline, service = simulate(rng, scenario, max(PREFIXES))
    decisions = {
        "flagger": [flagger(canary, k) for k in PREFIXES],
        "tolerance": [tolerance(canary, baseline, k) for k in PREFIXES],
        "judge": [judged(canary, baseline, k) for k in PREFIXES],
    }
    return {"scenario": scenario.name, "service": service, "decisions": decisions}


# --- the figures -----------------------------------------------------------------


def correct(decision: Decision, regression: bool) -> bool:
    return decision == ("rollback" if regression else "promote")


def time_to_decide(decisions: Sequence[Decision], regression: bool) -> int | None:
    """The first prefix from which every decision is right; None if the last is wrong."""
    first: int | None = None
    for k, decision in zip(PREFIXES, decisions, strict=True):
        if correct(decision, regression):
            first = k if first is None else first
        else:
            first = None
    return first


def share(n: int, total: int) -> float:
    return n / total if total else math.nan


def summarise(results: Sequence[dict[str, Any]], window: int) -> dict[str, Any]:
    at = PREFIXES.index(window)
    figures: dict[str, Any] = {}
    for scenario in SCENARIOS:
        rows = [r for r in results if r["scenario"] == scenario.name]
        per: dict[str, Any] = {"n": len(rows)}
        for method in METHODS:
            decided = [r["decisions"][method][at] for r in rows]
            times = [time_to_decide(r["decisions"][method], scenario.regression) for r in rows]
            known = sorted(t for t in times if t is not None)
            per[method] = {
                "rollback": share(decided.count("rollback"), len(rows)),
                "pause": share(decided.count("pause"), len(rows)),
                "promote": share(decided.count("promote"), len(rows)),
                "decided_by_60": share(len(known), len(rows)),
                "median_intervals": float(np.median(known)) if known else None,
                "p90_intervals": float(np.quantile(known, 0.9, method="higher")) if known else None,
            }
        figures[scenario.name] = per
    return figures


def by_window(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The judge at every interval count: its false rollbacks and pauses on healthy
    canaries, its detection of each regression, and whether the aims hold there."""
    rows = []
    for at, k in enumerate(PREFIXES):
        row: dict[str, Any] = {"intervals": k}
        for scenario in SCENARIOS:
            decided = [r["decisions"]["judge"][at] for r in results if r["scenario"] == scenario.name]
            row[scenario.name] = {
                "rollback": share(decided.count("rollback"), len(decided)),
                "pause": share(decided.count("pause"), len(decided)),
            }
        row["aims_met"] = row["healthy"]["rollback"] <= AIM_FALSE_ROLLBACKS and all(
            row[name]["rollback"] >= AIM_DETECTION for name in AIMED
        )
        # the same tolerances without the test, for comparison
        row["tolerance"] = {
            name: share(
                sum(r["decisions"]["tolerance"][at] == "rollback" for r in results if r["scenario"] == name),
                sum(r["scenario"] == name for r in results),
            )
            for name in ("healthy", *sorted(AIMED))
        }
        rows.append(row)
    return rows


def by_traffic(results: Sequence[dict[str, Any]], window: int) -> list[dict[str, Any]]:
    """The judge's rollbacks by the baseline's expected errors per minute: what it can
    see depends on how many errors there are to count."""
    at = PREFIXES.index(window)
    buckets = ((0.0, 2.0), (2.0, 5.0), (5.0, 10.0), (10.0, math.inf))
    rows = []
    for low, high in buckets:
        row: dict[str, Any] = {"errors_per_min": f"{low:g}-{high:g}" if high < math.inf else f">= {low:g}"}
        for name in ("healthy", "error rate x1.5", "error rate x2", "error rate x3"):
            members = [
                r for r in results if r["scenario"] == name and low <= r["service"]["errors_per_min"] < high
            ]
            hits = sum(r["decisions"]["judge"][at] == "rollback" for r in members)
            row[name] = {"n": len(members), "rollback": share(hits, len(members))}
        rows.append(row)
    return rows


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a share: how far a figure from n analyses can be
    trusted."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def aims(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's aims for the judge, with every method's figure beside it."""
    wanted = [("healthy", f"false rollbacks <= {AIM_FALSE_ROLLBACKS:.0%}")]
    wanted += [(name, f"detection of {name} >= {AIM_DETECTION:.0%}") for name in sorted(AIMED)]
    out = []
    for name, aim in wanted:
        n = figures[name]["n"]
        value = figures[name]["judge"]["rollback"]
        met = value <= AIM_FALSE_ROLLBACKS if name == "healthy" else value >= AIM_DETECTION
        out.append(
            {
                "aim": aim,
                "n": n,
                "value": value,
                "ci95": wilson(round(value * n), n),
                "met": met,
                "others": {m: figures[name][m]["rollback"] for m in METHODS if m != "judge"},
            }
        )
    return out


# --- output ----------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def num(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def print_report(
    console: Any,
    figures: dict[str, Any],
    windows: list[dict[str, Any]],
    traffic: list[dict[str, Any]],
    goals: list[dict[str, Any]],
    window: int,
) -> None:
    accuracy = Table(
        title=f"Rollbacks after {window} intervals (1 min each): false on healthy, detection on the rest"
    )
    accuracy.add_column("scenario")
    accuracy.add_column("n", justify="right")
    accuracy.add_column("Flagger-style\nrollback", justify="right")
    accuracy.add_column("tolerance\nrollback", justify="right")
    accuracy.add_column("judge\nrollback", justify="right")
    accuracy.add_column("judge\npause", justify="right")
    accuracy.add_column("judge\npromote", justify="right")
    for scenario in SCENARIOS:
        f = figures[scenario.name]
        accuracy.add_row(
            scenario.name,
            str(f["n"]),
            pct(f["flagger"]["rollback"]),
            pct(f["tolerance"]["rollback"]),
            pct(f["judge"]["rollback"]),
            pct(f["judge"]["pause"]),
            pct(f["judge"]["promote"]),
        )
    console.print(accuracy)

    speed = Table(
        title="Intervals needed to decide rightly and stay right (checked at "
        + ", ".join(map(str, PREFIXES))
        + ")"
    )
    speed.add_column("scenario")
    for method in METHODS:
        speed.add_column(f"{METHOD_TITLE[method]}\nright by 60 / median / p90", justify="right")
    for scenario in SCENARIOS:
        f = figures[scenario.name]
        speed.add_row(
            scenario.name,
            *(
                " / ".join(
                    (pct(f[m]["decided_by_60"]), num(f[m]["median_intervals"]), num(f[m]["p90_intervals"]))
                )
                for m in METHODS
            ),
        )
    console.print(speed)

    curve = Table(title="The judge by interval count: rollbacks (healthy: also pauses)")
    curve.add_column("intervals", justify="right")
    curve.add_column("healthy\nrollback / pause", justify="right")
    for scenario in REGRESSIONS:
        curve.add_column(scenario.name.replace(" latency", "").replace(" rate", ""), justify="right")
    curve.add_column("aims")
    curve.add_column("tolerance: healthy /\n" + " / ".join(sorted(AIMED)), justify="right")
    for row in windows:
        curve.add_row(
            str(row["intervals"]),
            f"{pct(row['healthy']['rollback'])} / {pct(row['healthy']['pause'])}",
            *(pct(row[scenario.name]["rollback"]) for scenario in REGRESSIONS),
            "met" if row["aims_met"] else "missed",
            " / ".join(pct(row["tolerance"][name]) for name in ("healthy", *sorted(AIMED))),
        )
    console.print(curve)

    seen = Table(title=f"Judge rollbacks by the baseline's errors per minute ({window} intervals)")
    seen.add_column("errors/min")
    for name in ("healthy", "error rate x1.5", "error rate x2", "error rate x3"):
        seen.add_column(f"{name}\nn / rollback", justify="right")
    for row in traffic:
        seen.add_row(
            row["errors_per_min"],
            *(
                f"{row[name]['n']} / {pct(row[name]['rollback'])}"
                for name in ("healthy", "error rate x1.5", "error rate x2", "error rate x3")
            ),
        )
    console.print(seen)

    goal = Table(title=f"Aims (the judge, {window} intervals)")
    goal.add_column("aim")
    goal.add_column("n", justify="right")
    goal.add_column("judge", justify="right")
    goal.add_column("95% interval", justify="right")
    goal.add_column("")
    goal.add_column("Flagger-style", justify="right")
    goal.add_column("tolerance", justify="right")
    for g in goals:
        low, high = g["ci95"]
        goal.add_row(
            g["aim"],
            str(g["n"]),
            pct(g["value"]),
            f"{pct(low)}-{pct(high)}",
            "met" if g["met"] else "[bold red]MISSED[/]",
            pct(g["others"]["flagger"]),
            pct(g["others"]["tolerance"]),
        )
    console.print(goal)


def setup_table(setup: dict[str, Any]) -> Table:
    table = Table(title="Setup")
    table.add_column("what")
    table.add_column("value")
    for key, value in setup.items():
        table.add_row(key, str(value))
    return table


def describe(args: argparse.Namespace, elapsed: float, env: dict[str, str]) -> dict[str, Any]:
    judged_metrics = "; ".join(
        f"{m.name} {m.direction} x{m.max_ratio_increase:g} at {m.confidence:g}"
        + (" critical" if m.critical else "")
        + f" [{m.group}]"
        for m in JUDGE.metrics
    )
    return {
        "analyses": f"{args.analyses} ({round(args.analyses * HEALTHY_SHARE)} healthy, the rest cycling "
        f"through {len(REGRESSIONS)} regressions)",
        "seed": args.seed,
        "intervals": f"main figures at {args.window}; decisions at {', '.join(map(str, PREFIXES))}",
        "services": f"rps {RPS[0]:g}-{RPS[1]:g} per side (log-uniform), error rate "
        f"{ERROR_RATE[0]:.1%}-{ERROR_RATE[1]:.1%} (log-uniform), "
        f"p99 {P99_S[0] * 1000:g}-{P99_S[1] * 1000:g} ms, lognormal sigma {SIGMA[0]:g}-{SIGMA[1]:g}",
        "noise (log sd)": f"diurnal +/-{DIURNAL:.0%}; shared per interval: latency {SHARED_LATENCY_SD:g}, "
        f"errors {SHARED_ERROR_SD:g}; per instance: latency {INSTANCE_LATENCY_SD:g}, "
        f"errors {INSTANCE_ERROR_SD:g}; per side and interval: latency {JITTER_LATENCY_SD:g}",
        "Flagger-style": f"per interval: error rate < {FLAGGER_MAX_ERROR_RATE:.0%}, p99 < "
        f"{FLAGGER_MAX_P99_S * 1000:g} ms; rollback at {FLAGGER_THRESHOLD} failed checks",
        "tolerance": f"window means: error rate <= baseline x{TOLERANCE_ERROR:g}, "
        f"p99 <= baseline x{TOLERANCE_P99:g}",
        "judge": f"{judged_metrics}; weights {JUDGE.group_weights}; "
        f"pass {JUDGE.pass_threshold:g}, marginal {JUDGE.marginal_threshold:g}",
        "workers": args.workers,
        "wall time": f"{elapsed:.1f} s",
        **env,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Accuracy and time-to-decide of the statistical judge against fixed thresholds, "
        "on a generated suite of canary analyses (see tests/bench/README.md)."
    )
    p.add_argument(
        "--analyses", type=int, default=DEFAULT_ANALYSES, help=f"analyses (default {DEFAULT_ANALYSES})"
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    p.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        choices=PREFIXES,
        help=f"intervals of the main figures (default {DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes (default: one per CPU); 1 runs in this one",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when an aim is missed")
    args = p.parse_args(argv)
    if args.analyses < len(SCENARIOS):
        p.error(f"--analyses must be at least {len(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = make_console(160)
    env = machine_env()
    started = time.perf_counter()
    tasks = [(args.seed, i, args.analyses) for i in range(args.analyses)]
    console.print(
        f"judging {args.analyses} analyses x {len(PREFIXES)} interval counts x 3 methods "
        f"on {args.workers} worker(s), seed {args.seed}"
    )
    if args.workers <= 1:
        results = [run_one(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(run_one, tasks, chunksize=max(1, len(tasks) // (args.workers * 8))))
    elapsed = time.perf_counter() - started
    figures = summarise(results, args.window)
    windows = by_window(results)
    traffic = by_traffic(results, args.window)
    goals = aims(figures)
    print_report(console, figures, windows, traffic, goals, args.window)
    setup = describe(args, elapsed, env)
    console.print(setup_table(setup))
    missed = [g["aim"] for g in goals if not g["met"]]
    console.print("all aims met" if not missed else f"[bold red]MISSED[/]: {'; '.join(missed)}")
    if args.json:
        payload = {
            "setup": setup,
            "figures": figures,
            "by_window": windows,
            "by_traffic": traffic,
            "aims": goals,
            "judge_config": JUDGE.model_dump(mode="json"),
            "scenarios": [asdict(s) for s in SCENARIOS],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        console.print(f"figures written to {args.json}")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
