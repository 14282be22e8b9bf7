"""The locustfile loads, offers every scenario and tag, and exports a load shape only when asked.

Locust monkey-patches the process it is imported in (gevent), so it is imported in a child process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json
from locust import FastHttpUser, LoadTestShape, User, events
import loadtest.locustfile as lf
users = {
    name: {
        "fast_http": issubclass(obj, FastHttpUser),
        "fixed_count": obj.fixed_count,
        "tags": sorted({t for task in obj.tasks for t in getattr(task, "locust_tag_set", ())}),
    }
    for name, obj in vars(lf).items()
    if isinstance(obj, type) and issubclass(obj, User) and not obj.abstract and obj.__module__ == lf.__name__
}
shapes = [obj.__name__ for obj in vars(lf).values()
          if isinstance(obj, type) and issubclass(obj, LoadTestShape) and not obj.abstract]
print(json.dumps({
    "users": users,
    "shape": shapes[0] if shapes else None,
    "quitting": [h.__name__ for h in events.quitting._handlers],
}))
"""
SCENARIOS = {
    "SteadyUser",
    "BatchBulkUser",
    "DuplicateStormUser",
    "HotCustomerUser",
    "E2EUser",
    "WeChatTroubleUser",
}


def _probe(**env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGW_LOCUST_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return found


@pytest.fixture(scope="module")
def plain() -> dict[str, Any]:
    return _probe()


def test_every_scenario_is_a_user_class(plain: dict[str, Any]) -> None:
    assert set(plain["users"]) == SCENARIOS
    assert all(user["fast_http"] for user in plain["users"].values())
    assert plain["users"]["WeChatTroubleUser"]["fixed_count"] == 1


def test_steady_tasks_are_tagged(plain: dict[str, Any]) -> None:
    assert set(plain["users"]["SteadyUser"]["tags"]) == {"single", "batch", "duplicate", "invalid", "status"}


def test_exit_code_listener_is_registered(plain: dict[str, Any]) -> None:
    assert "_exit_code_policy" in plain["quitting"]


def test_no_shape_unless_asked(plain: dict[str, Any]) -> None:
    assert plain["shape"] is None  # otherwise Locust would ignore -u/-r


def test_shape_from_the_environment() -> None:
    assert _probe(PUSHGW_LOCUST_SHAPE="spike")["shape"] == "SpikeShape"
