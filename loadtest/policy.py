"""The pure parts of the Locust run: settings from `PUSHGW_LOCUST_*`, load-shape stages, the exit-code policy.

Nothing here imports Locust (it monkey-patches the process), so tests and tools can use it freely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_MAX_FAILURE_RATIO = 0.01


class PolicyError(ValueError):
    """A `PUSHGW_LOCUST_*` variable has a value that cannot be used; the message names it."""


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise PolicyError(f"{name}={raw!r} is not a number") from None
    if value < 0 or math.isnan(value):
        raise PolicyError(f"{name}={raw!r} must be >= 0")
    return value


@dataclass(frozen=True)
class LocustConfig:
    """What the locustfile reads from the environment, once."""

    key_id: str = "cbs"
    secret: str = ""  # empty: unsigned requests (what `pushgw dev`'s open ingress takes)
    customers: int = 10_000
    sim_url: str = "http://127.0.0.1:8090"
    shape: str = ""  # "", "step" or "spike"
    max_failure_ratio: float = DEFAULT_MAX_FAILURE_RATIO
    max_p99_ms: float | None = None
    e2e_timeout_s: float = 30.0

    @property
    def signed(self) -> bool:
        return bool(self.secret)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocustConfig:
        shape = env.get("PUSHGW_LOCUST_SHAPE", "").strip().lower()
        if shape not in SHAPES:
            raise PolicyError(f"PUSHGW_LOCUST_SHAPE={shape!r} must be one of {', '.join(SHAPES)} or empty")
        customers = _float(env, "PUSHGW_LOCUST_CUSTOMERS", 10_000)
        max_failure_ratio = _float(env, "PUSHGW_LOCUST_MAX_FAILURE_RATIO", DEFAULT_MAX_FAILURE_RATIO)
        e2e_timeout_s = _float(env, "PUSHGW_LOCUST_E2E_TIMEOUT_S", 30.0)
        if customers is None or max_failure_ratio is None or e2e_timeout_s is None:  # defaults given
            raise PolicyError("unreachable: defaults are numbers")
        return cls(
            key_id=env.get("PUSHGW_LOCUST_KEY_ID", "cbs"),
            secret=env.get("PUSHGW_LOCUST_SECRET", ""),
            customers=max(1, int(customers)),
            sim_url=env.get("PUSHGW_LOCUST_SIM_URL", "http://127.0.0.1:8090").rstrip("/"),
            shape=shape,
            max_failure_ratio=max_failure_ratio,
            max_p99_ms=_float(env, "PUSHGW_LOCUST_MAX_P99_MS", None),
            e2e_timeout_s=e2e_timeout_s,
        )


def exit_verdict(
    failure_ratio: float, p99_ms: float | None, max_failure_ratio: float, max_p99_ms: float | None
) -> tuple[int, list[str]]:
    """The process exit code for a finished run (0 passes, 1 fails) and the reasons it failed.

    p99_ms is the aggregated 99th percentile response time (None when nothing was measured); a None
    max_p99_ms turns the latency check off. Equal to a threshold passes."""
    reasons = []
    if failure_ratio > max_failure_ratio:
        reasons.append(f"failure ratio {failure_ratio:.2%} > {max_failure_ratio:.2%}")
    if max_p99_ms is not None and p99_ms is not None and p99_ms > max_p99_ms:
        reasons.append(f"p99 {p99_ms:.0f} ms > {max_p99_ms:.0f} ms")
    return (1 if reasons else 0), reasons


@dataclass(frozen=True)
class Stage:
    """Until `end_s` (seconds since the start of the run) hold `users` users, spawning `spawn_rate`/s."""

    end_s: float
    users: int
    spawn_rate: float


def step_stages(
    step_users: int = 10, step_s: float = 30.0, steps: int = 5, spawn_rate: float = 10.0
) -> list[Stage]:
    """A step ramp: `steps` plateaus of `step_s` seconds, each `step_users` more than the last."""
    return [Stage(step_s * (i + 1), step_users * (i + 1), spawn_rate) for i in range(steps)]


def spike_stages(
    base_users: int = 10, spike_users: int = 100, warm_s: float = 30.0, spike_s: float = 20.0
) -> list[Stage]:
    """A steady base, a sudden spike (spawned at once), then the base again to watch the recovery."""
    return [
        Stage(warm_s, base_users, base_users),
        Stage(warm_s + spike_s, spike_users, spike_users),
        Stage(warm_s + spike_s + warm_s, base_users, spike_users),
    ]


def stage_at(stages: Sequence[Stage], run_time_s: float) -> tuple[int, float] | None:
    """(users, spawn_rate) in force at `run_time_s`, or None once the last stage ended (the run stops)."""
    for stage in stages:
        if run_time_s < stage.end_s:
            return stage.users, stage.spawn_rate
    return None


SHAPES = ("", "step", "spike")
