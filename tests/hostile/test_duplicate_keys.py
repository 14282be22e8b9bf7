"""A JSON object that repeats a key is not JSON to the gateway (400 invalid_json), at any depth; the check
(gateway/strict_json.py) agrees exactly with the stdlib parser's own view of the pairs, on any document."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import strict_json
from tests.gateway.helpers import assert_error_shape
from tests.hostile.conftest import GatewayFactory
from tests.support import make_event

_WS = st.sampled_from(["", " ", "\n", "\t", "\r\n", "  \t\n "])
# few and odd key texts, so that repeats are frequent and quotes, colons and escapes sit inside strings
_TEXTS = st.sampled_from(["a", "b", "amount", ":", '"', '":', '\\":', "a:b", " :", "é", "", "\u2028", "\\"])
_ANY_TEXT = _TEXTS | st.text(max_size=4)
_SHORT = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\b": "\\b",
    "\f": "\\f",
    "/": "\\/",
}


@st.composite
def json_strings(draw: st.DrawFn, texts: st.SearchStrategy[str] = _ANY_TEXT) -> str:
    """A JSON string of a drawn text, each character written raw, as a short escape or as \\uXXXX."""
    out = ['"']
    for char in draw(texts):
        raw_allowed = char not in '"\\' and ord(char) >= 0x20
        style = draw(st.sampled_from(["raw", "short", "u"]))
        if style == "raw" and raw_allowed:
            out.append(char)
        elif style == "short" and char in _SHORT:
            out.append(_SHORT[char])
        else:
            units = char.encode("utf-16-be")
            out += [f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2)]
    return "".join(out) + '"'


_SCALARS = st.sampled_from(["1", "-0.5e3", "true", "false", "null", "0", "123456789"]) | json_strings()


def _arrays(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    @st.composite
    def build(draw: st.DrawFn) -> str:
        items = draw(st.lists(children, max_size=4))
        return "[" + ",".join(draw(_WS) + item + draw(_WS) for item in items) + draw(_WS) + "]"

    return build()


def _objects(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    @st.composite
    def build(draw: st.DrawFn) -> str:
        pairs = draw(st.lists(st.tuples(json_strings(_TEXTS), children), max_size=5))
        members = [draw(_WS) + key + draw(_WS) + ":" + draw(_WS) + value + draw(_WS) for key, value in pairs]
        return "{" + ",".join(members) + draw(_WS) + "}"

    return build()


documents = st.recursive(_SCALARS, lambda inner: _arrays(inner) | _objects(inner), max_leaves=20).map(
    lambda text: text.encode()
)


def repeats_a_key(body: bytes) -> bool:
    """The oracle: the stdlib parser, told every object's pairs in order."""
    repeated = False

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        names = [name for name, _ in pairs]
        repeated = repeated or len(names) != len(set(names))
        return dict(pairs)

    json.loads(body, object_pairs_hook=pairs_hook)
    return repeated


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=documents)
@example(body=b'{"amount": "1.00", "amount": "999999.00"}')
@example(body=b'{"a" :1, "a" :2, "b": ":"}')  # whitespace before the colons and a ":" value: counts fooled
@example(body=b'{"a": "x\\":", "b": ":"}')  # quoted colons, no repeat
@example(body=b'{"a": 1, "\\u0061": 2}')  # one key, spelled twice
@example(body=b'[{"a": 1}, {"a": 1}]')  # the same key in two objects is no repeat
@example(body=b'{"a": {"b": [{"c": 1, "c": 2}]}}')
def test_the_check_agrees_with_the_stdlib_parser(body: bytes) -> None:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return  # not JSON at all: decode_json answers invalid_json anyway
    if repeats_a_key(body):
        with pytest.raises(strict_json.DuplicateKey):
            strict_json.loads(body)
    else:
        assert strict_json.loads(body) == json.loads(body)


def test_deep_documents_are_checked_without_recursion() -> None:
    deep = b'{"a":' * 1000 + b"1" + b"}" * 1000
    assert strict_json.loads(deep)
    with pytest.raises(strict_json.DuplicateKey):
        strict_json.loads(b"[" * 1000 + b'{"a":1,"a":2}' + b"]" * 1000)


def _with_repeat(event: dict[str, Any], name: str, raw_value: bytes) -> bytes:
    """The event's JSON with a second `name` member holding raw JSON, after all the others."""
    return orjson.dumps(event)[:-1] + b',"' + name.encode() + b'":' + raw_value + b"}"


@pytest.mark.e2e
async def test_a_repeated_key_is_refused_at_any_depth(gateway_for: GatewayFactory) -> None:
    served = await gateway_for()
    event = make_event(amount="1.00")
    single = _with_repeat(event, "amount", b'"999999.00"')
    nested = _with_repeat(make_event(), "counterparty", b'{"name": "x", "name": "y"}')
    cases = [
        ("POST", "/v1/events", single),
        ("POST", "/v1/events", nested),
        ("POST", "/v1/events/batch", b'{"events": [' + single + b"]}"),
        ("POST", "/v1/events/batch", b'{"events": [' + orjson.dumps(make_event()) + b"," + nested + b"]}"),
        ("POST", "/v1/events/batch", b'{"events": [], "events": [' + orjson.dumps(make_event()) + b"]}"),
        ("PUT", "/v1/bindings/C-dup", b'{"openid": "oUser_a", "openid": "oUser_b"}'),
    ]
    for method, path, body in cases:
        status, answer = await served.client.call(method, path, raw=body)
        assert status == 400, (path, body, answer)
        assert_error_shape(answer)
        assert answer["error"]["code"] == "invalid_json"
    status, _ = await served.client.call("GET", f"/v1/events/{event['event_id']}")
    assert status == 404  # nothing was kept
