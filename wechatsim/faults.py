"""Fault injection for template sends: latency, errcode and HTTP 5xx rates, outage, a scripted answer queue.

The JSON shape (every key optional; unknown keys are refused):

    {"latency_ms": 0, "latency_jitter_ms": 0,          # every send answer waits latency + uniform(0, jitter)
     "errcode_rates": {"-1": 0.05, "45011": 0.01},      # probability of each forced errcode per send
     "http_5xx_rate": 0.0,                              # probability of an HTTP 502 per send
     "outage": false,                                   # every /cgi-bin call answers HTTP 503
     "script": [{"errcode": -1}, {"http_status": 502}, {"delay_ms": 3000}],
     "seed": 0,                                         # the random source; default: the simulator's seed
     "daily_quota": null, "minute_quota": null,         # override the configured quotas (null: keep)
     "qps": null,                                       # override the per-app sends per second (0: none)
     "latency_dist": {"kind": "lognormal", "median_ms": 20, "sigma": 1},  # added latency (see latency.py)
     "slow_rate": 0.0, "slow_ms": 0,                    # probability of a slow answer, and how slow
     "reset_rate": 0.0,                                 # probability of closing the connection unanswered
     "outage_start_s": null, "outage_end_s": null,      # an outage window in unix seconds (either open)
     "outage_for_s": null,                              # or: an outage from now for this many seconds
     "callback": {...}}                                 # finish events (see callback.py; null: from env)

A script step is consumed by each send that passes validation and replaces the random draw for it:
`errcode` answers that errcode (0 means "answer normally"), `http_status` answers that 5xx status, and
`delay_ms` (alone or with either) makes the answer that much slower; a slow normal answer is processed and
delivered before the wait, like a WeChat reply lost to a client timeout. `reset: true` closes the connection
without an answer and without processing the send.

Random draws, in this order per send: errcode/5xx, reset, slow, then the latency; the same seed and the same
sends replay the same faults. Finish-event draws use a second generator of the same seed.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from wechatsim.callback import CallbackConfig, CallbackError, parse_callback
from wechatsim.latency import LatencyDist, LatencyError, parse_latency

__all__ = ["FaultConfig", "FaultDecision", "FaultError", "FaultInjector", "ScriptStep", "parse_faults"]

_MAX_DELAY_MS = 600_000.0
_RANDOM_5XX_STATUS = 502
_KEYS = frozenset(
    {
        "latency_ms",
        "latency_jitter_ms",
        "errcode_rates",
        "http_5xx_rate",
        "outage",
        "script",
        "seed",
        "daily_quota",
        "minute_quota",
        "qps",
        "latency_dist",
        "slow_rate",
        "slow_ms",
        "reset_rate",
        "outage_start_s",
        "outage_end_s",
        "outage_for_s",
        "callback",
    }
)
_CALLBACK_SEED_OFFSET = 1_000_003


class FaultError(ValueError):
    """A fault configuration is malformed; the message names the offending field."""


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """One forced answer: an errcode or a 5xx status (or neither), optionally delayed."""

    errcode: int | None = None
    http_status: int | None = None
    delay_ms: float = 0.0
    reset: bool = False

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"reset": True} if self.reset else {}
        if self.errcode is not None:
            out["errcode"] = self.errcode
        if self.http_status is not None:
            out["http_status"] = self.http_status
        if self.delay_ms:
            out["delay_ms"] = self.delay_ms
        return out


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """The faults in force; the default injects nothing."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    errcode_rates: Mapping[int, float] = field(default_factory=dict)
    http_5xx_rate: float = 0.0
    outage: bool = False
    script: tuple[ScriptStep, ...] = ()
    seed: int | None = None
    daily_quota: int | None = None
    minute_quota: int | None = None
    qps: int | None = None
    latency_dist: LatencyDist | None = None
    slow_rate: float = 0.0
    slow_ms: float = 0.0
    reset_rate: float = 0.0
    outage_start_s: float | None = None
    outage_end_s: float | None = None
    outage_for_s: float | None = None
    callback: CallbackConfig | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "latency_ms": self.latency_ms,
            "latency_jitter_ms": self.latency_jitter_ms,
            "errcode_rates": {str(code): rate for code, rate in sorted(self.errcode_rates.items())},
            "http_5xx_rate": self.http_5xx_rate,
            "outage": self.outage,
            "script": [step.to_json() for step in self.script],
            "seed": self.seed,
            "daily_quota": self.daily_quota,
            "minute_quota": self.minute_quota,
            "qps": self.qps,
            "latency_dist": None if self.latency_dist is None else self.latency_dist.to_json(),
            "slow_rate": self.slow_rate,
            "slow_ms": self.slow_ms,
            "reset_rate": self.reset_rate,
            "outage_start_s": self.outage_start_s,
            "outage_end_s": self.outage_end_s,
            "outage_for_s": self.outage_for_s,
            "callback": None if self.callback is None else self.callback.to_json(),
        }


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """One send's fate: a forced errcode or HTTP status (None: answer normally), and the wait in seconds."""

    errcode: int | None = None
    http_status: int | None = None
    delay_s: float = 0.0
    reset: bool = False


def _int(raw: object, name: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise FaultError(f"{name} must be an integer, got {raw!r}")
    return raw


def _number(raw: object, name: str, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
        raise FaultError(f"{name} must be a number in [{low:g}, {high:g}], got {raw!r}")
    return float(raw)


def _optional_quota(raw: object, name: str) -> int | None:
    if raw is None:
        return None
    value = _int(raw, name)
    if value < 0:
        raise FaultError(f"{name} must be >= 0 or null, got {value}")
    return value


def _errcode_key(raw: str) -> int:
    try:
        code = int(raw)
    except ValueError:
        raise FaultError(f"errcode_rates: key {raw!r} is not an integer errcode") from None
    if code == 0:
        raise FaultError("errcode_rates: errcode 0 cannot be injected")
    return code


def _rates(raw: object) -> dict[int, float]:
    if not isinstance(raw, Mapping):
        raise FaultError("errcode_rates must be an object of errcode -> probability")
    return {_errcode_key(str(k)): _number(v, f"errcode_rates[{k}]", 0.0, 1.0) for k, v in raw.items()}


def _http_status(raw: object, where: str) -> int:
    status = _int(raw, f"{where}.http_status")
    if not 500 <= status <= 599:
        raise FaultError(f"{where}.http_status must be a 5xx status, got {status}")
    return status


def _step(raw: object, index: int) -> ScriptStep:
    where = f"script[{index}]"
    if not isinstance(raw, Mapping) or not raw:
        raise FaultError(f"{where} must be an object with errcode, http_status or delay_ms")
    unknown = set(raw) - {"errcode", "http_status", "delay_ms", "reset"}
    if unknown:
        raise FaultError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    if "errcode" in raw and "http_status" in raw:
        raise FaultError(f"{where}: give errcode or http_status, not both")
    return ScriptStep(
        errcode=_int(raw["errcode"], f"{where}.errcode") if "errcode" in raw else None,
        http_status=_http_status(raw["http_status"], where) if "http_status" in raw else None,
        delay_ms=_number(raw.get("delay_ms", 0), f"{where}.delay_ms", 0.0, _MAX_DELAY_MS),
        reset=_bool(raw.get("reset", False), f"{where}.reset"),
    )


def _script(raw: object) -> tuple[ScriptStep, ...]:
    if not isinstance(raw, list):
        raise FaultError("script must be a list")
    return tuple(_step(item, i) for i, item in enumerate(raw))


def _bool(raw: object, name: str) -> bool:
    if not isinstance(raw, bool):
        raise FaultError(f"{name} must be true or false, got {raw!r}")
    return raw


def _optional_number(raw: object, name: str, low: float, high: float) -> float | None:
    return None if raw is None else _number(raw, name, low, high)


def _extensions(raw: Mapping[str, object]) -> dict[str, object]:
    """The keys beyond the first set: qps, latency_dist, slow/reset rates, outage window, callback."""
    try:
        latency = parse_latency(raw.get("latency_dist"))
        callback = None if raw.get("callback") is None else parse_callback(raw["callback"])
    except (LatencyError, CallbackError) as exc:
        raise FaultError(str(exc)) from None
    return {
        "qps": _optional_quota(raw.get("qps"), "qps"),
        "latency_dist": latency,
        "slow_rate": _number(raw.get("slow_rate", 0), "slow_rate", 0.0, 1.0),
        "slow_ms": _number(raw.get("slow_ms", 0), "slow_ms", 0.0, _MAX_DELAY_MS),
        "reset_rate": _number(raw.get("reset_rate", 0), "reset_rate", 0.0, 1.0),
        "outage_start_s": _optional_number(raw.get("outage_start_s"), "outage_start_s", 0.0, 1e11),
        "outage_end_s": _optional_number(raw.get("outage_end_s"), "outage_end_s", 0.0, 1e11),
        "outage_for_s": _optional_number(raw.get("outage_for_s"), "outage_for_s", 0.0, 1e9),
        "callback": callback,
    }


def parse_faults(raw: object) -> FaultConfig:
    """A FaultConfig from decoded JSON; raises FaultError naming the first bad field."""
    if not isinstance(raw, Mapping):
        raise FaultError("faults must be a JSON object")
    unknown = set(raw) - _KEYS
    if unknown:
        raise FaultError(f"unknown fault key {sorted(unknown)[0]!r}")
    config = FaultConfig(
        latency_ms=_number(raw.get("latency_ms", 0), "latency_ms", 0.0, _MAX_DELAY_MS),
        latency_jitter_ms=_number(raw.get("latency_jitter_ms", 0), "latency_jitter_ms", 0.0, _MAX_DELAY_MS),
        errcode_rates=_rates(raw.get("errcode_rates", {})),
        http_5xx_rate=_number(raw.get("http_5xx_rate", 0), "http_5xx_rate", 0.0, 1.0),
        outage=_bool(raw.get("outage", False), "outage"),
        script=_script(raw.get("script", [])),
        seed=None if raw.get("seed") is None else _int(raw["seed"], "seed"),
        daily_quota=_optional_quota(raw.get("daily_quota"), "daily_quota"),
        minute_quota=_optional_quota(raw.get("minute_quota"), "minute_quota"),
        **_extensions(raw),  # type: ignore[arg-type]  # checked field by field in _extensions
    )
    if config.outage_for_s is not None and (config.outage_start_s or config.outage_end_s) is not None:
        raise FaultError("outage_for_s excludes outage_start_s and outage_end_s")
    if sum(config.errcode_rates.values()) + config.http_5xx_rate > 1.0 + 1e-9:
        raise FaultError("errcode_rates and http_5xx_rate must sum to at most 1")
    return config


class FaultInjector:
    """Draws the fault for each send from the config in force, deterministically under its seed."""

    def __init__(self, default_seed: int, clock: Callable[[], float] = time.time) -> None:
        self._default_seed = default_seed
        self._clock = clock
        self._config = FaultConfig()
        self._script: deque[ScriptStep] = deque()
        self._rng = random.Random(default_seed)  # noqa: S311 - fault draws, not secrets
        self.callback_rng = random.Random(default_seed + _CALLBACK_SEED_OFFSET)  # noqa: S311 - as above

    @property
    def config(self) -> FaultConfig:
        """The config in force, its script holding only the steps not yet consumed."""
        return replace(self._config, script=tuple(self._script))

    def set(self, config: FaultConfig) -> None:
        """Replace the config in force and restart the random sources from its seed.

        `outage_for_s` becomes the window [now, now + outage_for_s) in `outage_start_s`/`outage_end_s`.
        """
        if config.outage_for_s is not None:
            now_s = self._clock()
            config = replace(config, outage_start_s=now_s, outage_end_s=now_s + config.outage_for_s)
        self._config = config
        self._script = deque(config.script)
        seed = self._default_seed if config.seed is None else config.seed
        self._rng = random.Random(seed)  # noqa: S311 - fault draws, not secrets
        self.callback_rng = random.Random(seed + _CALLBACK_SEED_OFFSET)  # noqa: S311 - as above

    def reset(self) -> None:
        self.set(FaultConfig())

    @property
    def outage(self) -> bool:
        """Whether the API is down now: the `outage` switch, or now inside the outage window."""
        config = self._config
        if config.outage:
            return True
        if config.outage_start_s is None and config.outage_end_s is None:
            return False
        now_s = self._clock()
        start_s = config.outage_start_s if config.outage_start_s is not None else -math.inf
        end_s = config.outage_end_s if config.outage_end_s is not None else math.inf
        return start_s <= now_s < end_s

    @property
    def qps_override(self) -> int | None:
        return self._config.qps

    @property
    def callback(self) -> CallbackConfig | None:
        """The finish-event config the faults set (None: keep the simulator's own)."""
        return self._config.callback

    @property
    def quota_overrides(self) -> tuple[int | None, int | None]:
        """The (daily, minute) quotas the faults impose; None keeps the configured one."""
        return self._config.daily_quota, self._config.minute_quota

    def _latency_s(self) -> float:
        jitter_ms = self._config.latency_jitter_ms
        if jitter_ms:
            jitter_ms = self._rng.uniform(0.0, jitter_ms)
        dist = self._config.latency_dist
        extra_ms = 0.0 if dist is None else dist.draw_ms(self._rng)
        return (self._config.latency_ms + jitter_ms + extra_ms) / 1000.0

    def _chance(self, rate: float) -> bool:
        return bool(rate) and self._rng.random() < rate

    def _draw(self) -> tuple[int | None, int | None]:
        roll = self._rng.random()
        cumulative = 0.0
        for errcode, rate in sorted(self._config.errcode_rates.items()):
            cumulative += rate
            if roll < cumulative:
                return errcode, None
        if roll < cumulative + self._config.http_5xx_rate:
            return None, _RANDOM_5XX_STATUS
        return None, None

    def decide(self) -> FaultDecision:
        """The fault for the next send: the next script step if any, else one random draw; plus latency."""
        if self._script:
            step = self._script.popleft()
            errcode = step.errcode or None
            delay_s = self._latency_s() + step.delay_ms / 1000.0
            return FaultDecision(errcode, step.http_status, delay_s, step.reset)
        errcode, status = self._draw()
        reset = self._chance(self._config.reset_rate)
        slow_s = self._config.slow_ms / 1000.0 if self._chance(self._config.slow_rate) else 0.0
        return FaultDecision(errcode, status, self._latency_s() + slow_s, reset)
