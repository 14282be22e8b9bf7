"""The circuit breaker per appid: closed, open after N failures, one half-open probe, pause, close."""

from __future__ import annotations

from prometheus_client import REGISTRY

from workers.breaker import Breaker

APP = "wx_app"


class ManualClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _breaker(failures: int = 3, open_s: float = 10.0) -> tuple[Breaker, ManualClock]:
    clock = ManualClock()
    return Breaker(failures, open_s, clock=clock), clock


def test_closed_lets_calls_through_below_the_threshold() -> None:
    breaker, _ = _breaker()
    breaker.failed(APP)
    breaker.failed(APP)
    assert breaker.blocked_for_s(APP) == 0.0
    assert breaker.blocked_for_s(APP) == 0.0


def test_a_success_resets_the_consecutive_count() -> None:
    breaker, _ = _breaker()
    breaker.failed(APP)
    breaker.failed(APP)
    breaker.succeeded(APP)
    breaker.failed(APP)
    breaker.failed(APP)
    assert breaker.blocked_for_s(APP) == 0.0


def test_opens_after_threshold_failures_for_open_s() -> None:
    breaker, clock = _breaker()
    for _ in range(3):
        breaker.failed(APP)
    assert breaker.blocked_for_s(APP) == 10.0
    clock.now_s += 4
    assert breaker.blocked_for_s(APP) == 6.0


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker, clock = _breaker()
    for _ in range(3):
        breaker.failed(APP)
    clock.now_s += 10
    assert breaker.blocked_for_s(APP) == 0.0  # the probe
    assert breaker.blocked_for_s(APP) > 0  # everyone else waits for its answer
    assert breaker.blocked_for_s(APP) > 0


def test_probe_success_closes_the_circuit() -> None:
    breaker, clock = _breaker()
    for _ in range(3):
        breaker.failed(APP)
    clock.now_s += 10
    assert breaker.blocked_for_s(APP) == 0.0
    breaker.succeeded(APP)
    assert [breaker.blocked_for_s(APP) for _ in range(5)] == [0.0] * 5


def test_probe_failure_opens_the_circuit_again() -> None:
    breaker, clock = _breaker()
    for _ in range(3):
        breaker.failed(APP)
    clock.now_s += 10
    assert breaker.blocked_for_s(APP) == 0.0
    breaker.failed(APP)
    assert breaker.blocked_for_s(APP) == 10.0


def test_pause_opens_for_the_given_time_and_never_shortens() -> None:
    breaker, clock = _breaker()
    breaker.pause(APP, 60.0, "daily quota reached")
    assert breaker.blocked_for_s(APP) == 60.0
    breaker.pause(APP, 5.0, "shorter")
    assert breaker.blocked_for_s(APP) == 60.0
    clock.now_s += 60
    assert breaker.blocked_for_s(APP) == 0.0  # a pause without failures needs no probe


def test_a_pause_without_alert_holds_calls_but_does_not_raise_the_gauge() -> None:
    breaker, _ = _breaker()
    appid = "wx_minute_quota_app"
    breaker.pause(appid, 20.0, "minute quota reached", alert=False)
    assert breaker.blocked_for_s(appid) == 20.0
    assert REGISTRY.get_sample_value("pushgw_circuit_open", {"appid": appid}) in (None, 0.0)
    breaker.pause(appid, 30.0, "daily quota reached")
    assert REGISTRY.get_sample_value("pushgw_circuit_open", {"appid": appid}) == 1.0


def test_appids_are_independent() -> None:
    breaker, _ = _breaker()
    for _ in range(3):
        breaker.failed(APP)
    assert breaker.blocked_for_s(APP) > 0
    assert breaker.blocked_for_s("wx_other") == 0.0


def test_a_probe_that_reports_neither_way_does_not_hold_the_circuit_forever() -> None:
    """A probe answered 43004 (or lost to a Redis error or a shutdown) reports neither success nor failure;
    after another open period the next call may probe."""
    breaker, clock = _breaker()
    for _ in range(3):
        breaker.failed(APP)
    clock.now_s += 10
    assert breaker.blocked_for_s(APP) == 0.0  # the probe, never reported
    assert breaker.blocked_for_s(APP) > 0
    clock.now_s += 10
    assert breaker.blocked_for_s(APP) == 0.0  # a new probe
    assert breaker.blocked_for_s(APP) > 0
    breaker.succeeded(APP)
    assert breaker.blocked_for_s(APP) == 0.0
