"""Build grafana/dashboards/pushgw.json: `python grafana/build_dashboard.py` (a test keeps the file equal).

Top to bottom it answers: is it delivering (SLO stats), is the ingress healthy (RED by route), is it backing
up (lag, pending, oldest age, retries, dead letters), what is failing (outcomes, errcodes), how is WeChat
(latency, tokens, circuit), and is anything saturated (Redis, CPU, memory, event loop). Every panel has a
fixed id, a unit, and queries that use `$__rate_interval` and the `$instance` variable. Queue gauges are
reported by every worker with the same values, so they are shown as max by (shard).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "pushgw.json"
UID = "pushgw-main"
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'  # noqa: E741 - short on purpose: it is in every query
W = "$__rate_interval"

# The SLO thresholds of gateway/core/metrics.py, as the histograms' `le` labels.
SLO_LE = "30.0"
FAST_LE = "5.0"
SLO_OBJECTIVE = 0.99

Panel = dict[str, Any]


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def _panel(kind: str, title: str, unit: str, targets: list[tuple[str, str]], **extra: Any) -> Panel:
    panel: Panel = {
        "type": kind,
        "title": title,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [_target(expr, legend, chr(ord("A") + n)) for n, (expr, legend) in enumerate(targets)],
    }
    if kind == "timeseries":
        legend = {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]}
        panel["options"] = {"legend": legend}
    panel.update(extra)
    return panel


def stat(title: str, unit: str, expr: str, **extra: Any) -> Panel:
    return _panel("stat", title, unit, [(expr, title)], **extra)


def series(title: str, unit: str, *targets: tuple[str, str], **extra: Any) -> Panel:
    return _panel("timeseries", title, unit, list(targets), **extra)


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def _delivered_within(le: str) -> str:
    return (
        f'sum(rate(pushgw_delivery_latency_seconds_bucket{{le="{le}",{I}}}[{W}]))'
        f" / sum(rate(pushgw_delivery_latency_seconds_count{{{I}}}[{W}]))"
    )


def slo_row() -> list[Panel]:
    budget = (
        "clamp_min(1 - (1 - sum(increase(pushgw_delivery_latency_seconds_bucket"
        f'{{le="{SLO_LE}",{I}}}[$__range])) / sum(increase(pushgw_delivery_latency_seconds_count{{{I}}}'
        f"[$__range]))) / {1 - SLO_OBJECTIVE:.2f}, 0)"
    )
    return [
        row("SLO: is it delivering, and in time?"),
        stat("Delivered within 5 s", "percentunit", _delivered_within(FAST_LE)),
        stat("Delivered within 30 s (SLO 99%)", "percentunit", _delivered_within(SLO_LE)),
        stat("Error budget left (dashboard range)", "percentunit", budget),
        stat("Delivered", "ops", f'sum(rate(pushgw_deliveries_total{{outcome="delivered",{I}}}[{W}]))'),
        stat("Accepted", "ops", f'sum(rate(pushgw_events_total{{result="queued",{I}}}[{W}]))'),
        stat("Workers up", "short", 'sum(up{job="pushgw-worker",instance=~"$instance"})'),
    ]


def ingress_row() -> list[Panel]:
    return [
        row("Ingress (RED by route)"),
        series(
            "Requests by route and code",
            "reqps",
            (f"sum by (route, code) (rate(pushgw_http_requests_total{{{I}}}[{W}]))", "{{route}} {{code}}"),
        ),
        series(
            "Errors (5xx) by route",
            "percentunit",
            (
                # `or ... * 0`: a route without 5xx shows 0, not "no data"
                f'(sum by (route) (rate(pushgw_http_requests_total{{code=~"5..",{I}}}[{W}]))'
                f" or sum by (route) (rate(pushgw_http_requests_total{{{I}}}[{W}])) * 0)"
                f" / sum by (route) (rate(pushgw_http_requests_total{{{I}}}[{W}]))",
                "{{route}}",
            ),
        ),
        series(
            "Latency p50 / p99 by route",
            "s",
            (_quantile(0.5, "pushgw_http_request_duration_seconds", "route"), "p50 {{route}}"),
            (_quantile(0.99, "pushgw_http_request_duration_seconds", "route"), "p99 {{route}}"),
        ),
        series(
            "Events by result",
            "ops",
            (f"sum by (result) (rate(pushgw_events_total{{{I}}}[{W}]))", "{{result}}"),
        ),
    ]


def _quantile(q: float, histogram: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket{{{I}}}[{W}])))"


def pipeline_row() -> list[Panel]:
    def gauge(name: str) -> str:
        return f"max by (shard) ({name}{{{I}}})"

    return [
        row("Pipeline: is it backing up?"),
        series("Consumer lag (unread entries)", "short", (gauge("pushgw_consumer_lag"), "shard {{shard}}")),
        series("Pending (read, not acked)", "short", (gauge("pushgw_pending_entries"), "shard {{shard}}")),
        series(
            "Oldest entry age",
            "s",
            (gauge("pushgw_oldest_unread_age_seconds"), "unread shard {{shard}}"),
            (gauge("pushgw_oldest_pending_age_seconds"), "pending shard {{shard}}"),
        ),
        series(
            "Scheduled retries and dead letters",
            "short",
            (gauge("pushgw_scheduled_retries"), "retries shard {{shard}}"),
            (gauge("pushgw_dead_letter_entries"), "dead letters shard {{shard}}"),
        ),
        series(
            "Retries and dead letters by reason",
            "ops",
            (f"sum by (reason) (rate(pushgw_retries_total{{{I}}}[{W}]))", "retry {{reason}}"),
            (f"sum by (reason) (rate(pushgw_dead_letters_total{{{I}}}[{W}]))", "dead {{reason}}"),
        ),
        series(
            "Stream length and consumers",
            "short",
            (gauge("pushgw_stream_length"), "length shard {{shard}}"),
            (gauge("pushgw_active_consumers"), "active consumers shard {{shard}}"),
        ),
        *archive_panels(),
    ]


def archive_panels() -> list[Panel]:
    """The PostgreSQL archive: does it keep up with delivery (rows/s beside delivered/s), is a backlog
    waiting in Redis for it, and is PostgreSQL refusing batches?"""
    return [
        series(
            "Archive: final states waiting in Redis, and the oldest one's age",
            "short",
            (f"max(pushgw_archive_backlog{{{I}}})", "backlog"),
            (f"max(pushgw_archive_lag_seconds{{{I}}})", "lag"),
            fieldConfig={
                "defaults": {"unit": "short"},
                "overrides": [
                    {
                        "matcher": {"id": "byName", "options": "lag"},
                        "properties": [
                            {"id": "unit", "value": "s"},
                            {"id": "custom.axisPlacement", "value": "right"},
                        ],
                    }
                ],
            },
        ),
        series(
            "Archive: rows written beside deliveries, and failed batches",
            "ops",
            (f"sum by (result) (rate(pushgw_archive_rows_total{{{I}}}[{W}]))", "rows {{result}}"),
            (f'sum(rate(pushgw_deliveries_total{{outcome="delivered",{I}}}[{W}]))', "delivered"),
            (f"sum(rate(pushgw_archive_write_errors_total{{{I}}}[{W}]))", "failed batches"),
        ),
    ]


def delivery_row() -> list[Panel]:
    return [
        row("Delivery: what is failing?"),
        series(
            "Deliveries by outcome",
            "ops",
            (f"sum by (outcome) (rate(pushgw_deliveries_total{{{I}}}[{W}]))", "{{outcome}}"),
        ),
        series(
            "Deliveries by WeChat errcode",
            "ops",
            (f"sum by (errcode) (rate(pushgw_deliveries_total{{{I}}}[{W}]))", "{{errcode}}"),
        ),
        series(
            "End-to-end latency (accepted -> WeChat answer)",
            "s",
            (_quantile(0.5, "pushgw_delivery_latency_seconds"), "p50"),
            (_quantile(0.99, "pushgw_delivery_latency_seconds"), "p99"),
        ),
        series(
            "Critical alerts: latency (SLO 99% within 2 s), share within 2 s, waiting",
            "s",
            (_quantile(0.5, "pushgw_critical_delivery_latency_seconds"), "p50"),
            (_quantile(0.99, "pushgw_critical_delivery_latency_seconds"), "p99"),
            (
                f'sum(rate(pushgw_critical_delivery_latency_seconds_bucket{{le="2.0",{I}}}[{W}]))'
                f" / sum(rate(pushgw_critical_delivery_latency_seconds_count{{{I}}}[{W}]))",
                "within 2 s",
            ),
            (f"max by (shard) (pushgw_critical_waiting{{{I}}})", "waiting shard {{shard}}"),
            fieldConfig={
                "defaults": {"unit": "s"},
                "overrides": [
                    {
                        "matcher": {"id": "byName", "options": "within 2 s"},
                        "properties": [
                            {"id": "unit", "value": "percentunit"},
                            {"id": "custom.axisPlacement", "value": "right"},
                        ],
                    },
                    {
                        "matcher": {"id": "byRegexp", "options": "^waiting.*"},
                        "properties": [
                            {"id": "unit", "value": "short"},
                            {"id": "custom.axisPlacement", "value": "right"},
                        ],
                    },
                ],
            },
        ),
        series(
            "In flight",
            "short",
            (f"sum by (instance) (pushgw_deliveries_in_flight{{{I}}})", "{{instance}}"),
        ),
        series(
            "Notices to core banking (SMS fallback) by outcome",
            "ops",
            (f"sum by (outcome, type) (rate(pushgw_notices_total{{{I}}}[{W}]))", "{{outcome}} {{type}}"),
        ),
        series(
            "Notices to core banking: POST latency and backlog",
            "s",
            (_quantile(0.99, "pushgw_notice_request_duration_seconds"), "POST p99"),
            (f"max by (shard) (pushgw_notice_scheduled_retries{{{I}}})", "retrying shard {{shard}}"),
            (f"max by (shard) (pushgw_notice_dead_letter_entries{{{I}}})", "dead letters shard {{shard}}"),
            fieldConfig={
                "defaults": {"unit": "s"},
                "overrides": [
                    {
                        "matcher": {"id": "byRegexp", "options": "^(retrying|dead letters).*"},
                        "properties": [
                            {"id": "unit", "value": "short"},
                            {"id": "custom.axisPlacement", "value": "right"},
                        ],
                    }
                ],
            },
        ),
    ]


def wechat_row() -> list[Panel]:
    return [
        row("WeChat"),
        series(
            "WeChat API latency p50 / p99",
            "s",
            (_quantile(0.5, "pushgw_wechat_request_duration_seconds", "api"), "p50 {{api}}"),
            (_quantile(0.99, "pushgw_wechat_request_duration_seconds", "api"), "p99 {{api}}"),
        ),
        series(
            "Token refreshes",
            "ops",
            (f"sum by (result) (rate(pushgw_token_refreshes_total{{{I}}}[{W}]))", "{{result}}"),
        ),
        series(
            "Circuit open",
            "bool_yes_no",
            (f"max by (appid) (pushgw_circuit_open{{{I}}})", "{{appid}}"),
        ),
    ]


def saturation_row() -> list[Panel]:
    return [
        row("Saturation"),
        series(
            "Redis memory",
            "bytes",
            (f"max(pushgw_redis_used_memory_bytes{{{I}}})", "used"),
            (f"max(pushgw_redis_maxmemory_bytes{{{I}}})", "maxmemory"),
        ),
        series(
            "Redis commands",
            "ops",
            (f"max(rate(pushgw_redis_commands_processed_total{{{I}}}[{W}]))", "commands"),
        ),
        series(
            "Redis durable and reachable",
            "bool_yes_no",
            (f"min(pushgw_redis_durable{{{I}}})", "durable (gateway check)"),
            (f"min(pushgw_redis_up{{{I}}})", "reachable (workers)"),
            (f"min(pushgw_redis_aof_last_write_ok{{{I}}})", "last AOF write ok"),
        ),
        series(
            "Process CPU",
            "percentunit",
            (f'rate(process_cpu_seconds_total{{job=~"pushgw-.*",{I}}}[{W}])', "{{job}} {{instance}}"),
        ),
        series(
            "Process memory (RSS)",
            "bytes",
            (f'process_resident_memory_bytes{{job=~"pushgw-.*",{I}}}', "{{job}} {{instance}}"),
        ),
        series(
            "Event-loop lag",
            "s",
            (f"pushgw_event_loop_lag_seconds{{{I}}}", "{{job}} {{instance}}"),
        ),
        series(
            "Redis data lost (no data epoch, or another one: Redis refused)",
            "bool_yes_no",
            (f"max by (job) (pushgw_redis_data_lost{{{I}}})", "{{job}}"),
        ),
    ]


def _layout(panels: list[Panel]) -> list[Panel]:
    """Fixed ids and a grid: rows full width, stats six across, graphs two across."""
    y, x = 0, 0
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
        if panel["type"] == "row":
            y, x = y + (8 if x else 0), 0
            panel["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
            continue
        width, height = (4, 4) if panel["type"] == "stat" else (12, 8)
        if x + width > 24:
            y, x = y + height, 0
        panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
        x += width
    return panels


def _variables() -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": "pushgw-prometheus"},
            "hide": 0,
        },
        {
            "name": "instance",
            "label": "Instance",
            "type": "query",
            "datasource": DS,
            "query": {"query": 'label_values(up{job=~"pushgw-.*"}, instance)', "refId": "instance"},
            "definition": 'label_values(up{job=~"pushgw-.*"}, instance)',
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "sort": 1,
            "hide": 0,
        },
    ]


def dashboard() -> dict[str, Any]:
    panels = [
        *slo_row(),
        *ingress_row(),
        *pipeline_row(),
        *delivery_row(),
        *wechat_row(),
        *saturation_row(),
    ]
    return {
        "uid": UID,
        "title": "pushgw: WeChat push gateway",
        "tags": ["pushgw"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "panels": _layout(panels),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT}\n")


if __name__ == "__main__":
    main()
