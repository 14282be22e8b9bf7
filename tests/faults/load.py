"""Concurrent load for the fault tests: bound customers, and a core banking that retries what was refused."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from typing import Any

import orjson

from tests.faults.oracle import NO_ANSWER, Oracle
from tests.support import make_event, signed_headers

_skew = itertools.count()


async def bind_customers(oracle: Oracle, count: int, prefix: str) -> list[str]:
    customers = [f"C-{prefix}-{index:03d}" for index in range(count)]
    for index, customer in enumerate(customers):
        await oracle.bind(customer, f"oUser_{prefix}_{index:03d}")
    return customers


def events_for(customers: list[str], count: int) -> list[dict[str, Any]]:
    return [make_event(customer_id=customers[index % len(customers)]) for index in range(count)]


async def post_retrying(
    oracle: Oracle, event: dict[str, Any], attempts: int = 1, pause_s: float = 0.2
) -> int:
    """POST like core banking: anything but a 2xx/4xx is retried (the same body, a new signature).
    Returns the last HTTP status (0: no answer)."""
    body = orjson.dumps(event)
    status = 0
    for _ in range(attempts):
        headers = signed_headers(body, at_s=int(time.time()) - next(_skew) % 200)
        try:
            status, answer = await oracle.stack.client.call("POST", "/v1/events", raw=body, headers=headers)
        except NO_ANSWER:
            oracle.unanswered()
            status = 0
        else:
            oracle.record(event, status, answer)
        if 200 <= status < 500 and status != 429:
            return status
        await asyncio.sleep(pause_s)
    return status


async def send_all(
    oracle: Oracle, events: Iterable[dict[str, Any]], concurrency: int = 16, attempts: int = 1
) -> list[int]:
    """Send events `concurrency` at a time; returns each event's last status, in order."""
    slots = asyncio.Semaphore(concurrency)

    async def one(event: dict[str, Any]) -> int:
        async with slots:
            return await post_retrying(oracle, event, attempts)

    return list(await asyncio.gather(*(one(event) for event in events)))
