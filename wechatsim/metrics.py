"""Prometheus exposition of the simulator's stats (read at scrape time, so nothing is counted twice)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from wechatsim.state import SimState

__all__ = ["metrics_registry"]


class _StatsCollector(Collector):
    def __init__(self, state: SimState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        stats = self._state.stats
        calls = CounterMetricFamily("pushgw_sim_calls", "API calls, by endpoint.", labels=["endpoint"])
        for endpoint, count in sorted(stats.calls.items()):
            calls.add_metric([endpoint], count)
        answers = CounterMetricFamily(
            "pushgw_sim_send_answers", "Template-send answers, by errcode (or http_5xx).", labels=["errcode"]
        )
        for errcode, count in sorted(stats.errcodes.items()):
            answers.add_metric([errcode], count)
        yield calls
        yield answers
        yield CounterMetricFamily("pushgw_sim_delivered", "Messages delivered.", value=stats.delivered)
        yield CounterMetricFamily(
            "pushgw_sim_deduplicated", "Sends answered from client_msg_id dedup.", value=stats.deduplicated
        )


def metrics_registry(state: SimState) -> CollectorRegistry:
    """A registry of its own (not the process default) exposing `state`'s stats as pushgw_sim_* counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(state))
    return registry
