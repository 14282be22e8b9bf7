"""Retry delays: exponential backoff with full jitter, capped (one formula, random source injectable)."""

from __future__ import annotations

import random
from collections.abc import Callable

Uniform = Callable[[float, float], float]


def backoff_s(attempt: int, base_s: float, cap_s: float, uniform: Uniform = random.uniform) -> float:
    """Delay before retry `attempt` (1 = the first): uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(cap_s, base_s * 2 ** min(attempt - 1, 62))
    return uniform(0.0, ceiling)
