"""The benchmark's pure parts: percentiles, the open-loop schedule, the latency summary, the table."""

from __future__ import annotations

import itertools
import math

import pytest

from loadtest.bench import CPU_ROWS, WORKER_CONCURRENCY, Plan, busiest_second, latency_summary, render, rows
from loadtest.openloop import schedule
from loadtest.report import Row, percentile, profile_top, table


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 0.999) == 100
    assert percentile([7.0], 0.99) == 7
    assert math.isnan(percentile([], 0.5))


def test_an_event_never_delivered_cannot_hide_in_p99() -> None:
    values = [1.0] * 98 + [math.inf] * 2
    assert percentile(values, 0.5) == 1
    assert percentile(values, 0.99) == math.inf


def test_open_loop_schedule_is_set_by_the_clock() -> None:
    offsets = schedule(rate_per_s=200, seconds=2)
    assert len(offsets) == 400
    assert offsets[0] == 0 and offsets[1] == pytest.approx(0.005) and offsets[-1] == pytest.approx(1.995)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(offsets)}
    assert gaps == {0.005}  # evenly spaced, whatever the answers do
    assert schedule(0, 5) == [] and schedule(10, 0) == []


def test_a_ramp_schedule_speeds_up_linearly() -> None:
    offsets = schedule(rate_per_s=100, seconds=4, rate_to=300)
    assert len(offsets) == 800  # the mean rate, 200/s, for 4 s
    assert offsets[0] == 0 and offsets[-1] < 4
    sent_by = [sum(1 for t in offsets if t < second) for second in (1, 2, 3, 4)]
    assert [b - a for a, b in itertools.pairwise([0, *sent_by])] == pytest.approx([125, 175, 225, 275], abs=1)
    assert schedule(100, 4, rate_to=100) == schedule(100, 4)


def test_busiest_second_counts_the_densest_window() -> None:
    assert busiest_second([]) == 0
    assert busiest_second([0, 500, 999, 1000, 1001, 3000]) == 4  # 500..1001
    assert busiest_second([5000, 10, 20]) == 2  # order does not matter


def test_latency_summary_counts_undelivered_as_never() -> None:
    sent = [
        ["e1", "C1", 1000.0, 3.0, 202],
        ["e2", "C1", 1001.0, 4.0, 202],
        ["e3", "C2", 1002.0, 2.0, 503],  # refused: not the pipeline's latency
        ["e4", "C3", 1003.0, 5.0, 202],
    ]
    found: dict[str, list[str | None]] = {
        "e1": ["delivered", "1002", "1010"],
        "e2": ["delivered", "1003", "1023"],
        "e4": ["queued", "1005", None],
    }
    summary = latency_summary(sent, found)
    assert (summary["events"], summary["accepted"], summary["delivered"]) == (4, 3, 2)
    assert summary["p50_ms"] == 20  # 8, 20, inf
    assert summary["p99_ms"] == math.inf
    assert summary["answer_p99_ms"] == 5
    assert summary["statuses"] == {"202": 3, "503": 1}


def test_table_lines_up() -> None:
    text = table(
        "title",
        [
            Row("H", 9527.4, "req/s"),
            Row("single", 3544.0, "events/s", 0.372, "H", ">= 0.60"),
            Row("p99", math.inf, "ms"),
            Row("p50", 2.25, "ms"),
            Row("unmeasured", math.nan, "ms"),
            Row("a heading", math.nan, ""),
        ],
    )
    lines = text.splitlines()
    assert lines[0] == "title"
    assert lines[2].endswith("9,527  req/s")
    assert "3,544  events/s    0.37  H     >= 0.60" in lines[3]
    assert lines[4].endswith("never  ms") and lines[5].endswith("2.2  ms") and lines[6].endswith("-  ms")
    assert lines[7] == "a heading"
    value_column = {line.index("  ", 46) for line in lines[2:7]}
    assert len(value_column) == 1


def _report() -> dict[str, object]:
    medians = {"H": 10_000.0, "single": 6_000.0, "single_uncoalesced": math.nan, "batch": 40_000.0}
    medians |= {"XADD": 200_000.0, "C": 10_000.0, "SIM": 12_000.0, "delivery": 7_000.0}
    medians |= {"stages_max": 6_000.0, "pipeline_max": 4_500.0, "verify_us": 25.0}
    medians |= {f"cpu_us.{measure}.{process}": 100.0 for measure, process in CPU_ROWS}
    medians |= {"cpu_us.delivery.worker": 140.0, "cpu_us.single.gateway": 250.0}
    for run in ("e2e_at_stages", "e2e_at_pipeline"):
        medians |= {
            f"{run}.{k}": 5.0 for k in ("p50_ms", "p99_ms", "p999_ms", "sent_p99_ms", "answer_p99_ms")
        }
        medians[f"{run}.rate"] = 4_200.0
        medians |= {f"{run}.events": 1000.0, f"{run}.accepted": 990.0}
    medians |= {f"e2e_at_35.{k}": math.nan for k in ("rate", "p50_ms", "p99_ms", "p999_ms")}
    rss = {"gateway": 50.0, "worker": 40.0}
    return {"mode": "quick", "rounds": 1, "cores": 2, "seconds_per_measure": 2.5, "medians": medians,
            "rss_mib_start_end": [rss, rss], "soak": None}  # fmt: skip


def test_rows_give_each_product_figure_its_ratio() -> None:
    by_name = {row.name: row for row in rows(_report())}
    assert by_name["single-event ingress"].ratio == pytest.approx(0.6)
    assert by_name["batch ingress (100 per request)"].ratio == pytest.approx(4.0)
    assert by_name[f"worker delivery (1 process, concurrency {WORKER_CONCURRENCY})"].ratio == pytest.approx(
        0.7
    )
    assert "  same, one Redis round trip per request" not in by_name  # nan: not measured (quick)
    assert by_name["pipeline max, every process at once"].ratio == pytest.approx(0.75)
    assert by_name["  delivery: worker"].ratio == pytest.approx(1.4)  # CPU per delivery against the client's
    assert by_name["  single: gateway"].ratio == pytest.approx(2.5)
    assert by_name["  of which: signature verification (RFC 9421)"].ratio == pytest.approx(0.1)
    assert not any("35%" in name for name in by_name)
    assert by_name["  accepted (202) of the events sent"].ratio == pytest.approx(0.99)
    assert "quick; medians of 1 round(s)" in render(_report())


def test_quick_plan_fits_in_a_minute() -> None:
    quick = Plan.make(quick=True)
    assert quick.rounds == 1 and quick.seconds * 8 + quick.e2e_seconds * 2 < 60


def test_profile_summary_from_collapsed_stacks() -> None:
    collapsed = [
        "<module> (<string>:1);run_app (/x/site-packages/aiohttp/web.py:10);handle (/main/gateway/a.py:3) 6",
        "<module> (<string>:1);run_app (/x/site-packages/aiohttp/web.py:11) 4",
        "garbage line",
    ]
    own, inclusive = profile_top(collapsed)
    assert own[0] == ("handle (gateway/a.py)", 0.6)
    assert ("run_app (aiohttp/web.py)", 0.4) in own  # lines of one function merge
    assert inclusive == [("handle (gateway/a.py)", 0.6)]  # the entry frames on every stack are left out
