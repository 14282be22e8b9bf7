"""Ingress request signatures: X-Pushgw-Key / -Timestamp / -Signature = hex HMAC-SHA256 over `ts.body`.

Several keys may be live at once (rotation). The comparison is constant-time; a request older (or newer)
than the window is refused; a signature seen before is refused by the caller through Redis (replay).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.core.errors import Unauthorized

OPEN_SOURCE = "open"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the key id (the event-id scope) and its signature, None when running open."""

    source: str
    signature: str | None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a source system sends (also what tests and the load test use)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Verifier:
    def __init__(self, keys: Mapping[str, str], window_s: int, *, open_ingress: bool) -> None:
        self._keys = dict(keys)
        self._window_s = window_s
        self._open = open_ingress

    def verify(self, headers: Mapping[str, str], body: bytes, now_s: float) -> Caller:
        """Raises Unauthorized; never says which part of a signature was wrong."""
        key_id = headers.get("X-Pushgw-Key")
        if key_id is None and self._open:
            return Caller(OPEN_SOURCE, None)
        timestamp = headers.get("X-Pushgw-Timestamp")
        signature = headers.get("X-Pushgw-Signature")
        if not key_id or not timestamp or not signature:
            raise Unauthorized("X-Pushgw-Key, X-Pushgw-Timestamp and X-Pushgw-Signature are required")
        # isascii: str.isdigit() is also true for "²", which int() refuses (that was a 500)
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
            raise Unauthorized("X-Pushgw-Timestamp must be unix seconds")
        if abs(now_s - int(timestamp)) > self._window_s:
            raise Unauthorized(f"request timestamp is outside the {self._window_s} s window")
        secret = self._keys.get(key_id)
        expected = sign(secret or "", timestamp, body)
        # compare even for an unknown key id, so timing does not tell which key ids exist
        given = signature.lower().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(expected.encode(), given) or secret is None:
            raise Unauthorized("invalid signature")
        return Caller(key_id, expected)
