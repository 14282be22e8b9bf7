"""A circuit breaker per WeChat appid: stop hammering a WeChat that is down, let one probe through."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.core import metrics

log = logging.getLogger(__name__)


@dataclass
class _State:
    failures: int = 0
    open_until_s: float = 0.0
    probe_until_s: float = 0.0  # the half-open probe's claim lasts until then


_CLOSED = _State()  # compared with, never mutated


class Breaker:
    """Closed: calls go out. After `failures` consecutive failures, open for `open_s`; then half-open: one
    probe goes out, its success closes the circuit, its failure opens it again. A probe that reports neither
    (a 43004 answer, a Redis error, a shutdown) gives its claim up after `open_s`, so it cannot hold the
    circuit half-open forever. `pause` opens it for a known time (quota exhausted, account suspended); with
    `alert=False` (the minute quota: a pause of seconds, every minute under a sustained overload) it does not
    raise `pushgw_circuit_open`, which pages."""

    def __init__(self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._open_s = open_s
        self._clock = clock
        self._states: dict[str, _State] = {}

    def blocked_for_s(self, appid: str) -> float:
        """0 when a call may go out now (claiming the probe if half-open), else seconds to wait."""
        state = self._states.get(appid)
        if state is None:  # no outcome yet: the first success creates the state and publishes the gauge
            return 0.0
        now_s = self._clock()
        remaining = state.open_until_s - now_s
        if remaining > 0:
            return remaining
        if state.failures >= self._threshold:
            if now_s < state.probe_until_s:
                return min(1.0, self._open_s)
            state.probe_until_s = now_s + self._open_s
        return 0.0

    def succeeded(self, appid: str) -> None:
        state = self._states.get(appid)
        if state == _CLOSED:  # the usual case, on every delivery: nothing to change
            return
        if state is not None and (state.failures >= self._threshold or state.open_until_s):
            log.info("wechat circuit closed", extra={"appid": appid})
        self._states[appid] = _State()
        metrics.CIRCUIT_OPEN.labels(appid).set(0)

    def failed(self, appid: str) -> None:
        state = self._states.setdefault(appid, _State())
        state.failures += 1
        state.probe_until_s = 0.0
        if state.failures >= self._threshold:
            self._open(appid, state, self._open_s, "failures")

    def pause(self, appid: str, seconds: float, reason: str, *, alert: bool = True) -> None:
        self._open(appid, self._states.setdefault(appid, _State()), seconds, reason, alert=alert)

    def _open(self, appid: str, state: _State, seconds: float, reason: str, *, alert: bool = True) -> None:
        until = self._clock() + seconds
        if until > state.open_until_s:
            state.open_until_s = until
            log.warning("wechat circuit open for %.0f s (%s)", seconds, reason, extra={"appid": appid})
        if alert:
            metrics.CIRCUIT_OPEN.labels(appid).set(1)
