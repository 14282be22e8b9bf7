"""The bench table's targets and the rows that show what wrk and the open-loop generator saw."""

from __future__ import annotations

import math

from loadtest.bench import CPU_ROWS, E2E_FIGURES, WRK_FIGURES, WRK_MEASURES, render, rows


def _report() -> dict[str, object]:
    medians = {"H": 10_000.0, "single": 4_500.0, "single_uncoalesced": math.nan, "batch": 16_000.0}
    medians |= {"XADD": 200_000.0, "C": 10_000.0, "SIM": 12_000.0, "delivery": 6_000.0}
    medians |= {"stages_max": 4_500.0, "pipeline_max": 4_000.0, "verify_us": 25.0}
    medians |= {f"cpu_us.{measure}.{process}": 100.0 for measure, process in CPU_ROWS}
    medians |= {f"wrk.{m}.{figure}": 0.0 for m in WRK_MEASURES for figure in WRK_FIGURES}
    medians |= {"wrk.single.events": 13_500.0, "wrk.single.outcomes.queued": 13_500.0}
    medians |= {"wrk.batch.events": 48_000.0, "wrk.batch.outcomes.queued": 47_000.0}
    medians |= {"wrk.batch.outcomes.digested": 1_000.0, "wrk.batch.non_2xx": 2.0}
    for run in ("e2e_at_50", "e2e_at_pipeline"):
        medians |= {f"{run}.{figure}": 5.0 for figure in E2E_FIGURES}
        medians |= {f"{run}.events": 1000.0, f"{run}.accepted": 1000.0}
    medians |= {"e2e_at_50.sender_late_p99_ms": 0.4, "e2e_at_50.sender_late_max_ms": 3.0}
    rss = {"gateway": 50.0, "worker": 40.0}
    return {"mode": "quick", "rounds": 1, "cores": 2, "seconds_per_measure": 3.0, "medians": medians,
            "rss_mib_start_end": [rss, rss], "soak": None, "pinning": "product on CPU 1"}  # fmt: skip


def test_targets_are_the_issues_floors() -> None:
    found = {row.name: row for row in rows(_report())}
    assert found["single-event ingress"].target == ">= 0.40"
    assert found["batch ingress (100 per request)"].target == ">= 1.50"
    assert found["batch ingress (100 per request)"].ratio == 1.6
    [delivery] = [row for name, row in found.items() if name.startswith("worker delivery")]
    assert delivery.target == ">= 0.55" and delivery.ratio == 0.6


def test_latency_target_is_read_at_half_the_pipeline_max_only() -> None:
    table = rows(_report())
    titles = [i for i, row in enumerate(table) if row.name.startswith("e2e open loop")]
    assert [table[i].name for i in titles] == [
        "e2e open loop @ 50% pipeline max (target)",
        "e2e open loop @ 70% pipeline max",
    ]
    p99 = [row for row in table if row.name == "  accepted->delivered p99"]
    assert [row.target for row in p99] == ["<= 20 ms", ""]
    late = [row for row in table if row.name.startswith("  generator late")]
    assert [row.value for row in late[:2]] == [0.4, 3.0]


def test_wrk_rows_show_outcomes_and_failures() -> None:
    table = rows(_report())
    start = [row.name for row in table].index("batch ingress (100 per request)")
    batch = {row.name: row for row in table[start + 1 : start + 5]}
    assert batch["  non-2xx answers and socket errors (wrk)"].value == 2
    assert batch["  queued, of the events answered 2xx"].ratio == 47 / 48
    assert batch["  digested or rate limited"].value == 1_000
    assert "pinning: product on CPU 1" in render(_report()).splitlines()[0]
