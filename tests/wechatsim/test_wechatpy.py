"""A real third-party WeChat client, wechatpy, against the simulator served on loopback: it fetches the
access token, sends template messages, and raises its own exceptions with WeChat's errcodes.

wechatpy is synchronous (requests), so each call runs in a thread. Its `fetch_access_token` has the WeChat
host written in; the subclass below only points that one URL at the simulator, as `API_BASE_URL` does for
every other call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from wechatpy import WeChatClient
from wechatpy.exceptions import APILimitedException, WeChatClientException

from tests.support import Running
from tests.wechatsim.conftest import APPID, DEBIT_TEMPLATE, OPENID, SECRET, debit_data, sim_config
from wechatsim.app import create_app

# wechatpy's own send_template calls its deprecated `_post`
pytestmark = pytest.mark.filterwarnings("ignore:`_post` method:DeprecationWarning")


class SimClient(WeChatClient):  # type: ignore[misc]  # wechatpy is untyped
    def __init__(self, base_url: str, appid: str = APPID, secret: str = SECRET) -> None:
        super().__init__(appid, secret, timeout=5)
        self.API_BASE_URL = base_url + "/cgi-bin/"

    def fetch_access_token(self) -> Any:
        params = {"grant_type": "client_credential", "appid": self.appid, "secret": self.secret}
        return self._fetch_access_token(url=self.API_BASE_URL + "token", params=params)


@pytest.fixture
async def sim_url() -> AsyncIterator[str]:
    running = await Running(create_app(sim_config())).start()
    yield running.url
    await running.stop()


async def _raises(call: Any, *args: Any) -> WeChatClientException:
    with pytest.raises(WeChatClientException) as caught:
        await asyncio.to_thread(call, *args)
    error: WeChatClientException = caught.value
    return error


async def test_wechatpy_fetches_a_token_and_sends(sim_url: str) -> None:
    client = SimClient(sim_url)
    token = await asyncio.to_thread(lambda: client.access_token)
    assert isinstance(token, str) and len(token) > 100
    answer = await asyncio.to_thread(client.message.send_template, OPENID, DEBIT_TEMPLATE, debit_data())
    assert answer["errcode"] == 0 and isinstance(answer["msgid"], int)
    templates = await asyncio.to_thread(client.template.get_all_private_template)
    assert DEBIT_TEMPLATE in {t["template_id"] for t in templates["template_list"]}


async def test_wechatpy_raises_with_the_errcode(sim_url: str) -> None:
    client = SimClient(sim_url)
    send = client.message.send_template
    bad_template = await _raises(send, OPENID, "no-such-template", debit_data())
    assert bad_template.errcode == 40037
    bad_value = await _raises(send, OPENID, DEBIT_TEMPLATE, debit_data(phrase3="消费消费消费消费"))
    assert bad_value.errcode == 47003 and "phrase3" in bad_value.errmsg
    async with _session() as session:
        await session.post(sim_url + "/sim/unsubscribe", json={"openid": OPENID})
        await session.post(sim_url + "/sim/block", json={"openid": "oBlocked_0001"})
    assert (await _raises(send, OPENID, DEBIT_TEMPLATE, debit_data())).errcode == 43004
    assert (await _raises(send, "oBlocked_0001", DEBIT_TEMPLATE, debit_data())).errcode == 43019
    wrong_secret = SimClient(sim_url, secret="wrong")  # noqa: S106 - a wrong secret on purpose
    assert (await _raises(lambda: wrong_secret.access_token)).errcode == 40125


async def test_wechatpy_sees_the_quotas(sim_url: str) -> None:
    """wechatpy raises APILimitedException for 45009 (its OUT_OF_API_FREQ_LIMIT), the errcode otherwise."""
    client = SimClient(sim_url)
    async with _session() as session:
        await session.put(sim_url + "/sim/faults", json={"script": [{"errcode": 45009}, {"errcode": 45011}]})
    send = client.message.send_template
    with pytest.raises(APILimitedException) as caught:
        await asyncio.to_thread(send, "oOther_00001", DEBIT_TEMPLATE, debit_data())
    assert caught.value.errcode == 45009
    assert (await _raises(send, "oOther_00001", DEBIT_TEMPLATE, debit_data())).errcode == 45011


async def test_wechatpy_refetches_an_expired_token(sim_url: str) -> None:
    client = SimClient(sim_url)
    first = await asyncio.to_thread(lambda: client.access_token)
    async with _session() as session:
        await session.post(sim_url + "/sim/tokens/expire", json={"appid": APPID})
    answer = await asyncio.to_thread(client.message.send_template, OPENID, DEBIT_TEMPLATE, debit_data())
    assert answer["errcode"] == 0
    assert await asyncio.to_thread(lambda: client.access_token) != first


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()
