"""The locustfile loads, offers every scenario and tag, exports a load shape only when asked, and imports
nothing that the compose file's stock Locust image lacks (tests/loadtest/test_locust_runs.py runs it).

Locust monkey-patches the process it is imported in (gevent), so it is imported in a child process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys
before = set(sys.modules)  # what the interpreter loaded at start-up (site, .pth files)
import json
from locust import FastHttpUser, LoadTestShape, User, events
import loadtest.locustfile as lf
users = {
    name: {
        "fast_http": issubclass(obj, FastHttpUser),
        "fixed_count": obj.fixed_count,
        "tags": sorted({t for task in obj.tasks for t in getattr(task, "locust_tag_set", ())}),
        "untagged": sum(not getattr(task, "locust_tag_set", None) for task in obj.tasks),
        "pool_events_per_s": obj.pool_events_per_s,
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
    "init": [h.__name__ for h in events.init._handlers],
    "test_start": [h.__name__ for h in events.test_start._handlers],
    "modules": sorted({name.split(".")[0] for name in set(sys.modules) - before}),
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


def test_every_task_is_tagged(plain: dict[str, Any]) -> None:
    assert all(user["untagged"] == 0 for user in plain["users"].values())
    assert "duplicate" in plain["users"]["DuplicateStormUser"]["tags"]
    assert plain["users"]["WeChatTroubleUser"]["tags"] == ["faults"]


def test_the_pool_is_sized_by_the_scenarios_that_draw_from_it(plain: dict[str, Any]) -> None:
    rates = {name: user["pool_events_per_s"] for name, user in plain["users"].items()}
    assert rates["SteadyUser"] == 5 * (0.8 + 0.05 * 30)
    assert rates["BatchBulkUser"] == 100
    assert rates["HotCustomerUser"] == rates["E2EUser"] == rates["WeChatTroubleUser"] == 0  # their own


def test_listeners_are_registered(plain: dict[str, Any]) -> None:
    assert "_exit_code_policy" in plain["quitting"]
    assert "_announce" in plain["init"]  # fault injection opt-in, classes without tasks left out
    assert "_prepare_customers" in plain["test_start"]


def _requirement_names(requirements: list[str]) -> set[str]:
    return {
        re.split(r"[ ;<>=!~\[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
        for line in requirements
    }


def _closure(distribution: str) -> set[str]:
    """The distribution and everything it requires (without extras), by normalised name."""
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend(_requirement_names([r for r in requires if "extra ==" not in r]))
    return seen


def test_the_locust_image_gets_what_the_locustfile_imports(plain: dict[str, Any]) -> None:
    locust = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]["locust"]
    assert locust["image"].startswith("locustio/locust:")
    assert "-r loadtest/requirements-locust.txt" in " ".join(locust["entrypoint"])
    assert "/tmp/pushgw-locust" in locust["environment"]["PYTHONPATH"].split(":")
    lines = (ROOT / "loadtest" / "requirements-locust.txt").read_text().splitlines()
    required = _requirement_names([line for line in lines if line.strip() and not line.startswith("#")])
    available = _closure("locust") | required
    owners = metadata.packages_distributions()
    ours = {"gateway", "workers", "wechatsim", "loadtest"}
    third_party = {m for m in plain["modules"] if m not in sys.stdlib_module_names and m not in ours}
    missing = {
        module
        for module in third_party
        if module in owners and not {d.lower().replace("_", "-") for d in owners[module]} & available
    }
    assert not missing, (
        f"the compose Locust image lacks {missing}: add them to loadtest/requirements-locust.txt"
    )
    assert "orjson" in third_party and "orjson" in required


def test_no_shape_unless_asked(plain: dict[str, Any]) -> None:
    assert plain["shape"] is None  # otherwise Locust would ignore -u/-r


def test_shape_from_the_environment() -> None:
    assert _probe(PUSHGW_LOCUST_SHAPE="spike")["shape"] == "SpikeShape"
