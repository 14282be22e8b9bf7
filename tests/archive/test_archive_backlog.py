"""The archive backlog stays visible when no worker archives: gateways with PUSHGW_ARCHIVE_URL hand final
states over at ingest and sample the backlog themselves, so `pushgw_archive_backlog` and
`pushgw_archive_lag_seconds` (the PushgwArchiveBacklog alert's inputs) grow on the gateway's /metrics whether
the workers lack the URL or none ever started (no `archiver` group yet), and clear once an archiving worker
drains it."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.core import metrics
from gateway.core.archive import backlog
from gateway.core.settings import RateLimit
from tests.archive.helpers import sample, until_archived
from tests.conftest import Stack
from tests.support import eventually, make_event
from tests.workers.flows import StackFactory
from workers import archive

pytestmark = pytest.mark.e2e
MUTED = 30


async def _scraped(stack: Stack, name: str) -> float | None:
    """A gauge as the gateway's /metrics serves it."""
    async with aiohttp.ClientSession() as session, session.get(stack.client.url + "/metrics") as response:
        text = await response.text()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return next((s.value for s in samples if s.name == name), None)


async def test_only_gateways_have_the_archive_url_and_the_backlog_still_shows(
    stack_for: StackFactory, archive_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backlog, "SAMPLE_S", 0.1)
    monkeypatch.setattr(archive, "SAMPLE_S", 0.1)
    metrics.ARCHIVE_BACKLOG.set(0)
    metrics.ARCHIVE_LAG.set(0)
    stack = await stack_for(workers=0, archive_url=archive_url, rate_limit=RateLimit(100_000, 60))
    status, _ = await stack.client.call("PUT", "/v1/customers/C-b/preferences", {"muted_types": ["refund"]})
    assert status == 200
    events = [make_event(customer_id="C-b", type="refund") for _ in range(MUTED)]
    status, body = await stack.client.call("POST", "/v1/events/batch", {"events": events[: MUTED // 2]})
    assert status == 200 and {r["status"] for r in body["results"]} == {"suppressed"}

    async def shown(count: int) -> bool:
        return sample(metrics.ARCHIVE_BACKLOG) == count and sample(metrics.ARCHIVE_LAG) > 0

    await eventually(lambda: shown(MUTED // 2), timeout_s=5)  # no worker ever ran: no group, all of it waits

    stack.start_worker(name="no-archive", archive_url="")  # makes the groups, delivers, archives nothing
    status, body = await stack.client.call("POST", "/v1/events/batch", {"events": events[MUTED // 2 :]})
    assert status == 200
    await eventually(lambda: shown(MUTED), timeout_s=5)
    assert await _scraped(stack, "pushgw_archive_backlog") == MUTED
    assert (await _scraped(stack, "pushgw_archive_lag_seconds") or 0) > 0  # the alert's input, on the gateway

    stack.start_worker(name="archiver")  # the fix the runbook names: a worker with PUSHGW_ARCHIVE_URL
    await until_archived(stack.redis, archive_url, MUTED)

    async def cleared() -> bool:
        return sample(metrics.ARCHIVE_BACKLOG) == 0 and sample(metrics.ARCHIVE_LAG) == 0

    await eventually(cleared, timeout_s=5)


async def test_a_gateway_without_the_archive_url_runs_no_sampler(stack_for: StackFactory) -> None:
    await stack_for(workers=0)
    assert "archive-backlog-sampler" not in {task.get_name() for task in asyncio.all_tasks()}
