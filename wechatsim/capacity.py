"""Measure the simulator's capacity: `python -m wechatsim.capacity [--seconds S] [--concurrency N]`.

Starts the simulator in a child process (one core, as `pushgw sim` runs), drives it from this process with
N concurrent keep-alive connections sending valid template messages (each a new client_msg_id, so every
send takes the full path: token check, validation, rules, quota, dedup, delivery), and prints requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import subprocess
import sys
import time

import aiohttp

from wechatsim.catalog import default_apps, load_templates

_DATA = {
    "thing1": {"value": "尾号1234"},
    "time2": {"value": "2026年11月22日 10:00"},
    "phrase3": {"value": "消费"},
    "amount4": {"value": "1,234.56元"},
    "amount5": {"value": "5,678.90元"},
    "thing6": {"value": "Starbucks Shanghai"},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_up(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with session.get(url + "/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the simulator did not start")


async def _drive(url: str, seconds: float, concurrency: int) -> tuple[int, int, float]:
    appid, secret = next(iter(default_apps().items()))
    template_id = next(t.template_id for t in load_templates().values() if "thing1" in t.keys)
    ids = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _wait_up(session, url)
        params = {"grant_type": "client_credential", "appid": appid, "secret": secret}
        async with session.get(url + "/cgi-bin/token", params=params) as resp:
            token = (await resp.json())["access_token"]
        send_url = f"{url}/cgi-bin/message/template/send?access_token={token}"
        ok = failed = 0
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal ok, failed
            while time.perf_counter() < deadline:
                n = next(ids)
                body = {"touser": f"oUser_{n % 10000:06d}", "template_id": template_id, "data": _DATA}
                body["client_msg_id"] = f"cap-{n}"
                async with session.post(send_url, json=body) as resp:
                    answer = await resp.json()
                if answer.get("errcode") == 0:
                    ok += 1
                else:
                    failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return ok, failed, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port = _free_port()
    env = {"PUSHGW_SIM_DAILY_QUOTA": "1000000000"}
    code = (
        "import asyncio; from wechatsim.cli import config_from_env, serve; "
        f"asyncio.run(serve('127.0.0.1', {port}, config_from_env({env!r})))"
    )
    child = subprocess.Popen([sys.executable, "-c", code])  # noqa: S603 - our own interpreter and code
    try:
        url = f"http://127.0.0.1:{port}"
        ok, failed, elapsed_s = asyncio.run(_drive(url, args.seconds, args.concurrency))
    finally:
        child.terminate()
        child.wait(timeout=10)
    print(
        f"{ok + failed} sends in {elapsed_s:.1f} s with {args.concurrency} connections: "
        f"{(ok + failed) / elapsed_s:.0f} requests/s ({failed} not errcode 0)"
    )


if __name__ == "__main__":
    main()
