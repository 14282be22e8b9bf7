"""`pushgw reconcile` covers the archive: every final state in Redis is archived at its version, or waits on
the archive stream; one in neither (a row lost from PostgreSQL) makes it not add up."""

from __future__ import annotations

import asyncpg
import pytest

from gateway.core.local_servers import free_port
from gateway.core.settings import RateLimit
from gateway.ops.reconcile import reconcile
from tests.archive.helpers import archive_backlog, until_archived
from tests.support import make_event
from tests.workers.flows import StackFactory, until_status

pytestmark = pytest.mark.e2e
CUSTOMER = "C-reconcile-arch"


async def test_reconcile_finds_each_final_state_archived_or_waiting(
    stack_for: StackFactory, archive_url: str
) -> None:
    stack = await stack_for(workers=1, archive_url=archive_url, rate_limit=RateLimit(1000, 60))
    await stack.client.bind(CUSTOMER, "oUser_reconarch")
    archived = [make_event(customer_id=CUSTOMER) for _ in range(8)]
    for event in archived:
        assert (await stack.client.post_event(event))[0] == 202
    for event in archived:
        await until_status(stack, event["event_id"], "delivered")
    await until_archived(stack.redis, archive_url, len(archived))
    await stack.stop_workers()
    unreachable = f"postgresql://postgres:none@127.0.0.1:{free_port()}/none?sslmode=disable"
    stack.start_worker(name="cut-off", archive_url=unreachable)  # delivers; its archiver cannot write
    waiting = [make_event(customer_id=CUSTOMER) for _ in range(3)]
    for event in waiting:
        assert (await stack.client.post_event(event))[0] == 202
    for event in waiting:
        await until_status(stack, event["event_id"], "delivered")
    await stack.stop_workers()
    assert await archive_backlog(stack.redis) == len(waiting)

    result = await reconcile(stack.redis, stack.settings, 0, 2**62)
    assert result.archive is not None
    assert (result.archive["final"], result.archive["archived"], result.archive["waiting"]) == (11, 8, 3)
    assert (result.archive["missing"], result.adds_up, result.exit_status) == ([], True, 0)

    conn = await asyncpg.connect(archive_url)  # a row lost in PostgreSQL (a restore from an older backup)
    try:
        await conn.execute("DELETE FROM archive_events WHERE event_id = $1", archived[0]["event_id"])
    finally:
        await conn.close()
    lost = await reconcile(stack.redis, stack.settings, 0, 2**62)
    assert lost.archive is not None and lost.archive["missing"] == [f"cbs:{archived[0]['event_id']}"]
    assert (lost.adds_up, lost.exit_status) == (False, 1)
