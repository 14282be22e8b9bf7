"""Real headless Locust runs of the locustfile, a few seconds each, against a private `pushgw dev` stack: the
default selection is fault-free and one user sends events, events are spread so they are delivered rather than
digested, outcomes are counted, the exit code follows the policy, and tags never leave a class spinning."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtest.smoke import DevStack, dev_stack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(90)


@dataclass(frozen=True)
class Run:
    code: int
    output: str
    stats: dict[tuple[str, str], dict[str, str]]  # (type, name) -> the CSV row

    def requests(self, kind: str, name: str) -> int:
        row = self.stats.get((kind, name))
        return int(row["Request Count"]) if row else 0

    def failures(self) -> int:
        return int(self.stats[("", "Aggregated")]["Failure Count"])


@pytest.fixture(scope="module")
def stack() -> Iterator[DevStack]:
    with dev_stack() as running:
        yield running


def locust(stack: DevStack, tmp_path: Path, *args: str, **env: str) -> Run:
    """Run `locust --headless ARGS` from the repository root (so locust.conf applies) against the stack."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGW_LOCUST_")}
    prefix = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "locust", "--headless", "--host", stack.host, "--csv", str(prefix), *args],
        cwd=ROOT,
        env={**clean, "PUSHGW_LOCUST_SIM_URL": stack.sim_url, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    with (tmp_path / "run_stats.csv").open(newline="") as stats_csv:
        stats = {(row["Type"], row["Name"]): row for row in csv.DictReader(stats_csv)}
    return Run(done.returncode, done.stdout + done.stderr, stats)


def test_one_user_of_the_default_selection_sends_events_that_are_delivered(
    stack: DevStack, tmp_path: Path
) -> None:
    run = locust(stack, tmp_path, "-u", "1", "-t", "3s")
    assert run.code == 0, run.output
    assert "WeChatTroubleUser" not in run.output.split("All users spawned:")[1].splitlines()[0]
    assert "fault injection off" in run.output
    assert run.requests("POST", "/v1/events") > 0
    assert run.requests("outcome", "queued") > 0
    assert run.requests("outcome", "digested") == 0  # the pool is sized for the rate limit
    assert "customer pool:" in run.output and "load-test policy PASS (exit 0)" in run.output


def test_every_outcome_has_its_own_row(stack: DevStack, tmp_path: Path) -> None:
    hot = '{"user_class_name": "HotCustomerUser", "fixed_count": 1}'
    run = locust(
        stack,
        tmp_path,
        *("SteadyUser", "HotCustomerUser", "-u", "2", "-r", "2", "-t", "3s", "--config-users", hot),
        *("--tags", "invalid", "duplicate", "hot"),
        PUSHGW_LOCUST_CUSTOMERS="200",
    )
    assert run.code == 0, run.output
    for outcome in ("queued", "duplicate", "digested", "rejected"):  # hot customers are digested
        assert run.requests("outcome", outcome) > 0, outcome
    total = run.stats[("", "Aggregated")]
    requests = sum(
        int(row["Request Count"]) for (kind, _), row in run.stats.items() if kind not in ("", "outcome")
    )
    assert int(total["Request Count"]) == requests  # outcome rows stay out of the aggregated totals


@pytest.mark.parametrize(("max_failure_ratio", "code", "verdict"), [("0.9", 0, "PASS"), ("0.05", 1, "FAIL")])
def test_the_exit_code_follows_the_policy(
    stack: DevStack, tmp_path: Path, max_failure_ratio: str, code: int, verdict: str
) -> None:
    run = locust(  # every fault switch fails against a simulator that is not there: ~30% failures
        stack,
        tmp_path,
        *("-u", "2", "-r", "2", "-t", "3s", "SteadyUser", "WeChatTroubleUser"),
        PUSHGW_LOCUST_SIM_URL="http://127.0.0.1:9",
        PUSHGW_LOCUST_FAULT_AFTER_S="0",
        PUSHGW_LOCUST_FAULT_FOR_S="0",
        PUSHGW_LOCUST_CUSTOMERS="200",
        PUSHGW_LOCUST_MAX_FAILURE_RATIO=max_failure_ratio,
    )
    assert run.failures() > 0
    assert run.code == code, run.output
    assert f"load-test policy {verdict} (exit {code}): failure ratio" in run.output


def test_a_class_without_tasks_after_tags_is_not_spawned(stack: DevStack, tmp_path: Path) -> None:
    run = locust(
        stack,
        tmp_path,
        *("-u", "7", "-r", "7", "-t", "3s", "--tags", "duplicate"),
        PUSHGW_LOCUST_INJECT_FAULTS="1",
        PUSHGW_LOCUST_CUSTOMERS="200",
    )
    assert run.code == 0, run.output
    assert "No tasks defined" not in run.output
    assert (
        "not spawned, no task left by the tag options: BatchBulkUser, E2EUser, HotCustomerUser" in run.output
    )
    assert "WeChatTroubleUser" in run.output.split("not spawned")[1].splitlines()[0]
    assert run.requests("outcome", "duplicate") > 0


def test_tags_that_leave_no_task_stop_at_once(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "locust", "--headless", "-t", "2s", "--tags", "no-such-tag"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "the tag options leave no task in" in done.stderr
