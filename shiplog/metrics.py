"""shiplog's own /metrics for Prometheus: what each process has done.

Read straight from the running components' counters at scrape time, so the hot
paths carry no metrics code of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shiplog.runner import Running


class RunningCollector(Collector):
    def __init__(self, running: Running):
        self.running = running

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        messages = CounterMetricFamily(
            "shiplog_consumer_messages",
            "Messages a consumer finished, by outcome",
            labels=["consumer", "outcome"],
        )
        for shell in self.running.shells:
            for outcome in ("handled", "duplicates", "deadlettered"):
                messages.add_metric([shell.consumer.name, outcome], shell.stats[outcome])
        yield messages
        retries = CounterMetricFamily(
            "shiplog_consumer_retries", "Retries after retryable trouble", labels=["consumer"]
        )
        for shell in self.running.shells:
            retries.add_metric([shell.consumer.name], shell.stats["retries"])
        yield retries
        if self.running.relay is not None:
            yield CounterMetricFamily(
                "shiplog_relay_published", "Events the relay published", value=self.running.relay.published
            )
            yield GaugeMetricFamily(
                "shiplog_relay_leader",
                "1 while this relay is the publishing leader",
                value=1 if self.running.relay.ready.is_set() else 0,
            )


def serve(running: Running, port: int) -> None:
    """Expose /metrics on 127.0.0.1-or-all:port (0 disables)."""
    if port <= 0:
        return
    REGISTRY.register(RunningCollector(running))
    start_http_server(port)
