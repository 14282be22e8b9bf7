"""Retry backoff: exponential with full jitter, capped, its random source injected."""

from __future__ import annotations

import random

import pytest

from workers.backoff import backoff_s


def _bounds(attempt: int, base_s: float, cap_s: float) -> tuple[float, float]:
    seen: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        seen.append((low, high))
        return high

    backoff_s(attempt, base_s, cap_s, uniform)
    [bounds] = seen
    return bounds


def test_schedule_doubles_from_base_until_the_cap() -> None:
    ceilings = [_bounds(attempt, 1.0, 300.0)[1] for attempt in range(1, 12)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]


def test_full_jitter_draws_from_zero() -> None:
    assert {_bounds(attempt, 0.05, 0.2)[0] for attempt in range(1, 8)} == {0.0}


def test_the_delay_is_what_the_random_source_draws() -> None:
    assert backoff_s(3, 1.0, 300.0, lambda low, high: (low + high) / 2) == 2.0
    assert backoff_s(3, 1.0, 300.0, lambda low, high: low) == 0.0


@pytest.mark.parametrize("attempt", [1, 5, 64, 1000, 10**6])
def test_huge_attempts_stay_at_the_cap_without_overflow(attempt: int) -> None:
    low, high = _bounds(attempt, 1.0, 300.0)
    assert low == 0.0
    assert high == (2.0 ** (attempt - 1) if attempt < 9 else 300.0)


def test_real_random_delays_stay_within_full_jitter_bounds() -> None:
    rng = random.Random(7)
    for attempt in range(1, 20):
        ceiling = min(0.2, 0.05 * 2 ** (attempt - 1))
        for _ in range(50):
            assert 0.0 <= backoff_s(attempt, 0.05, 0.2, rng.uniform) <= ceiling
