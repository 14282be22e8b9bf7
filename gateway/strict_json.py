"""One JSON document, strictly: orjson's parser, plus the refusal of an object that repeats a key.

RFC 8259 leaves a repeated name to the implementation, and every parser keeps a different one (orjson and
the stdlib the last, others the first): `{"amount": "1.00", "amount": "999999.00"}` would mean one thing to a
signing proxy and another to us. So a repeated key, at any depth, is not JSON to the gateway.

The check must cost little on the hot path, so it counts instead of re-parsing. Over a document orjson
accepted, with P the keys of the objects it built (a repeat collapses into one) and K the key tokens of the
raw text, P <= K, and a key repeats exactly when P < K:
- fast bound: each key token ends in `"`, optional whitespace, `:`; deleting all whitespace (strings too)
  leaves a `":` for each of them, and other `":` only from odd strings (`\\":` inside, or a string that
  starts with `:`). So U = that count is >= K, and U == P proves no key repeats (typical bodies: ~1 us);
- exact count, when U != P: the strings are removed by a regex that matches one whole string at a time (in
  valid JSON every `"` outside a string opens one, so quoted colons cannot fool it); each colon left
  separates a key from its value, so K is their number (a few us per kilobyte).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_WHITESPACE = b" \t\n\r"  # JSON's four whitespace bytes (RFC 8259 s.2)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


class DuplicateKey(ValueError):
    """An object in the document repeats a key (which one is not said: it is request data)."""


def loads(body: bytes) -> Any:
    """Parse one JSON document. Raises orjson.JSONDecodeError when it is not JSON, DuplicateKey when an
    object repeats a key (compared after unescaping: `"a"` and `"\\u0061"` are one key)."""
    value = orjson.loads(body)
    if type(value) is dict or type(value) is list:
        parsed = _keys_in(value)
        if body.translate(None, _WHITESPACE).count(b'":') != parsed and _key_tokens(body) != parsed:
            raise DuplicateKey("an object repeats a key")
    return value


def _keys_in(value: dict[str, Any] | list[Any]) -> int:
    """The keys of every object in a parsed document (iterative: orjson nests up to 1024 deep)."""
    count = 0
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if type(item) is dict:
            count += len(item)
            item = item.values()
        for child in item:
            if type(child) is dict or type(child) is list:
                pending.append(child)
    return count


def _key_tokens(body: bytes) -> int:
    """The key tokens of a valid JSON text: the colons left once every string is removed."""
    return _STRING.sub(b"", body).count(b":")
