"""Lookups once Redis let a record expire: `GET /v1/events/{id}` and the customer timeline answer from the
archive in the live shape (plus `origin`), a failing archive is a 503, and the timeline pages back over
months with its cursor."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.core import keys
from gateway.core.archive.rows import Row, ms_of
from gateway.core.archive.server import PostgresServer
from gateway.core.archive.store import ArchiveStore, open_pool
from tests.archive.helpers import until_archived
from tests.conftest import Stack
from tests.support import KEY_ID, make_event
from tests.workers.flows import StackFactory, until_status

pytestmark = pytest.mark.e2e
CUSTOMER = "C-lookup-01"


async def _delivered_and_archived(stack: Stack, url: str, count: int) -> list[dict[str, Any]]:
    await stack.client.bind(CUSTOMER, "oUser_lookup01")
    events = [make_event(customer_id=CUSTOMER) for _ in range(count)]
    for event in events:
        assert (await stack.client.post_event(event))[0] == 202
    for event in events:
        await until_status(stack, event["event_id"], "delivered")
    await until_archived(stack.redis, url, count)
    return events


def _without_origin(view: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in view.items() if name != "origin"}


async def test_an_expired_record_is_answered_from_the_archive_in_the_live_shape(
    stack_for: StackFactory, archive_url: str
) -> None:
    stack = await stack_for(workers=1, archive_url=archive_url)
    [event] = await _delivered_and_archived(stack, archive_url, 1)
    path = f"/v1/events/{event['event_id']}"
    status, live = await stack.client.call("GET", path)
    assert status == 200 and live["origin"] == "live"
    _, live_timeline = await stack.client.call("GET", f"/v1/customers/{CUSTOMER}/events")
    assert [entry["origin"] for entry in live_timeline["events"]] == ["live"]

    await stack.redis.delete(keys.event(0, KEY_ID, event["event_id"]))  # its PUSHGW_EVENT_TTL_S is over

    status, answer = await stack.client.call("GET", path)
    assert status == 200 and answer["origin"] == "archive"
    assert _without_origin(answer) == _without_origin(live)
    status, timeline = await stack.client.call("GET", f"/v1/customers/{CUSTOMER}/events")
    assert status == 200
    [entry] = timeline["events"]
    assert entry["origin"] == "archive"
    assert _without_origin(entry) == _without_origin(live_timeline["events"][0])
    assert entry["account"] == "****1234" and "6222020200001234" not in str(timeline)
    assert (await stack.client.call("GET", "/v1/events/CBS-NEVER-SEEN"))[0] == 404


async def test_the_timeline_pages_back_over_months_with_its_cursor(
    stack_for: StackFactory, archive_url: str
) -> None:
    stack = await stack_for(workers=1, archive_url=archive_url)
    recent = await _delivered_and_archived(stack, archive_url, 3)
    await stack.redis.delete(keys.event(0, KEY_ID, recent[0]["event_id"]))  # one expired, two live
    now = datetime.now(UTC)
    old = [_row(f"CBS-OLD-{months}", now - timedelta(days=30 * months)) for months in (1, 2, 3, 5, 8)]
    pool = await open_pool(archive_url, max_size=1)
    try:
        assert await ArchiveStore(pool).write(old) == len(old)
    finally:
        await pool.close()

    since = (now - timedelta(days=365)).isoformat()
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10):
        query = f"since={since.replace('+', '%2B')}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page = await stack.client.call("GET", f"/v1/customers/{CUSTOMER}/events?{query}")
        assert status == 200, page
        assert len(page["events"]) <= 3
        seen += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = [event["event_id"] for event in reversed(recent)] + [row.event_id for row in old]
    assert [entry["event_id"] for entry in seen] == expected  # newest first, each once
    assert [entry["origin"] for entry in seen] == ["live", "live"] + ["archive"] * 6
    accepted = [entry["accepted_at"] for entry in seen]
    assert accepted == sorted(accepted, reverse=True)

    cut = (now - timedelta(days=100)).isoformat().replace("+", "%2B")
    _, within = await stack.client.call("GET", f"/v1/customers/{CUSTOMER}/events?since={cut}&limit=50")
    assert [entry["event_id"] for entry in within["events"]][-1] == "CBS-OLD-3"
    assert within["next_cursor"] is None
    bad = await stack.client.call("GET", f"/v1/customers/{CUSTOMER}/events?cursor=not-a-cursor")
    assert bad[0] == 422 and bad[1]["error"]["field"] == "cursor"


def _row(event_id: str, accepted: datetime) -> Row:
    moment = accepted.replace(microsecond=0)
    return Row(
        source=KEY_ID,
        event_id=event_id,
        accepted_at=moment,
        version=1,
        status="delivered",
        attempts=1,
        last_error=None,
        updated_at=moment,
        delivered_at=moment,
        finish_status="success",
        finished_at=moment,
        notice=None,
        notified_at=None,
        notice_error=None,
        notice_attempts=None,
        held=None,
        fallback=None,
        replayed_at=None,
        customer_id=CUSTOMER,
        type="card_purchase",
        amount=None,
        currency="CNY",
        account_tail="1234",
        occurred_at=moment.isoformat(),
        priority="normal",
        msgid=str(ms_of(moment)),
        erased_at=None,
    )


async def test_an_unreachable_archive_is_a_503_and_live_events_still_answer(
    stack_for: StackFactory, archive_url: str, postgres: PostgresServer
) -> None:
    stack = await stack_for(workers=0, archive_url=archive_url)
    event = make_event(customer_id=CUSTOMER)
    assert (await stack.client.post_event(event))[0] == 202
    await asyncio.to_thread(postgres.stop)
    try:
        status, live = await stack.client.call("GET", f"/v1/events/{event['event_id']}")
        assert (status, live["origin"]) == (200, "live")
        status, body = await stack.client.call("GET", "/v1/events/CBS-EXPIRED-LONG-AGO")
        assert status == 503 and body["error"]["code"] == "unavailable"
        assert (await stack.client.call("GET", f"/v1/customers/{CUSTOMER}/events"))[0] == 503
    finally:
        await asyncio.to_thread(postgres.start)
