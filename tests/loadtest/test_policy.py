"""The Locust run's pure policy: thresholds from the environment, the exit code, the load-shape stages."""

from __future__ import annotations

import pytest

from loadtest.policy import (
    DEFAULT_MAX_FAILURE_RATIO,
    LocustConfig,
    PolicyError,
    spike_stages,
    stage_at,
    step_stages,
)
from loadtest.policy import exit_verdict as verdict


def test_defaults_send_unsigned_requests_with_a_one_percent_failure_budget() -> None:
    config = LocustConfig.from_env({})
    assert not config.signed
    assert config.max_failure_ratio == DEFAULT_MAX_FAILURE_RATIO == 0.01
    assert config.max_p99_ms is None
    assert config.shape == ""


def test_environment_overrides() -> None:
    config = LocustConfig.from_env(
        {
            "PUSHGW_LOCUST_KEY_ID": "cbs2",
            "PUSHGW_LOCUST_SECRET": "s3cret",
            "PUSHGW_LOCUST_MAX_FAILURE_RATIO": "0.05",
            "PUSHGW_LOCUST_MAX_P99_MS": "250",
            "PUSHGW_LOCUST_SHAPE": "Spike",
            "PUSHGW_LOCUST_SIM_URL": "http://sim:8090/",
        }
    )
    assert config.signed and config.key_id == "cbs2"
    assert (config.max_failure_ratio, config.max_p99_ms, config.shape) == (0.05, 250.0, "spike")
    assert config.sim_url == "http://sim:8090"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PUSHGW_LOCUST_MAX_FAILURE_RATIO", "lots"),
        ("PUSHGW_LOCUST_MAX_P99_MS", "-1"),
        ("PUSHGW_LOCUST_SHAPE", "sawtooth"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(PolicyError, match=variable):
        LocustConfig.from_env({variable: value})


@pytest.mark.parametrize(
    ("failure_ratio", "p99_ms", "max_p99_ms", "code"),
    [
        (0.0, 12.0, None, 0),
        (0.01, 12.0, None, 0),  # equal to the threshold passes
        (0.0101, 12.0, None, 1),
        (0.0, 300.0, 250.0, 1),
        (0.0, 250.0, 250.0, 0),
        (0.0, None, 250.0, 0),  # nothing measured: no latency verdict
        (0.5, 900.0, 250.0, 1),
    ],
)
def test_exit_code(failure_ratio: float, p99_ms: float | None, max_p99_ms: float | None, code: int) -> None:
    got, reasons = verdict(failure_ratio, p99_ms, 0.01, max_p99_ms)
    assert got == code
    assert bool(reasons) == bool(code)


def test_both_reasons_are_given() -> None:
    _, reasons = verdict(0.2, 900.0, 0.01, 250.0)
    assert len(reasons) == 2
    assert "failure ratio 20.00%" in reasons[0] and "p99 900 ms" in reasons[1]


def test_step_ramp_climbs_then_stops() -> None:
    stages = step_stages(step_users=10, step_s=30, steps=3, spawn_rate=5)
    assert [stage_at(stages, t) for t in (0, 29.9, 30, 89.9)] == [(10, 5), (10, 5), (20, 5), (30, 5)]
    assert stage_at(stages, 90) is None


def test_spike_jumps_at_once_and_comes_back() -> None:
    stages = spike_stages(base_users=10, spike_users=100, warm_s=30, spike_s=20)
    assert stage_at(stages, 10) == (10, 10)
    assert stage_at(stages, 35) == (100, 100)  # spawned in one second: a spike, not a ramp
    assert stage_at(stages, 60) == (10, 100)
    assert stage_at(stages, 80) is None
