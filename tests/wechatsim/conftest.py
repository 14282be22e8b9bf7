"""Fixtures: the simulator as a real aiohttp server on loopback, with a clock the tests move by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from wechatsim.app import STATE_KEY, SimConfig, create_app
from wechatsim.state import SimState

APPID = "wx_test_app"
SECRET = "test_secret"  # noqa: S105 - a fixture app secret
OTHER_APPID = "wx_other_app"
OTHER_SECRET = "other_secret"  # noqa: S105 - a fixture app secret
OPENID = "oTestUser_0001"
DEBIT_TEMPLATE = "Tq1Kx0dEbitAcctChangeNotice000000000000001"
DIGEST_TEMPLATE = "Tq1Kx0DigestNotice0000000000000000000000006"
START_S = 1_795_000_000.0

Json = dict[str, Any]


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now_s: float = START_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def debit_data(**values: str) -> Json:
    """A valid data block for the debit template, with `values` overriding keys."""
    base = {
        "thing1": "尾号1234",
        "time2": "2026年11月22日 10:00",
        "phrase3": "消费",
        "amount4": "1,234.56元",
        "amount5": "5,678.90元",
        "thing6": "Starbucks Shanghai",
    }
    base.update(values)
    return {key: {"value": value} for key, value in base.items()}


def send_payload(**overrides: object) -> Json:
    """A valid template-send body for OPENID and the debit template."""
    payload: Json = {
        "touser": OPENID,
        "template_id": DEBIT_TEMPLATE,
        "url": "https://bank.example/tx/1",
        "client_msg_id": "CBS-20261122-000000001",
        "data": debit_data(),
    }
    payload.update(overrides)
    return payload


class Sim:
    """A running simulator and a client session to it."""

    def __init__(self, client: TestClient[web.Request, web.Application], clock: FakeClock) -> None:
        self.client = client
        self.clock = clock

    @property
    def state(self) -> SimState:
        return self.client.app[STATE_KEY]

    async def get(self, path: str, **params: str) -> tuple[int, Json]:
        async with self.client.get(path, params=params) as resp:
            return resp.status, await resp.json()

    async def post(
        self, path: str, payload: object = None, *, raw: bytes | None = None, **params: str
    ) -> Any:
        """POST JSON (or raw bytes); answers the decoded JSON body, asserting HTTP 200."""
        status, body = await self.post_status(path, payload, raw=raw, **params)
        assert status == 200, body
        return body

    async def post_status(
        self, path: str, payload: object = None, *, raw: bytes | None = None, **params: str
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": payload}
        async with self.client.post(path, params=params, **kwargs) as resp:
            if resp.content_type != "application/json":
                return resp.status, await resp.text()
            return resp.status, await resp.json()

    async def put_faults(self, faults: object) -> tuple[int, Json]:
        async with self.client.put("/sim/faults", json=faults) as resp:
            return resp.status, await resp.json()

    async def token(self, appid: str = APPID, secret: str = SECRET) -> str:
        params = {"grant_type": "client_credential", "appid": appid, "secret": secret}
        status, body = await self.get("/cgi-bin/token", **params)
        assert status == 200 and "access_token" in body, body
        token: str = body["access_token"]
        return token

    async def stable_token(self, *, force_refresh: bool = False) -> Json:
        payload = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        body: Json = await self.post("/cgi-bin/stable_token", payload | {"force_refresh": force_refresh})
        return body

    async def send(self, token: str, payload: object) -> Json:
        body: Json = await self.post("/cgi-bin/message/template/send", payload, access_token=token)
        return body

    async def stats(self) -> Json:
        return (await self.get("/sim/stats"))[1]

    async def messages(self, touser: str | None = None) -> list[Json]:
        params = {} if touser is None else {"touser": touser}
        messages: list[Json] = (await self.get("/sim/messages", **params))[1]["messages"]
        return messages


MakeSim = Callable[..., Awaitable[Sim]]


def sim_config(**overrides: Any) -> SimConfig:
    fields: dict[str, Any] = {"apps": {APPID: SECRET, OTHER_APPID: OTHER_SECRET}, "seed": 7}
    fields.update(overrides)
    return SimConfig(**fields)


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    """Start simulators with a given config (keyword overrides of sim_config()); all closed at the end."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(**overrides: Any) -> Sim:
        clock = FakeClock()
        client = TestClient(TestServer(create_app(sim_config(**overrides), clock=clock)))
        await client.start_server()
        clients.append(client)
        return Sim(client, clock)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def sim(make_sim: MakeSim) -> Sim:
    return await make_sim()
