"""The pure parts of the Locust run: settings from `PUSHGW_LOCUST_*`, the customer pool's size, event
outcomes, load-shape stages and the exit-code policy.

Nothing here imports Locust (it monkey-patches the process), so tests and tools can use it freely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.core.settings import ConfigError, RateLimit, Settings, parse_setting

DEFAULT_MAX_FAILURE_RATIO = 0.01
DEFAULT_RATE_LIMIT: RateLimit = Settings.rate_limit  # the gateway's default
POOL_HEADROOM = 5.0
"""The customer pool is sized so the per-customer rate limit admits this many times the planned event rate."""
MIN_CUSTOMERS = 100

ACCEPTED = ("queued", "duplicate", "digested", "suppressed")
"""Answers that accept an event (202/200), as the gateway names them."""
OUTCOMES = (*ACCEPTED, "rejected", "rate_limited", "unavailable", "error")
"""What became of each event sent, counted per event (a batch counts each item): the accepting answers, then
`rejected` (400/413/422: bad input), `rate_limited` (429, PUSHGW_RATE_POLICY=reject), `unavailable` (503: shed
or Redis down) and `error` (anything else: other HTTP codes, no answer)."""


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


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"", "0", "false", "no", "off"}:
        return False
    raise PolicyError(f"{name}={raw!r} must be true or false")


def _rate_limit(env: Mapping[str, str]) -> RateLimit:
    raw = env.get("PUSHGW_RATE_LIMIT", "").strip()
    if not raw:
        return DEFAULT_RATE_LIMIT
    try:
        limit: RateLimit = parse_setting("rate_limit", raw)
    except ConfigError as exc:
        raise PolicyError(str(exc)) from None
    return limit


@dataclass(frozen=True)
class LocustConfig:
    """What the locustfile reads from the environment, once."""

    key_id: str = "cbs"
    secret: str = ""  # empty: unsigned requests (what `pushgw dev`'s open ingress takes)
    customers: int | None = None  # None: sized at test start from the planned load (pool_size)
    rate_limit: RateLimit = field(default=DEFAULT_RATE_LIMIT)  # the gateway's PUSHGW_RATE_LIMIT
    sim_url: str = "http://127.0.0.1:8090"
    shape: str = ""  # "", "step" or "spike"
    inject_faults: bool = False  # WeChatTroubleUser runs (one per run) only when this is on
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
        customers = _float(env, "PUSHGW_LOCUST_CUSTOMERS", None)
        max_failure_ratio = _float(env, "PUSHGW_LOCUST_MAX_FAILURE_RATIO", DEFAULT_MAX_FAILURE_RATIO)
        e2e_timeout_s = _float(env, "PUSHGW_LOCUST_E2E_TIMEOUT_S", 30.0)
        if max_failure_ratio is None or e2e_timeout_s is None:  # defaults given
            raise PolicyError("unreachable: defaults are numbers")
        return cls(
            key_id=env.get("PUSHGW_LOCUST_KEY_ID", "cbs"),
            secret=env.get("PUSHGW_LOCUST_SECRET", ""),
            customers=None if customers is None else max(1, int(customers)),
            rate_limit=_rate_limit(env),
            sim_url=env.get("PUSHGW_LOCUST_SIM_URL", "http://127.0.0.1:8090").rstrip("/"),
            shape=shape,
            inject_faults=_flag(env, "PUSHGW_LOCUST_INJECT_FAULTS"),
            max_failure_ratio=max_failure_ratio,
            max_p99_ms=_float(env, "PUSHGW_LOCUST_MAX_P99_MS", None),
            e2e_timeout_s=e2e_timeout_s,
        )

    def policy(self) -> str:
        """The exit-code policy in words, with the variables that set it."""
        p99 = (
            f"p99 <= {self.max_p99_ms:.0f} ms"
            if self.max_p99_ms is not None
            else "no p99 limit (PUSHGW_LOCUST_MAX_P99_MS unset)"
        )
        return (
            f"exit 0 when failure ratio <= {self.max_failure_ratio:.2%} (PUSHGW_LOCUST_MAX_FAILURE_RATIO), "
            f"{p99} and no exception in the locustfile's users; else exit 1"
        )


@dataclass(frozen=True)
class Verdict:
    """A finished run judged by the policy: the exit code, why it failed (empty: passed) and every check
    with its figures."""

    code: int
    reasons: list[str]
    checks: list[str]

    def __str__(self) -> str:
        return (
            f"load-test policy {'FAIL' if self.code else 'PASS'} (exit {self.code}): {'; '.join(self.checks)}"
        )


def exit_verdict(
    failure_ratio: float,
    p99_ms: float | None,
    max_failure_ratio: float,
    max_p99_ms: float | None,
    exceptions: int = 0,
) -> Verdict:
    """Judge a finished run: exit 0 passes, 1 fails; Locust's own "any failure exits 1" does not apply.

    p99_ms is the aggregated 99th percentile response time (None when nothing was measured); a None
    max_p99_ms turns the latency check off. Equal to a threshold passes. `exceptions` counts errors raised in
    the locustfile's users (a broken load test never passes)."""
    checks, reasons = [], []
    ratio = f"failure ratio {failure_ratio:.2%}"
    if failure_ratio > max_failure_ratio:
        reasons.append(f"{ratio} > {max_failure_ratio:.2%}")
        checks.append(reasons[-1])
    else:
        checks.append(f"{ratio} <= {max_failure_ratio:.2%}")
    p99 = "p99 -" if p99_ms is None else f"p99 {p99_ms:.0f} ms"
    if max_p99_ms is None:
        checks.append(f"{p99} (no limit)")
    elif p99_ms is not None and p99_ms > max_p99_ms:
        reasons.append(f"{p99} > {max_p99_ms:.0f} ms")
        checks.append(reasons[-1])
    else:
        checks.append(f"{p99} <= {max_p99_ms:.0f} ms")
    if exceptions:
        reasons.append(f"{exceptions} exception(s) in the locustfile's users")
        checks.append(reasons[-1])
    else:
        checks.append("no exceptions")
    return Verdict(1 if reasons else 0, reasons, checks)


def outcome_of(http_status: int, status: str = "") -> str:
    """The outcome of one event from its HTTP answer and, on 200/202, the body's (or batch item's) status."""
    if http_status in (200, 202):
        return status if status in OUTCOMES else "error"
    if http_status == 429:
        return "rate_limited"
    if http_status in (400, 413, 422):
        return "rejected"
    if http_status == 503:
        return "unavailable"
    return "error"


def users_per_class(users: int, classes: Mapping[str, tuple[float, int]]) -> dict[str, float]:
    """How many of `users` users each class gets, as Locust dispatches them: each class's fixed count first,
    the rest shared by weight. `classes` maps a class name to (weight, fixed_count)."""
    share = {name: float(min(fixed, users)) for name, (_, fixed) in classes.items() if fixed}
    left = max(0, users - sum(share.values()))
    weighted = {name: weight for name, (weight, fixed) in classes.items() if not fixed and weight > 0}
    total = sum(weighted.values())
    for name, weight in weighted.items():
        share[name] = left * weight / total
    return share


def pool_size(events_per_s: float, limit: RateLimit, headroom: float = POOL_HEADROOM) -> int:
    """Customers to draw `events_per_s` events from (uniformly) so that the per-customer limit admits
    `headroom` times that rate: customers x count / window_s >= headroom x events_per_s.

    Each customer then gets count/headroom events per window on average (1 with the default 5/60), and few
    ever get more than `count` (Poisson: about 0.06% of events with headroom 5), so the run measures
    deliveries, not digests. At least MIN_CUSTOMERS."""
    return max(MIN_CUSTOMERS, math.ceil(headroom * events_per_s * limit.window_s / limit.count))


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
