"""Latency distributions: parameters checked, draws bounded and replayed by a seed."""

from __future__ import annotations

import random
import statistics

import pytest

from wechatsim.latency import LatencyDist, LatencyError, parse_latency


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ([], "must be an object"),
        ({"kind": "normal"}, "latency_dist.kind"),
        ({"kind": "fixed"}, "latency_dist.ms is required"),
        ({"kind": "fixed", "ms": -1}, "latency_dist.ms"),
        ({"kind": "uniform", "low_ms": 5, "high_ms": 1}, "high_ms must be >= low_ms"),
        ({"kind": "lognormal", "median_ms": 0, "sigma": 1}, "latency_dist.median_ms"),
        ({"kind": "pareto", "scale_ms": 10, "alpha": True}, "latency_dist.alpha"),
        ({"kind": "pareto", "scale_ms": 10, "alpha": 1, "sigma": 1}, "unknown key 'sigma'"),
        ({"kind": "fixed", "ms": 1, "max_ms": "x"}, "latency_dist.max_ms"),
    ],
)
def test_bad_distributions_name_the_field(raw: object, fragment: str) -> None:
    with pytest.raises(LatencyError) as caught:
        parse_latency(raw)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "fixed", "ms": 20, "max_ms": 60000},
        {"kind": "uniform", "low_ms": 5, "high_ms": 50, "max_ms": 60000},
        {"kind": "lognormal", "median_ms": 20, "sigma": 1, "max_ms": 500},
        {"kind": "pareto", "scale_ms": 10, "alpha": 1.5, "max_ms": 1000},
    ],
)
def test_draws_are_bounded_replayable_and_round_trip(raw: dict[str, object]) -> None:
    dist = parse_latency(raw)
    assert dist is not None and dist.to_json() == raw
    first = [dist.draw_ms(random.Random(5)) for _ in range(3)]
    rng_a, rng_b = random.Random(9), random.Random(9)
    draws = [dist.draw_ms(rng_a) for _ in range(2000)]
    assert draws == [dist.draw_ms(rng_b) for _ in range(2000)]
    assert first[0] == first[1] == first[2]
    assert all(0 <= d <= dist.max_ms for d in draws)


def test_shapes() -> None:
    rng = random.Random(1)
    assert LatencyDist("fixed", 7).draw_ms(rng) == 7
    uniform = [LatencyDist("uniform", 5, 10).draw_ms(rng) for _ in range(1000)]
    assert 5 <= min(uniform) and max(uniform) <= 10
    lognormal = [LatencyDist("lognormal", 20, 1.0, 1e6).draw_ms(rng) for _ in range(4000)]
    assert 15 < statistics.median(lognormal) < 25
    pareto = [LatencyDist("pareto", 10, 1.5, 1e6).draw_ms(rng) for _ in range(4000)]
    assert min(pareto) >= 10
    assert max(pareto) > 20 * statistics.median(pareto), "a long tail"
    assert LatencyDist("pareto", 10, 0.5, 100).draw_ms(rng) <= 100
