"""The pipeline end to end: an event posted to the gateway reaches the simulated WeChat once, rendered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support import eventually, make_event, sent_as

pytestmark = pytest.mark.e2e


async def test_one_event_is_delivered_rendered_and_masked(stack_for: Callable[..., Any]) -> None:
    stack = await stack_for()
    await stack.client.bind("C100234", "oUser_000001")
    event = make_event()

    status, body = await stack.client.post_event(event)
    assert (status, body) == (202, {"event_id": event["event_id"], "status": "queued"})

    async def delivered() -> bool:
        return bool(await stack.status_of(event["event_id"]) == "delivered")

    await eventually(delivered)
    [message] = await stack.delivered_to("oUser_000001")
    assert message["client_msg_id"] == sent_as(event)
    assert message["data"] == {
        "thing1": {"value": "尾号1234"},
        "time2": {"value": "2026年11月22日 10:00"},
        "phrase3": {"value": "消费"},
        "amount4": {"value": "1,234.56元"},
        "amount5": {"value": "5,678.90元"},
        "thing6": {"value": "Starbucks Shanghai"},
    }
