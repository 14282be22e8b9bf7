"""Event-loop lag: how late a timer fires. A loop blocked by CPU work or a blocking call shows it first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.core import metrics

TICK_S = 0.5


async def watch_loop_lag(tick_s: float = TICK_S) -> None:
    """Every `tick_s`, set pushgw_event_loop_lag_seconds to how late the tick woke. Runs until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(tick_s)
        metrics.EVENT_LOOP_LAG.set(max(0.0, loop.time() - started - tick_s))


@contextlib.asynccontextmanager
async def loop_lag_watched(tick_s: float = TICK_S) -> AsyncIterator[None]:
    """Watch the running loop's lag while the block runs."""
    task = asyncio.create_task(watch_loop_lag(tick_s), name="loop-lag")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
