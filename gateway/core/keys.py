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


def stream(shard: int) -> str:
    """Stream of entries to deliver."""
    return f"{_tag(shard)}:stream"


def retries(shard: int) -> str:
    """Sorted set: stream entry (JSON) -> unix ms when it is due again."""
    return f"{_tag(shard)}:retry"


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
    """Sorted set: a customer's messages in the current window (member -> unix ms)."""
    return f"{_tag(shard)}:rate:{customer_id}"


def event(shard: int, source: str, event_id: str) -> str:
    """Hash: the event's dedup record and lifecycle (status, attempts, timestamps, last error)."""
    return f"{_tag(shard)}:event:{source}:{event_id}"


def signature(shard: int, signature_hex: str) -> str:
    """A request signature seen within the signature window (replay protection)."""
    return f"{_tag(shard)}:sig:{signature_hex}"


def binding(customer_id: str) -> str:
    """Hash: the customer's WeChat openid, appid and binding state."""
    return f"{PREFIX}:binding:{{{customer_id}}}"


def token(appid: str) -> str:
    """Hash: the shared WeChat access token of one appid (token, expires_at_ms)."""
    return f"{PREFIX}:{{wx:{appid}}}:token"


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
