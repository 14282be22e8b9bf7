"""Event ids are scoped by the sending source (DESIGN.md): two sources may use the same id."""

from __future__ import annotations

import orjson

from tests.support import KEY_ID, SECRET, eventually, make_event, sent_as, signed_headers
from tests.workers.flows import StackFactory, record_statuses

CARDS_SECRET = "cards-ingress-secret"  # noqa: S105 - a fixture key


async def test_the_same_event_id_from_two_sources_reaches_the_customer_twice(stack_for: StackFactory) -> None:
    stack = await stack_for(api_keys={KEY_ID: SECRET, "cards": CARDS_SECRET})
    await stack.client.bind("C-sources", "oUser_sources")
    from_core = make_event(customer_id="C-sources", event_id="SHARED-1", amount="1.00")
    from_cards = make_event(customer_id="C-sources", event_id="SHARED-1", amount="2.00")
    assert (await stack.client.post_event(from_core))[0] == 202
    body = orjson.dumps(from_cards)
    headers = signed_headers(body, key_id="cards", secret=CARDS_SECRET)
    assert (await stack.client.call("POST", "/v1/events", raw=body, headers=headers))[0] == 202

    async def both_final() -> bool:
        records = [await stack.redis.hget(key, "status") for key in await stack.redis.keys("*:event:*")]
        return records == ["delivered", "delivered"]

    await eventually(both_final)
    assert await record_statuses(stack.redis, [from_core]) == {"SHARED-1": "delivered"}
    # WeChat drops a repeat of touser + client_msg_id: each source's event has its own
    shown = {
        m["client_msg_id"]: m["data"]["amount4"]["value"] for m in await stack.delivered_to("oUser_sources")
    }
    assert shown == {sent_as(from_core): "1.00元", sent_as(from_cards, "cards"): "2.00元"}
    assert (await stack.sim("GET", "/sim/stats"))["deduplicated"] == 0
