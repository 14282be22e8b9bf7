"""Every Redis key pushgw uses. Keys of one event share a shard hash tag, so each script touches one slot.

Shards are chosen by customer, so one customer's events, rate limit and digest live together and stay in
order. A binding and the WeChat token are looked up by plain commands, never inside a shard's script.
"""

import zlib

PREFIX = "pushgw"
GROUP = "delivery"


def shard_of(customer_id: str, shards: int) -> int:
    """The shard (0..shards-1) of a customer: stable across processes and versions."""
    return zlib.crc32(customer_id.encode()) % shards


def _tag(shard: int) -> str:
    return f"{PREFIX}:{{s{shard}}}"


NOTICE_GROUP = "notices"
ARCHIVE_GROUP = "archiver"
EPOCH = f"{PREFIX}:epoch"  # hash: the id of this deployment's data, written once (see redis.py check_epoch)


def stream(shard: int, critical: bool = False) -> str:
    """Stream of entries to deliver; critical events have their own stream, read before the other."""
    return f"{_tag(shard)}:critical" if critical else f"{_tag(shard)}:stream"


def retries(shard: int, critical: bool = False) -> str:
    """Sorted set: stream entry (JSON) -> unix ms when it is due again on `stream(shard, critical)`."""
    return f"{_tag(shard)}:critical-retry" if critical else f"{_tag(shard)}:retry"


def consumer_groups(shard: int) -> list[tuple[str, str]]:
    """(stream, consumer group) of each stream of a shard that workers read, critical first."""
    return [
        (stream(shard, critical=True), GROUP),
        (stream(shard), GROUP),
        (notices(shard), NOTICE_GROUP),
        (archive(shard), ARCHIVE_GROUP),
    ]


def dead_letters(shard: int) -> str:
    """Stream of entries that will not be delivered, with the reason."""
    return f"{_tag(shard)}:dead"


def digest_due(shard: int) -> str:
    """Sorted set: customer id -> unix ms when that customer's held events may go out as one digest."""
    return f"{_tag(shard)}:digest-due"


def digest_held(shard: int, customer_id: str) -> str:
    """List of a customer's events held by the rate limit (entry JSON), oldest first."""
    return f"{_tag(shard)}:digest:{customer_id}"


def rate_log(shard: int, customer_id: str) -> str:
    """String: the unix ms of a customer's last admitted messages, at most the limit's count, oldest first, in
    fixed-width entries (scripts/lib/rate_log.lua); it expires a window after the last admission."""
    return f"{_tag(shard)}:admits:{customer_id}"


def event(shard: int, source: str, event_id: str) -> str:
    """Hash: the event's dedup record and lifecycle (status, attempts, timestamps, last error)."""
    return f"{_tag(shard)}:event:{source}:{event_id}"


def preferences(shard: int, customer_id: str) -> str:
    """Hash: the customer's preferences (the document, and its compiled form the ingest script reads)."""
    return f"{_tag(shard)}:prefs:{customer_id}"


def customer_events(shard: int, customer_id: str) -> str:
    """Sorted set: the customer's recent events ("source:event_id" -> accepted unix ms), newest last."""
    return f"{_tag(shard)}:timeline:{customer_id}"


def notices(shard: int) -> str:
    """Stream of status notices to post to core banking's callback (the SMS fallback)."""
    return f"{_tag(shard)}:notices"


def archive(shard: int) -> str:
    """Stream of event records that reached a final state (a snapshot of each, with its version), for the
    PostgreSQL archive (workers/archive.py); written in the same script as the state, only while an archive
    is configured, and trimmed only below what the `archiver` group acknowledged."""
    return f"{_tag(shard)}:archive"


def notice_retries(shard: int) -> str:
    """Sorted set: notice entry (JSON) -> unix ms when it is due again."""
    return f"{_tag(shard)}:notice-retry"


def notice_dead_letters(shard: int) -> str:
    """Stream of notices that could not be posted, with the reason."""
    return f"{_tag(shard)}:notice-dead"


def event_claim(source: str, event_id: str, shards: int) -> str:
    """String: the payload hash an event id was first seen with, in a shard of its own (by source and event
    id), so that one id sent for customers of two shards is still one event. Used only with several shards."""
    return f"{_tag(shard_of(f'{source}:{event_id}', shards))}:claim:{source}:{event_id}"


def nonce(shard: int, key_id: str, nonce: str) -> str:
    """String: a signature nonce of a state-changing request, kept for twice the signature window (replay
    protection)."""
    return f"{_tag(shard)}:nonce:{key_id}:{nonce}"


def binding(customer_id: str) -> str:
    """Hash: the customer's WeChat openid, appid and binding state."""
    return f"{PREFIX}:binding:{{{customer_id}}}"


def token(appid: str) -> str:
    """Hash: the shared WeChat access token of one appid (token, expires_at_ms)."""
    return f"{PREFIX}:{{wx:{appid}}}:token"


def send_rate(appid: str) -> str:
    """Hash: the sends of an appid in the current second, across all workers (the global outbound limit)."""
    return f"{PREFIX}:{{wx:{appid}}}:sends"


def token_lock(appid: str) -> str:
    """Lock held by the one process refreshing an appid's token."""
    return f"{PREFIX}:{{wx:{appid}}}:token-lock"


def msgid(msgid: str) -> str:
    """String: the delivered message's WeChat msgid -> JSON {"cid", "records"} (for finish events).

    Written by a plain SET beside the finish script (not inside it: the records' shard is another slot).
    """
    return f"{PREFIX}:msgid:{{{msgid}}}"


def wechat_callback_seen(digest: str) -> str:
    """A WeChat callback already handled (dedup of its retries and doubles), by a digest of its identity."""
    return f"{PREFIX}:wxcb:{{{digest}}}"
