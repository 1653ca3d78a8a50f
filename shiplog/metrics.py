"""shiplog's own /metrics for Prometheus: what each process has done, and what the
log says about deployments.

Per process, read from the running components at scrape time: messages by outcome,
retries, relay state, event append latency (a histogram the log observes), consumer
lag per partition. From the log, refreshed in the event loop every
``LOG_REFRESH_S`` (a scrape runs in the exporter's thread and must not wait on the
database): deployments by outcome per service and environment, pending approvals,
and stage durations (approval wait, queue, rollout) over the last day.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shiplog.runner import Running

log = logging.getLogger(__name__)

#: how often the log-derived figures are refreshed
LOG_REFRESH_S = 15.0
TERMINAL = ("succeeded", "rolled_back", "failed", "denied", "rejected")

_OUTCOMES_SQL = """
SELECT split_part(partition_key, '.', 1) AS service,
       split_part(partition_key, '.', 2) AS environment,
       split_part(event_type, '.', 3) AS outcome,
       count(*) AS n
  FROM events
 WHERE event_type LIKE ANY($1::text[]) AND stream_id LIKE 'deployment-%'
 GROUP BY 1, 2, 3
"""
_PENDING_SQL = """
SELECT count(*) FROM (
  SELECT max(position) FILTER (WHERE event_type LIKE 'shiplog.approval.requested.%') AS asked,
         max(position) FILTER (WHERE event_type LIKE ANY($1::text[])) AS settled
    FROM events WHERE stream_id LIKE 'deployment-%'
   GROUP BY stream_id) s
 WHERE asked IS NOT NULL AND (settled IS NULL OR settled < asked)
"""
_STAGES_SQL = """
SELECT min(recorded_at) FILTER (WHERE event_type LIKE 'shiplog.deployment.planned.%') AS planned,
       min(recorded_at) FILTER (WHERE event_type LIKE 'shiplog.deployment.approved.%') AS approved,
       min(recorded_at) FILTER (WHERE event_type LIKE 'shiplog.deployment.started.%') AS started,
       min(recorded_at) FILTER (WHERE event_type LIKE ANY($1::text[])) AS ended
  FROM events
 WHERE stream_id LIKE 'deployment-%' AND recorded_at > now() - interval '24 hours'
 GROUP BY stream_id
"""


@dataclass
class LogFigures:
    """The log-derived figures, as of the last refresh."""

    outcomes: list[tuple[str, str, str, int]] = field(default_factory=list)
    pending_approvals: int = 0
    #: stage -> durations in seconds (last 24 hours)
    stages: dict[str, list[float]] = field(default_factory=dict)
    #: (consumer, topic, partition) -> messages not yet read
    lag: dict[tuple[str, str, int], int] = field(default_factory=dict)
    refreshed: bool = False


async def read_log_figures(pool: Any) -> LogFigures:
    terminal = [f"shiplog.deployment.{t}.%" for t in TERMINAL]
    settled = [*terminal, "shiplog.deployment.approved.%"]
    async with pool.acquire() as conn:
        outcomes = await conn.fetch(_OUTCOMES_SQL, terminal)
        pending = await conn.fetchval(_PENDING_SQL, settled)
        rows = await conn.fetch(_STAGES_SQL, terminal)
    stages: dict[str, list[float]] = {"approval": [], "queue": [], "rollout": []}
    for r in rows:
        for stage, start, end in (
            ("approval", r["planned"], r["approved"]),
            ("queue", r["approved"], r["started"]),
            ("rollout", r["started"], r["ended"]),
        ):
            if start is not None and end is not None:
                stages[stage].append((end - start).total_seconds())
    return LogFigures(
        outcomes=[(r["service"], r["environment"], r["outcome"], r["n"]) for r in outcomes],
        pending_approvals=int(pending or 0),
        stages=stages,
        refreshed=True,
    )


async def consumer_lag(running: Running) -> dict[tuple[str, str, int], int]:
    """Messages each consumer has not read yet, per partition (high watermark minus
    position, from the consumer's own fetch state)."""
    lag: dict[tuple[str, str, int], int] = {}
    for shell in running.shells:
        for subscriber in getattr(shell.broker, "subscribers", []):
            consumer = getattr(subscriber, "consumer", None)
            if consumer is None:
                continue
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None:
                    continue
                with contextlib.suppress(Exception):
                    position = await consumer.position(tp)
                    lag[(shell.consumer.name, tp.topic, tp.partition)] = max(0, high - position)
    return lag


async def refresh_forever(running: Running, figures: LogFigures, every: float = LOG_REFRESH_S) -> None:
    while True:
        try:
            fresh = await read_log_figures(running.log.pool)
            fresh.lag = await consumer_lag(running)
            figures.__dict__.update(fresh.__dict__)
        except Exception as exc:  # metrics must never take a component down
            log.debug("metrics: refresh failed: %s", exc)
        await asyncio.sleep(every)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class RunningCollector(Collector):
    def __init__(self, running: Running, figures: LogFigures | None = None):
        self.running = running
        self.figures = figures or LogFigures()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        messages = CounterMetricFamily(
            "shiplog_consumer_messages",
            "Messages a consumer finished, by outcome",
            labels=["consumer", "outcome"],
        )
        for shell in self.running.shells:
            for outcome in ("handled", "duplicates", "deadlettered", "refused"):
                messages.add_metric([shell.consumer.name, outcome], shell.stats[outcome])
        yield messages
        retries = CounterMetricFamily(
            "shiplog_consumer_retries", "Retries after retryable trouble", labels=["consumer"]
        )
        for shell in self.running.shells:
            retries.add_metric([shell.consumer.name], shell.stats["retries"])
        yield retries
        yield from self._from_log()
        if self.running.relay is not None:
            yield CounterMetricFamily(
                "shiplog_relay_published", "Events the relay published", value=self.running.relay.published
            )
            yield GaugeMetricFamily(
                "shiplog_relay_leader",
                "1 while this relay is the publishing leader",
                value=1 if self.running.relay.ready.is_set() else 0,
            )

    def _from_log(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        f = self.figures
        if not f.refreshed:
            return
        outcomes = CounterMetricFamily(
            "shiplog_deployments",
            "Deployments ended, by outcome (from the log)",
            labels=["service", "environment", "outcome"],
        )
        for service, environment, outcome, n in f.outcomes:
            outcomes.add_metric([service, environment, outcome], n)
        yield outcomes
        yield GaugeMetricFamily(
            "shiplog_pending_approvals",
            "Deployments waiting for people to approve",
            value=f.pending_approvals,
        )
        stages = GaugeMetricFamily(
            "shiplog_stage_duration_seconds",
            "Stage durations of deployments in the last 24 hours (approval wait, queue, rollout)",
            labels=["stage", "quantile"],
        )
        for stage, values in f.stages.items():
            if values:
                for q in (0.5, 0.9, 0.99):
                    stages.add_metric([stage, str(q)], _quantile(values, q))
                stages.add_metric([stage, "mean"], statistics.fmean(values))
        yield stages
        lag = GaugeMetricFamily(
            "shiplog_consumer_lag",
            "Messages a consumer has not read yet",
            labels=["consumer", "topic", "partition"],
        )
        for (consumer, topic, partition), n in sorted(f.lag.items()):
            lag.add_metric([consumer, topic, str(partition)], n)
        yield lag


def serve(running: Running, port: int) -> asyncio.Task[None] | None:
    """Expose /metrics on 127.0.0.1-or-all:port (0 disables); returns the task that
    refreshes the log-derived figures (the caller cancels it on the way out)."""
    if port <= 0:
        return None
    figures = LogFigures()
    REGISTRY.register(RunningCollector(running, figures))
    start_http_server(port)
    return asyncio.create_task(refresh_forever(running, figures), name="metrics")
