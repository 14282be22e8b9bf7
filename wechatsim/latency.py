"""Latency distributions for injected delays: fixed, uniform, lognormal and pareto (long tail), all capped.

The JSON shape (the `latency_dist` fault key), milliseconds throughout:

    {"kind": "fixed", "ms": 20}
    {"kind": "uniform", "low_ms": 5, "high_ms": 50}
    {"kind": "lognormal", "median_ms": 20, "sigma": 1.0, "max_ms": 5000}   # median exp(mu); sigma of ln
    {"kind": "pareto", "scale_ms": 10, "alpha": 1.5, "max_ms": 5000}       # heavy tail from scale_ms up

`max_ms` (default 60000) caps every draw. Draws take a `random.Random`, so a seed replays them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LatencyDist", "LatencyError", "parse_latency"]

_MAX_MS = 600_000.0
_DEFAULT_CAP_MS = 60_000.0
_PARAMS = {
    "fixed": ("ms",),
    "uniform": ("low_ms", "high_ms"),
    "lognormal": ("median_ms", "sigma"),
    "pareto": ("scale_ms", "alpha"),
}


class LatencyError(ValueError):
    """A latency distribution is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class LatencyDist:
    """One distribution: its kind, its two parameters (the second unused by `fixed`), and a cap."""

    kind: str
    a: float
    b: float = 0.0
    max_ms: float = _DEFAULT_CAP_MS

    def draw_ms(self, rng: random.Random) -> float:
        """One delay in milliseconds, in [0, max_ms]."""
        if self.kind == "fixed":
            value = self.a
        elif self.kind == "uniform":
            value = rng.uniform(self.a, self.b)
        elif self.kind == "lognormal":
            value = rng.lognormvariate(math.log(self.a), self.b)
        else:
            value = self.a * rng.paretovariate(self.b)
        return min(max(value, 0.0), self.max_ms)

    def to_json(self) -> dict[str, object]:
        names = _PARAMS[self.kind]
        out: dict[str, object] = {"kind": self.kind, names[0]: self.a}
        if len(names) > 1:
            out[names[1]] = self.b
        out["max_ms"] = self.max_ms
        return out


def _number(raw: object, name: str, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
        raise LatencyError(f"latency_dist.{name} must be a number in [{low:g}, {high:g}], got {raw!r}")
    return float(raw)


def parse_latency(raw: object) -> LatencyDist | None:
    """A LatencyDist from decoded JSON (None stays None); raises LatencyError naming the bad field."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise LatencyError("latency_dist must be an object with a kind")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in _PARAMS:
        raise LatencyError(f"latency_dist.kind must be one of {sorted(_PARAMS)}, got {kind!r}")
    names = _PARAMS[kind]
    unknown = set(raw) - {"kind", "max_ms", *names}
    if unknown:
        raise LatencyError(f"latency_dist: unknown key {sorted(unknown)[0]!r} for kind {kind!r}")
    missing = [name for name in names if name not in raw]
    if missing:
        raise LatencyError(f"latency_dist.{missing[0]} is required for kind {kind!r}")
    low = 1e-3 if kind in {"lognormal", "pareto"} else 0.0
    a = _number(raw[names[0]], names[0], low, _MAX_MS)
    b = 0.0
    if len(names) > 1:
        b = _number(raw[names[1]], names[1], 0.0 if kind == "uniform" else 1e-3, _MAX_MS)
    if kind == "uniform" and b < a:
        raise LatencyError("latency_dist.high_ms must be >= low_ms")
    cap = _number(raw.get("max_ms", _DEFAULT_CAP_MS), "max_ms", 0.0, _MAX_MS)
    return LatencyDist(kind, a, b, cap)
