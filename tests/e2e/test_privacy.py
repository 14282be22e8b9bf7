"""No full account number, openid, token or secret in any log line of a run through every outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from gateway.core import keys
from gateway.core.logs import JsonFormatter
from tests.support import APP_SECRET, SECRET, eventually, make_event

pytestmark = pytest.mark.e2e

ACCOUNT = "6222020200009876"
OPENID = "oPrivateOpenid_77341"
GONE_OPENID = "oUnfollowed_9912345"
FINAL = {"delivered", "failed", "dead_lettered", "no_binding"}


async def _final(stack: Any, event: dict[str, Any], script: list[dict[str, int]] | None = None) -> Any:
    """Post `event` (the simulator first told to answer its next sends by `script`) and return its view once
    its status is final: one event at a time, so each meets the answer meant for it."""
    if script is not None:
        await stack.sim("PUT", "/sim/faults", {"script": script})
    status, _ = await stack.client.post_event(event)
    assert status == 202
    path = f"/v1/events/{event['event_id']}"

    async def final() -> bool:
        return (await stack.client.call("GET", path))[1]["status"] in FINAL

    await eventually(final)
    return (await stack.client.call("GET", path))[1]


async def test_logs_hold_no_personal_data_or_secrets(
    stack_for: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stack = await stack_for(max_attempts=2)
    await stack.client.bind("C1", OPENID)
    await stack.client.bind("C2", GONE_OPENID)
    await stack.sim("POST", "/sim/unsubscribe", {"openid": GONE_OPENID})

    retried = await _final(stack, make_event(customer_id="C1", account=ACCOUNT), [{"errcode": -1}])
    assert (retried["status"], retried["attempts"]) == ("delivered", 2)
    dead = await _final(
        stack, make_event(customer_id="C1", account=ACCOUNT, amount="2.00"), [{"errcode": 47003}]
    )
    assert (dead["status"], dead["attempts"], dead["last_error"]) == ("dead_lettered", 1, "47003")
    gone = await _final(stack, make_event(customer_id="C2", account=ACCOUNT))
    assert (gone["status"], gone["attempts"], gone["last_error"]) == ("failed", 1, "43004")
    unbound = await _final(stack, make_event(customer_id="C3", account=ACCOUNT))
    assert unbound["status"] == "no_binding"
    refused = make_event(customer_id="C1", account="not-digits-" + ACCOUNT)
    assert (await stack.client.post_event(refused))[0] == 422
    assert len(await stack.delivered_to(OPENID)) == 1 and await stack.delivered_to(GONE_OPENID) == []

    token = await stack.redis.hget(keys.token(stack.settings.wechat_appid), "token")
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert lines, "the run logged nothing"
    for secret in (ACCOUNT, OPENID, GONE_OPENID, SECRET, APP_SECRET, token):
        assert secret
        leaked = [line for line in lines if secret in line]
        assert not leaked, leaked[:3]
