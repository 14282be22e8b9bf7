"""A closed-loop load generator process: C connections post as fast as answers come, for D seconds.

Prints one JSON line: requests, events, non-2xx answers, seconds. Modes: `single` (one event a request),
`batch` (N events a request), `template` (template sends straight to the simulator, the C baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

import aiohttp
import orjson
import uvloop

from loadtest.payloads import EventFactory, openid_of, signed_headers


@dataclass
class Tally:
    requests: int = 0
    events: int = 0
    failures: int = 0


def _body(args: argparse.Namespace, factory: EventFactory, sent: int) -> tuple[str, bytes, int]:
    if args.mode == "batch":
        events = [factory.event() for _ in range(args.batch)]
        return "/v1/events/batch", orjson.dumps({"events": events}), len(events)
    if args.mode == "template":
        message = {
            "touser": openid_of(sent % 1000),
            "template_id": args.template_id,
            "client_msg_id": f"base-{args.seed}-{sent}",
            "data": {"thing1": {"value": "尾号1234"}},
        }
        return f"/cgi-bin/message/template/send?access_token={args.token}", orjson.dumps(message), 1
    return "/v1/events", orjson.dumps(factory.event()), 1


async def _connection(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    factory: EventFactory,
    tally: Tally,
    stop_at: float,
) -> None:
    while time.monotonic() < stop_at:
        path, body, events = _body(args, factory, tally.requests)
        headers = signed_headers(args.key_id, args.secret, "POST", path, body)
        async with session.post(args.url + path, data=body, headers=headers) as response:
            await response.read()
            ok = response.status < 300
        tally.requests += 1
        tally.events += events if ok else 0
        tally.failures += 0 if ok else 1


async def run(args: argparse.Namespace) -> Tally:
    factory = EventFactory(args.customers, seed=args.seed)
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + args.seconds
        await asyncio.gather(
            *(_connection(session, args, factory, tally, stop_at) for _ in range(args.connections))
        )
    return tally


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=["single", "batch", "template"], default="single")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--key-id", default="bench")
    parser.add_argument("--secret", default="bench-secret")
    parser.add_argument("--token", default="")
    parser.add_argument("--template-id", default="Tq1Kx0CardPurchaseNotice000000000000000003")
    args = parser.parse_args()
    uvloop.install()
    started = time.monotonic()
    tally = asyncio.run(run(args))
    seconds = time.monotonic() - started
    sys.stdout.write(orjson.dumps({**tally.__dict__, "seconds": seconds}).decode() + "\n")


if __name__ == "__main__":
    main()
