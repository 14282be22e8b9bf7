"""The Locust run's pure policy: thresholds from the environment, the exit code and its words, event
outcomes, the customer pool's size, the load-shape stages."""

from __future__ import annotations

import pytest

from gateway.core.settings import RateLimit
from loadtest.policy import (
    DEFAULT_MAX_FAILURE_RATIO,
    MIN_CUSTOMERS,
    OUTCOMES,
    LocustConfig,
    PolicyError,
    outcome_of,
    pool_size,
    spike_stages,
    stage_at,
    step_stages,
    users_per_class,
)
from loadtest.policy import exit_verdict as verdict


def test_defaults_send_unsigned_requests_with_a_one_percent_failure_budget() -> None:
    config = LocustConfig.from_env({})
    assert not config.signed
    assert config.max_failure_ratio == DEFAULT_MAX_FAILURE_RATIO == 0.01
    assert config.max_p99_ms is None
    assert config.shape == ""
    assert not config.inject_faults  # fault injection is opt-in
    assert config.customers is None  # sized at test start
    assert config.rate_limit == RateLimit(5, 60)  # the gateway's default


def test_environment_overrides() -> None:
    config = LocustConfig.from_env(
        {
            "PUSHGW_LOCUST_KEY_ID": "cbs2",
            "PUSHGW_LOCUST_SECRET": "s3cret",
            "PUSHGW_LOCUST_MAX_FAILURE_RATIO": "0.05",
            "PUSHGW_LOCUST_MAX_P99_MS": "250",
            "PUSHGW_LOCUST_SHAPE": "Spike",
            "PUSHGW_LOCUST_SIM_URL": "http://sim:8090/",
            "PUSHGW_LOCUST_INJECT_FAULTS": "yes",
            "PUSHGW_LOCUST_CUSTOMERS": "5000",
            "PUSHGW_RATE_LIMIT": "10/30",
        }
    )
    assert config.signed and config.key_id == "cbs2"
    assert (config.max_failure_ratio, config.max_p99_ms, config.shape) == (0.05, 250.0, "spike")
    assert config.sim_url == "http://sim:8090"
    assert config.inject_faults and config.customers == 5000 and config.rate_limit == RateLimit(10, 30)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PUSHGW_LOCUST_MAX_FAILURE_RATIO", "lots"),
        ("PUSHGW_LOCUST_MAX_P99_MS", "-1"),
        ("PUSHGW_LOCUST_SHAPE", "sawtooth"),
        ("PUSHGW_LOCUST_INJECT_FAULTS", "maybe"),
        ("PUSHGW_RATE_LIMIT", "5 per minute"),
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
    got = verdict(failure_ratio, p99_ms, 0.01, max_p99_ms)
    assert got.code == code
    assert bool(got.reasons) == bool(code)


def test_failures_under_the_threshold_pass() -> None:
    # the engineer's run: 3.16% failures against a 0.5 threshold must exit 0 (Locust alone exits 1)
    got = verdict(0.0316, 65.0, 0.5, None)
    assert got.code == 0
    expected = "failure ratio 3.16% <= 50.00%; p99 65 ms (no limit); no exceptions"
    assert str(got) == f"load-test policy PASS (exit 0): {expected}"


def test_every_reason_is_given() -> None:
    got = verdict(0.2, 900.0, 0.01, 250.0, exceptions=3)
    assert len(got.reasons) == 3
    assert "failure ratio 20.00% > 1.00%" in got.reasons[0] and "p99 900 ms > 250 ms" in got.reasons[1]
    assert "3 exception(s)" in got.reasons[2]
    assert str(got).startswith("load-test policy FAIL (exit 1): failure ratio 20.00% > 1.00%; p99 900 ms")


def test_the_policy_is_said_in_words() -> None:
    assert "failure ratio <= 1.00% (PUSHGW_LOCUST_MAX_FAILURE_RATIO)" in LocustConfig().policy()
    assert "no p99 limit" in LocustConfig().policy()
    assert "p99 <= 250 ms" in LocustConfig(max_p99_ms=250.0).policy()


@pytest.mark.parametrize(
    ("http_status", "status", "outcome"),
    [
        (202, "queued", "queued"),
        (202, "digested", "digested"),
        (202, "suppressed", "suppressed"),
        (200, "duplicate", "duplicate"),
        (200, "rejected", "rejected"),  # a batch item
        (200, "rate_limited", "rate_limited"),  # a batch item
        (202, "something new", "error"),
        (429, "", "rate_limited"),
        (422, "", "rejected"),
        (400, "", "rejected"),
        (413, "", "rejected"),
        (503, "", "unavailable"),
        (401, "", "error"),
        (0, "", "error"),  # no answer
    ],
)
def test_outcomes(http_status: int, status: str, outcome: str) -> None:
    assert outcome_of(http_status, status) == outcome
    assert outcome in OUTCOMES


def test_users_are_shared_as_locust_dispatches_them() -> None:
    classes = {"Steady": (10.0, 0), "Bulk": (2.0, 0), "Trouble": (1.0, 1), "Off": (0.0, 0)}
    assert users_per_class(13, classes) == {"Trouble": 1.0, "Steady": 10.0, "Bulk": 2.0}
    assert users_per_class(1, classes) == {"Trouble": 1.0, "Steady": 0.0, "Bulk": 0.0}


def test_the_pool_admits_five_times_the_planned_rate() -> None:
    limit = RateLimit(5, 60)
    customers = pool_size(200.0, limit)
    assert customers == 12_000
    assert customers * limit.count / limit.window_s == 5 * 200.0
    assert pool_size(0.0, limit) == MIN_CUSTOMERS
    assert pool_size(200.0, RateLimit(50, 60)) == 1_200  # a looser limit needs fewer customers


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
