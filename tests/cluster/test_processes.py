"""Two gateway and two worker processes (`--processes 2`, SO_REUSEPORT) on one host over the cluster: every
event is delivered exactly once, and the metrics each process group serves add up to what was done.

tests/observability/test_multiprocess.py checks the metrics plumbing on one Redis; this runs real traffic
through both process groups at once, on `redis+cluster://`."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.local_servers import free_port
from tests.cluster.conftest import SHARDS
from tests.cluster.local import LocalCluster
from tests.cluster.test_cluster_flow import customer_per_shard, openid
from tests.support import (
    APP_SECRET,
    APPID,
    KEY_ID,
    SECRET,
    Client,
    Running,
    answers_ok,
    eventually,
    make_event,
    sent_as,
)
from tests.workers.flows import pushgw_env
from wechatsim.app import SimConfig
from wechatsim.app import create_app as create_sim

pytestmark = pytest.mark.e2e
EVENTS = 120


@contextmanager
def pushgw(log: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`pushgw ARGS --processes 2`, SIGTERMed (graceful) at the end; it must exit 0."""
    command = [str(Path(sys.executable).with_name("pushgw")), *args, "--processes", "2"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@asynccontextmanager
async def simulator() -> AsyncIterator[Running]:
    sim = await Running(create_sim(SimConfig(apps={APPID: APP_SECRET}))).start()
    try:
        yield sim
    finally:
        await sim.stop()


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def test_two_gateways_and_two_workers_deliver_each_event_once(
    tmp_path: Path, cluster: LocalCluster, redis: object
) -> None:
    gateway_port, metrics_port = free_port(), free_port()
    async with simulator() as sim, aiohttp.ClientSession() as session:
        env = pushgw_env(
            cluster.url,
            PUSHGW_SHARDS=str(SHARDS),
            PUSHGW_API_KEYS=f"{KEY_ID}:{SECRET}",
            PUSHGW_WECHAT_BASE_URL=sim.url,
            PUSHGW_WECHAT_APPID=APPID,
            PUSHGW_WECHAT_SECRET=APP_SECRET,
            PUSHGW_RATE_LIMIT="1000/60",
            PUSHGW_LOG_LEVEL="WARNING",
            PUSHGW_SHUTDOWN_TIMEOUT_S="5",
            PUSHGW_METRICS_PORT=str(metrics_port),
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        client = Client(session, gateway_url)
        with (
            pushgw(tmp_path / "gateway.log", env, "gateway", "--port", str(gateway_port)),
            pushgw(tmp_path / "worker.log", env, "worker"),
        ):
            await eventually(lambda: answers_ok(session, gateway_url + "/readyz"), timeout_s=30)
            customers = customer_per_shard("mp")
            for customer in customers:
                await client.bind(customer, openid(customer))
            events = [make_event(customer_id=customers[i % SHARDS]) for i in range(EVENTS)]
            answers = await asyncio.gather(*(client.post_event(event) for event in events))
            assert {status for status, _ in answers} == {202}

            async def all_delivered() -> bool:
                async with session.get(sim.url + "/sim/stats") as response:
                    return int((await response.json())["delivered"]) >= EVENTS

            await eventually(all_delivered)
            shown = []
            for customer in customers:
                async with session.get(f"{sim.url}/sim/messages?touser={openid(customer)}") as response:
                    shown += [m["client_msg_id"] for m in (await response.json())["messages"]]
            assert sorted(shown) == sorted(sent_as(e) for e in events)
            gateway_text = await _text(session, gateway_url + "/metrics")
            assert total(gateway_text, "pushgw_events_total", result="queued") == EVENTS

            async def workers_add_up() -> bool:
                text = await _text(session, f"http://127.0.0.1:{metrics_port}/metrics")
                return total(text, "pushgw_deliveries_total", outcome="delivered") == EVENTS

            await eventually(workers_add_up)
            async with session.get(sim.url + "/sim/stats") as response:
                assert int((await response.json())["delivered"]) == EVENTS


async def _text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        assert response.status == 200
        return await response.text()
