"""An open-loop load generator process: events are sent at times fixed by a clock, never by answers.

A closed loop (send, wait, send) slows down exactly when the server does and so hides the slow answers
(coordinated omission). Here event i leaves at start + i / rate whatever happened to the ones before it,
and every latency is measured from that intended time. Writes one JSON file: per event its id, intended
send time (unix ms), answer time after it (ms) and HTTP status; plus how late the sender itself ran (when
each request's task began to send, minus its intended time: p99 and max over every event), which says
whether the generator kept its schedule. Event i goes to customer first + i // per_customer, so under the
default rate limit (per_customer = its count) no event is digested.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from loadtest.payloads import EventFactory, signed_headers


def schedule(rate_per_s: float, seconds: float, rate_to: float | None = None) -> list[float]:
    """Intended send offsets (s from the start) of an open loop: constant rate (i / rate, i < rate * s), or
    with `rate_to` a linear ramp from `rate_per_s` to `rate_to` over `seconds`."""
    if rate_per_s <= 0 or seconds <= 0:
        return []
    if rate_to is None or rate_to == rate_per_s:
        return [i / rate_per_s for i in range(round(rate_per_s * seconds))]
    # sent by t: n(t) = r0 t + k t^2 / 2 with k = (r1 - r0) / T; event i leaves where n(t) = i
    r0, k = rate_per_s, (rate_to - rate_per_s) / seconds
    total = round((rate_per_s + rate_to) / 2 * seconds)
    return [(math.sqrt(r0 * r0 + 2 * k * i) - r0) / k for i in range(total)]


async def _send(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    event: dict[str, Any],
    intended: tuple[float, float],
    late_ms: list[float],
) -> list[Any]:
    """POST one event; `intended`: its send time as (unix ms, monotonic s). Appends how late it left."""
    intended_ms, intended_s = intended
    late_ms.append(max(0.0, (time.monotonic() - intended_s) * 1000))
    body = orjson.dumps(event)
    headers = signed_headers(args.key_id, args.secret, "POST", "/v1/events", body)
    try:
        async with session.post(args.url + "/v1/events", data=body, headers=headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    return [event["event_id"], event["customer_id"], intended_ms, time.time() * 1000 - intended_ms, status]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    factory = EventFactory(1, seed=args.seed, prefix="OPEN")
    offsets = schedule(args.rate, args.seconds, args.rate_to)
    # built before the clock starts: generation is not load
    events = [factory.event(args.first_customer + i // args.per_customer) for i in range(len(offsets))]
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    late_ms: list[float] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start_wall, start = time.time() * 1000, time.monotonic()
        tasks = []
        for offset, event in zip(offsets, events, strict=True):
            delay = start + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            intended = (start_wall + offset * 1000, start + offset)
            tasks.append(asyncio.create_task(_send(session, args, event, intended, late_ms)))
        sent = await asyncio.gather(*tasks)
    late_ms.sort()
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "events": sent,
        "sender_late_p99_ms": late_ms[int(0.99 * (len(late_ms) - 1))] if late_ms else 0.0,
        "sender_late_max_ms": late_ms[-1] if late_ms else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--rate-to", type=float, help="ramp linearly from --rate to this rate over the run")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=1024)
    parser.add_argument("--first-customer", type=int, default=0, help="the first customer index")
    parser.add_argument(
        "--per-customer", type=int, default=5, help="events per customer (the rate limit's count)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--key-id", default="bench")
    parser.add_argument("--secret", default="bench-secret")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    uvloop.install()
    Path(args.out).write_bytes(orjson.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
