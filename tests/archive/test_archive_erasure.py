"""`DELETE /v1/customers/{id}` erases the customer's personal fields in the archive too, counts them, and an
archive entry of theirs still on its way is stored without them."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.local_servers import free_port
from tests.archive.helpers import archive_backlog, archived, until_archived
from tests.support import make_event
from tests.workers.flows import StackFactory, until_status

pytestmark = pytest.mark.e2e
CUSTOMER, OTHER = "C-erase-arch", "C-keep-arch"
PERSONAL = ("customer_id", "type", "amount", "currency", "account_tail", "occurred_at", "priority", "msgid")


async def test_erasure_strips_the_archive_and_keeps_what_disputes_count(
    stack_for: StackFactory, archive_url: str
) -> None:
    stack = await stack_for(workers=1, archive_url=archive_url)
    await stack.client.bind(CUSTOMER, "oUser_erasearch")
    await stack.client.bind(OTHER, "oUser_keeparch")
    events = [make_event(customer_id=CUSTOMER) for _ in range(3)] + [make_event(customer_id=OTHER)]
    for event in events:
        assert (await stack.client.post_event(event))[0] == 202
    for event in events:
        await until_status(stack, event["event_id"], "delivered")
    await until_archived(stack.redis, archive_url, len(events))

    # a last state of the customer waits in Redis when the erasure runs: its worker cannot reach PostgreSQL
    await stack.stop_workers()
    unreachable = f"postgresql://postgres:none@127.0.0.1:{free_port()}/none?sslmode=disable"
    stack.start_worker(name="cut-off", archive_url=unreachable)
    late = make_event(customer_id=CUSTOMER)
    assert (await stack.client.post_event(late))[0] == 202
    await until_status(stack, late["event_id"], "delivered")
    await stack.stop_workers()
    assert await archive_backlog(stack.redis) == 1

    status, body = await stack.client.call("DELETE", f"/v1/customers/{CUSTOMER}")
    assert status == 200, body
    assert body["erased"]["archived_events"] == 3
    assert (await stack.client.call("DELETE", f"/v1/customers/{CUSTOMER}"))[1]["erased"][
        "archived_events"
    ] == 0

    rows = {row["event_id"]: row for row in await archived(archive_url)}
    for event in events[:3]:
        row: dict[str, Any] = rows[event["event_id"]]
        assert all(row[name] is None for name in PERSONAL), row
        assert (row["source"], row["status"], row["erased_at"] is not None) == ("cbs", "delivered", True)
        assert row["accepted_at"] and row["delivered_at"]
    kept = rows[events[3]["event_id"]]
    assert (kept["customer_id"], kept["account_tail"]) == (OTHER, "1234")

    stack.start_worker(name="archives-again")  # claims the cut-off worker's entry once idle
    await until_archived(stack.redis, archive_url, len(events) + 1)
    arrived = next(row for row in await archived(archive_url) if row["event_id"] == late["event_id"])
    assert all(arrived[name] is None for name in PERSONAL), "a late row brought personal data back"
    assert arrived["status"] == "delivered" and not await archive_backlog(stack.redis)
