"""Odd answers from WeChat's address (a proxy's page, a half-written body) over real HTTP: none of them may be
read as a delivery, and the token endpoint's errcodes are never read with the send API's table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.core.local_servers import free_port
from tests.support import Running
from workers.wechat import Answer, Outcome, TokenError, WeChatClient, classify


class Replies:
    """A stand-in WeChat front end that answers every call with the body it is told to."""

    def __init__(self) -> None:
        self.body: Any = {}
        self.status = 200

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/cgi-bin/stable_token", self._answer)
        app.router.add_post("/cgi-bin/message/template/send", self._answer)
        return app

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=orjson.dumps(self.body), status=self.status, content_type="application/json")


@pytest.fixture
async def replies() -> AsyncIterator[tuple[Replies, WeChatClient]]:
    replies = Replies()
    running = await Running(replies.app()).start()
    async with aiohttp.ClientSession() as session:
        yield replies, WeChatClient(session, running.url, timeout_s=5)
    await running.stop()


@pytest.mark.parametrize("body", [{}, {"errmsg": "ok"}, {"msgid": 1}, {"errcode": "0"}, []])
async def test_a_send_answer_without_an_errcode_is_never_a_delivery(
    replies: tuple[Replies, WeChatClient], body: Any
) -> None:
    fake, client = replies
    fake.body = body
    answer = await client.send_template("token", {"touser": "o1"})
    assert answer == Answer(transport="bad_response")
    assert classify(answer).outcome is Outcome.RETRY


async def test_a_send_answer_with_errcode_0_is_a_delivery(replies: tuple[Replies, WeChatClient]) -> None:
    fake, client = replies
    fake.body = {"errcode": 0, "errmsg": "ok", "msgid": 3717005636572528642}
    answer = await client.send_template("token", {"touser": "o1"})
    assert (answer.errcode, answer.msgid) == (0, "3717005636572528642")
    assert classify(answer).outcome is Outcome.DELIVERED


@pytest.mark.parametrize(
    ("body", "label"),
    [
        ({"access_token": "t", "expires_in": "7200"}, "token_bad_response"),
        ({"access_token": "", "expires_in": 7200}, "token_bad_response"),
        ({}, "token_bad_response"),
        ({"errcode": 0, "errmsg": "ok"}, "token_bad_response"),
        ({"errcode": 45009, "errmsg": "reach max api daily quota limit"}, "token_45009"),
        ({"errcode": 45011, "errmsg": "api minute-quota reach limit"}, "token_45011"),
        ({"errcode": 40125, "errmsg": "invalid appsecret"}, "token_other"),
    ],
)
async def test_a_token_failure_is_a_retry_whatever_the_token_endpoint_said(
    replies: tuple[Replies, WeChatClient], body: dict[str, Any], label: str
) -> None:
    """A 45009 from stable_token is its force-refresh quota, not the send quota: it must not pause the appid
    until midnight, and no token answer may be taken for a delivery."""
    fake, client = replies
    fake.body = body
    with pytest.raises(TokenError) as raised:
        await client.stable_token("wx_app", "secret")
    answer = raised.value.send_answer
    assert answer.label == label
    verdict = classify(answer)
    assert (verdict.outcome, verdict.wait.value, verdict.breaker_failure) == (Outcome.RETRY, "backoff", True)


async def test_a_token_endpoint_that_fails_keeps_its_cause_in_the_label(
    replies: tuple[Replies, WeChatClient],
) -> None:
    fake, client = replies
    fake.status = 502
    with pytest.raises(TokenError) as raised:
        await client.stable_token("wx_app", "secret")
    assert raised.value.send_answer.label == "token_http_502"
    async with aiohttp.ClientSession() as session:
        unreachable = WeChatClient(session, f"http://127.0.0.1:{free_port()}", timeout_s=5)
        with pytest.raises(TokenError) as raised:
            await unreachable.stable_token("wx_app", "secret")
    assert raised.value.send_answer.label == "token_connection"
