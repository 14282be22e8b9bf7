"""The fault tests' report: every oracle verdict of the session, printed at the end and written to
build/faults-report-<server>.json (the counts the closing note of issue 7 quotes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.faults.oracle import REPORT

REPORT_PATH = Path(__file__).resolve().parents[2] / "build" / "faults-report.json"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT:
        return
    terminalreporter.section("fault scenarios: the oracle's counts")
    for counts in REPORT:
        terminalreporter.write_line(counts.line())
    server = os.environ.get("PUSHGW_TEST_REDIS") or "redis-server"
    REPORT_PATH.parent.mkdir(exist_ok=True)
    path = REPORT_PATH.with_name(f"faults-report-{server}.json")
    path.write_text(json.dumps([counts.as_dict() for counts in REPORT], indent=2, default=str))
    terminalreporter.write_line(f"written to {path}")
