"""The notifier: Standard Webhooks signatures checked by an independent receiver, the outcome table, and each
outcome of a real POST recorded with the XACK in Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis
from standardwebhooks import Webhook

from gateway.core import keys
from gateway.core.recipient import recipient_hash
from gateway.core.redis import ensure_groups
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from tests.support import KEY_ID, SECRET
from tests.webhook_receiver import WebhookReceiver, verify, whsec
from tests.workers.flows import Entries, scored
from workers.notices import (
    Answer,
    Notice,
    Notifier,
    Outcome,
    classify,
    parse_retry_after,
    sign,
    signing_key,
    webhook_id,
)

# The Standard Webhooks specification's published test vector (its libraries' tests use it).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - a public test vector
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OLD_SECRET = "previous-ingress-secret"  # noqa: S105 - a fixture key
SHARD = 0


def test_sign_reproduces_the_specs_test_vector() -> None:
    assert sign(signing_key(VECTOR_SECRET), VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_official_library_agrees_with_the_vector() -> None:
    library = Webhook(VECTOR_SECRET)
    assert library.sign(VECTOR_ID, datetime.fromtimestamp(VECTOR_TS, UTC), VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_test_receiver_accepts_our_signature_and_refuses_changes() -> None:
    now_s = int(time.time())

    def headers(signature: str | None = None, msg_id: str = VECTOR_ID, at_s: int = now_s) -> dict[str, str]:
        signature = signature or sign(signing_key(SECRET), VECTOR_ID, at_s, VECTOR_BODY)
        return {"webhook-id": msg_id, "webhook-timestamp": str(at_s), "webhook-signature": signature}

    assert verify(headers(), VECTOR_BODY, [SECRET]) is None
    assert verify(headers(), VECTOR_BODY, [whsec(SECRET)]) is None
    assert verify(headers(f"v1,bad {headers()['webhook-signature']}"), VECTOR_BODY, [SECRET]) is None
    assert verify(headers(), VECTOR_BODY, ["other", SECRET]) is None
    assert verify(headers(), VECTOR_BODY + b" ", [SECRET]) == "No matching signature found"
    assert verify(headers(msg_id="msg_other"), VECTOR_BODY, [SECRET]) == "No matching signature found"
    assert verify(headers(), VECTOR_BODY, ["whsec_b3RoZXI="]) == "No matching signature found"
    assert verify(headers(at_s=now_s - 3600), VECTOR_BODY, [SECRET]) == "Message timestamp too old"
    assert verify({}, VECTOR_BODY, [SECRET]) == "Missing required headers"


def test_signing_key_of_plain_and_whsec_secrets() -> None:
    assert signing_key(SECRET) == SECRET.encode()
    assert signing_key(whsec(SECRET)) == SECRET.encode()  # what a Standard Webhooks library is given
    assert signing_key("whsec_not base64!") == b"whsec_not base64!"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (Answer(200), Outcome.SENT),
        (Answer(204), Outcome.SENT),
        (Answer(299), Outcome.SENT),
        (Answer(301), Outcome.PERMANENT),
        (Answer(400), Outcome.PERMANENT),
        (Answer(401), Outcome.PERMANENT),
        (Answer(404), Outcome.PERMANENT),
        (Answer(410), Outcome.PERMANENT),
        (Answer(408), Outcome.RETRY),
        (Answer(429), Outcome.RETRY),
        (Answer(500), Outcome.RETRY),
        (Answer(502), Outcome.RETRY),
        (Answer(503), Outcome.RETRY),
        (Answer(None, "timeout"), Outcome.RETRY),
        (Answer(None, "connection"), Outcome.RETRY),
    ],
)
def test_classify(answer: Answer, outcome: Outcome) -> None:
    assert classify(answer) is outcome


NOW_S = 1_800_000_000.0


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        (None, None),
        ("", None),
        ("30", 30.0),
        (" 7 ", 7.0),
        ("999999", 3600.0),
        ("-5", None),
        ("soon", None),
        (format_datetime(datetime.fromtimestamp(NOW_S, UTC) + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(datetime.fromtimestamp(NOW_S, UTC) - timedelta(seconds=90), usegmt=True), None),
    ],
)
def test_parse_retry_after(raw: str | None, seconds: float | None) -> None:
    assert parse_retry_after(raw, NOW_S) == seconds


def test_webhook_id_is_stable_per_event_and_type_and_has_no_dots() -> None:
    first = webhook_id("cbs", "E.1", "event.failed")
    assert first == webhook_id("cbs", "E.1", "event.failed")
    assert first != webhook_id("cbs", "E.1", "event.user_blocked")
    assert first != webhook_id("cbs2", "E.1", "event.failed")
    assert first.startswith("msg_") and "." not in first


def test_body_holds_ids_status_and_reason_only() -> None:
    fields = {"src": "cbs", "eid": "E1", "cid": "C1", "type": "event.dead_lettered"}
    fields |= {
        "status": "dead_lettered",
        "reason": "render: amount 1234.56",
        "at": "1800000000123",
        "att": "4",
    }
    body = orjson.loads(Notice(SHARD, "1-0", fields).body())
    assert body == {
        "type": "event.dead_lettered",
        "timestamp": "2027-01-15T08:00:00.123Z",
        "data": {"event_id": "E1", "customer_id": "C1", "status": "dead_lettered", "reason": "render_error"},
    }
    assert Notice(SHARD, "1-0", {**fields, "att": "9"}).body() == Notice(SHARD, "2-0", fields).body()


# posting, against a real receiver and Redis


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    started = await WebhookReceiver([SECRET]).start()
    yield started
    await started.stop()


@pytest.fixture
async def notifier_for(
    redis: Redis, receiver: WebhookReceiver, settings_for: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def build(**overrides: Any) -> Notifier:
        settings = settings_for(**{"callback_urls": {KEY_ID: receiver.url}, **overrides})
        notifier = Notifier(settings, redis, Scripts(settings), uniform=lambda low, high: high)
        made.append(notifier)
        return notifier

    yield build
    for notifier in made:
        await notifier.close()


async def _read_notice(redis: Redis, event_id: str = "E1", **fields: str) -> tuple[str, dict[str, str]]:
    """Queue a notice as finish.lua does (record + entry) and read it as a consumer."""
    await ensure_groups(redis, 1)
    record = keys.event(SHARD, KEY_ID, event_id)
    await redis.hset(record, mapping={"status": "no_binding", "src": KEY_ID, "notice": "queued"})
    entry = {"src": KEY_ID, "eid": event_id, "cid": "C1", "type": "event.no_binding", "status": "no_binding"}
    entry |= {"reason": "no_binding", "at": str(int(time.time() * 1000)), "att": "0", **fields}
    await redis.xadd(keys.notices(SHARD), cast(Any, entry))
    batch: Any = await redis.xreadgroup(keys.NOTICE_GROUP, "t", {keys.notices(SHARD): ">"}, count=1)
    return cast(Entries, batch[0][1])[0]


async def _record(redis: Redis, event_id: str = "E1") -> dict[str, str]:
    return cast(dict[str, str], await redis.hgetall(keys.event(SHARD, KEY_ID, event_id)))


async def _pending(redis: Redis) -> int:
    summary: Any = await redis.xpending(keys.notices(SHARD), keys.NOTICE_GROUP)
    return int(summary["pending"])


async def _dead_reasons(redis: Redis) -> list[str]:
    entries = cast(Entries, await redis.xrange(keys.notice_dead_letters(SHARD)))
    return [fields["reason"] for _, fields in entries]


async def test_a_2xx_is_sent_signed_and_recorded(
    redis: Redis, receiver: WebhookReceiver, notifier_for: Callable[..., Notifier]
) -> None:
    entry_id, fields = await _read_notice(redis)

    await notifier_for().handle(SHARD, entry_id, fields)

    [got] = receiver.received
    assert got.webhook_id == webhook_id(KEY_ID, "E1", "event.no_binding") and len(got.signatures) == 1
    assert got.body["data"] == {
        "event_id": "E1",
        "customer_id": "C1",
        "status": "no_binding",
        "reason": "no_binding",
    }
    record = await _record(redis)
    assert record["notice"] == "sent" and "notified_ms" in record
    assert await _pending(redis) == 0


async def test_a_4xx_is_permanent_failed_and_dead_lettered(
    redis: Redis, receiver: WebhookReceiver, notifier_for: Callable[..., Notifier]
) -> None:
    receiver.answer_status = 404
    entry_id, fields = await _read_notice(redis)

    await notifier_for().handle(SHARD, entry_id, fields)

    assert (await _record(redis))["notice"] == "failed"
    assert await _dead_reasons(redis) == ["http_404"]
    assert await _pending(redis) == 0 and await redis.zcard(keys.notice_retries(SHARD)) == 0


async def test_a_503_is_retried_no_sooner_than_its_retry_after(
    redis: Redis, receiver: WebhookReceiver, notifier_for: Callable[..., Notifier]
) -> None:
    receiver.answer_status = 503
    receiver.answer_headers = {"Retry-After": "30"}
    entry_id, fields = await _read_notice(redis)
    before_ms = int(time.time() * 1000)

    await notifier_for().handle(SHARD, entry_id, fields)

    [(member, due_ms)] = await scored(redis, keys.notice_retries(SHARD))
    assert orjson.loads(member)["att"] == "1"
    assert due_ms >= before_ms + 30_000  # the backoff ceiling here is 0.05 s: Retry-After wins
    record = await _record(redis)
    assert (record["notice"], record["notice_error"]) == ("retrying", "http_503")


async def test_refused_connections_end_in_the_dead_letters_after_max_attempts(
    redis: Redis, receiver: WebhookReceiver, notifier_for: Callable[..., Notifier]
) -> None:
    await receiver.stop()
    entry_id, fields = await _read_notice(redis, att="2")

    await notifier_for(notice_max_attempts=3).handle(SHARD, entry_id, fields)

    assert await _dead_reasons(redis) == ["max_attempts: connection"]
    assert (await _record(redis))["notice"] == "dead_lettered"


async def test_an_old_notice_is_dead_lettered_instead_of_retried(
    redis: Redis, receiver: WebhookReceiver, notifier_for: Callable[..., Notifier]
) -> None:
    receiver.answer_status = 500
    entry_id, fields = await _read_notice(redis, at=str(int(time.time() * 1000) - 7200_000))

    await notifier_for(notice_max_age_s=3600).handle(SHARD, entry_id, fields)

    assert await _dead_reasons(redis) == ["max_age: http_500"]


async def test_an_old_notice_replayed_is_retried_its_age_counted_from_the_replay(
    redis: Redis, receiver: WebhookReceiver, notifier_for: Callable[..., Notifier]
) -> None:
    receiver.answer_status = 500
    now_ms = int(time.time() * 1000)
    entry_id, fields = await _read_notice(redis, at=str(now_ms - 7200_000), rep=str(now_ms))

    await notifier_for(notice_max_age_s=3600).handle(SHARD, entry_id, fields)

    assert await _dead_reasons(redis) == []
    assert await redis.zcard(keys.notice_retries(SHARD)) == 1


async def test_a_rotated_secret_signs_twice_and_each_receiver_accepts(
    redis: Redis, receiver: WebhookReceiver, notifier_for: Callable[..., Notifier]
) -> None:
    notifier = notifier_for(callback_previous_secrets={KEY_ID: OLD_SECRET})
    receiver.secrets = [whsec(OLD_SECRET)]  # not yet rotated: a Standard Webhooks library with the old one
    entry_id, fields = await _read_notice(redis, "E-old")
    await notifier.handle(SHARD, entry_id, fields)
    receiver.secrets = [SECRET]  # rotated
    entry_id, fields = await _read_notice(redis, "E-new")
    await notifier.handle(SHARD, entry_id, fields)

    assert receiver.rejected == []
    assert [len(got.signatures) for got in receiver.received] == [2, 2]
    assert (await _record(redis, "E-old"))["notice"] == (await _record(redis, "E-new"))["notice"] == "sent"


async def test_a_user_block_queued_by_finish_event_is_posted(
    redis: Redis, receiver: WebhookReceiver, notifier_for: Callable[..., Notifier], settings_for: Any
) -> None:
    await ensure_groups(redis, 1)
    record = keys.event(SHARD, KEY_ID, "E-blocked")
    to_hash = recipient_hash("77", "oBlocked_0001")
    await redis.hset(
        record,
        mapping={
            "status": "delivered",
            "src": KEY_ID,
            "eid": "E-blocked",
            "customer_id": "C9",
            "msgid": "77",
            "to_hash": to_hash,
        },
    )
    settings = settings_for(callback_urls={KEY_ID: receiver.url})
    await Scripts(settings).finish_event(
        redis, SHARD, [record], "failed:user block", 1_800_000_000_000, msgid="77", to_hash=to_hash
    )
    batch: Any = await redis.xreadgroup(keys.NOTICE_GROUP, "t", {keys.notices(SHARD): ">"}, count=1)
    [(entry_id, fields)] = cast(Entries, batch[0][1])

    await notifier_for().handle(SHARD, entry_id, fields)

    [got] = receiver.received
    assert got.body["type"] == "event.user_blocked"
    assert got.body["data"] == {
        "event_id": "E-blocked",
        "customer_id": "C9",
        "status": "delivered",
        "reason": "failed:user block",
    }
    assert await redis.hget(record, "notice") == "sent"


async def test_a_source_without_a_callback_any_more_is_kept_for_replay(
    redis: Redis, receiver: WebhookReceiver, notifier_for: Callable[..., Notifier]
) -> None:
    entry_id, fields = await _read_notice(redis)

    await notifier_for(callback_urls={}).handle(SHARD, entry_id, fields)

    assert receiver.raw == 0
    assert await _dead_reasons(redis) == ["no_callback_url"]
