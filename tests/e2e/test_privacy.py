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


async def test_logs_hold_no_personal_data_or_secrets(
    stack_for: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stack = await stack_for(max_attempts=2)
    await stack.client.bind("C1", OPENID)
    await stack.client.bind("C2", GONE_OPENID)
    await stack.sim("POST", "/sim/unsubscribe", {"openid": GONE_OPENID})
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": -1}, {"errcode": 47003}]})
    events = [
        make_event(customer_id="C1", account=ACCOUNT),  # -1 then retried and delivered
        make_event(customer_id="C1", account=ACCOUNT, amount="2.00"),  # 47003: dead-lettered
        make_event(customer_id="C2", account=ACCOUNT),  # 43004: failed
        make_event(customer_id="C3", account=ACCOUNT),  # no binding
    ]
    for event in events:
        status, _ = await stack.client.post_event(event)
        assert status == 202
    await stack.client.call("POST", "/v1/events", {**events[0], "account": "not-digits-" + ACCOUNT})

    async def all_final() -> bool:
        statuses = [await stack.status_of(e["event_id"]) for e in events]
        return all(s in {"delivered", "failed", "dead_lettered", "no_binding"} for s in statuses)

    await eventually(all_final)
    token = await stack.redis.hget(keys.token(stack.settings.wechat_appid), "token")
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert lines, "the run logged nothing"
    for secret in (ACCOUNT, OPENID, GONE_OPENID, SECRET, APP_SECRET, token):
        assert secret
        leaked = [line for line in lines if secret in line]
        assert not leaked, leaked[:3]
