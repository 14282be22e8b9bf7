"""Proof on a live deployment: each process's /metrics passes `promtool check metrics` and holds no ids, and a
real Prometheus answers every dashboard panel and every alert rule with data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.observability.live import OPENIDS, Live, http, live_deployment, prometheus_query, run_load, until
from tests.observability.test_dashboard import panels
from tests.observability.tools import DEPLOY, run_tool

pytestmark = pytest.mark.e2e
GRAFANA_VARIABLES = {"$__rate_interval": "5s", "$__range": "5m", "$instance": ".*"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_deployment(tmp_path_factory.mktemp("live")) as running:
        run_load(running)
        yield running


def scrape(url: str) -> bytes:
    status, body = http("GET", url)
    assert status == 200, url
    return body


def test_every_process_metrics_pass_promtool(live: Live) -> None:
    for name, url in live.scrape_urls.items():
        result = run_tool("promtool", "check", "metrics", stdin=scrape(url))
        assert result.returncode == 0 and not result.stdout.strip(), (name, result.stdout, result.stderr)


def test_metrics_hold_no_ids_or_openids(live: Live) -> None:
    text = b"".join(scrape(url) for url in live.scrape_urls.values()).decode()
    for secret in [*live.event_ids, *OPENIDS.values(), *OPENIDS, "6222020200001234"]:
        assert secret not in text


def test_worker_reports_queue_build_and_process_metrics(live: Live) -> None:
    expected = (
        'pushgw_consumer_lag{shard="0"}',
        'pushgw_oldest_pending_age_seconds{shard="0"}',
        'pushgw_scheduled_retries{shard="0"}',
        'pushgw_dead_letter_entries{shard="0"} 1.0',  # the load dead-letters one event (47003)
        "pushgw_redis_up 1.0",
        "pushgw_redis_aof_enabled 1.0",
        "pushgw_build_info{",
        "pushgw_event_loop_lag_seconds ",
        "process_resident_memory_bytes ",
    )
    missing: list[str] = []

    def reported() -> bool:
        text = scrape(live.scrape_urls["worker"]).decode()
        missing[:] = [name for name in expected if name not in text]
        return not missing

    try:
        until(reported, "the queue monitor's next sample")
    except AssertionError:
        raise AssertionError(missing) from None


def _dashboard_queries() -> dict[str, str]:
    queries = {}
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"panel {panel['title']!r} {target['refId']}"] = expr
    return queries


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(pushgw[_:][A-Za-z0-9_:]*|up)\s*[{)\[]", expr))


def test_prometheus_answers_every_panel_and_rule(live: Live) -> None:
    """Panels and recording rules must return series. An alert returns series only while it fires, so each
    alert must evaluate without error and every metric it reads must have series."""
    queries = _dashboard_queries()
    for rule in _rules():
        if "record" in rule:
            queries[f"record {rule['record']}"] = rule["record"]
        for name in _metric_names(rule["expr"]):
            what = rule.get("alert") or rule["record"]
            queries[f"rule {what} reads {name}"] = f'count({{__name__="{name}"}})'
    alerts = {f"alert {rule['alert']}": rule["expr"] for rule in _rules() if "alert" in rule}
    failing: dict[str, str] = {}

    def all_answer() -> bool:
        failing.clear()
        for what, expr in {**queries, **alerts}.items():
            answer = prometheus_query(live, expr)
            if answer["status"] != "success":
                failing[what] = str(answer.get("error"))
            elif what in queries and not answer["data"]["result"]:
                failing[what] = "no series"
        return not failing

    try:
        until(all_answer, "every panel and rule answers", timeout_s=30)
    except AssertionError:
        raise AssertionError(failing) from None
