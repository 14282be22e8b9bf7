"""Who a delivered message went to, as its record keeps it: a hash of the openid, keyed by the msgid.

The worker writes it on the event records with the msgid (finish.lua); a WeChat finish event counts only
when the hash of its FromUserName matches (finish_event.lua), so a forged receipt for a real msgid but
another user changes nothing. The key is the msgid, not a secret: the value links no two messages and
confirms an openid only to whoever already holds it (the binding keeps the openid itself).
"""

import hashlib
import hmac

__all__ = ["recipient_hash"]

_CONTEXT = b"pushgw-recipient:"


def recipient_hash(msgid: str, openid: str) -> str:
    """32 hex digits of HMAC-SHA256(msgid, openid): stable across processes and versions."""
    digest = hmac.new(_CONTEXT + msgid.encode(), openid.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]
