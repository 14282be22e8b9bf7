"""Bad input can never reach the 500 path: arbitrary JSON and bytes get a 4xx in the one error shape."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error_shape, send
from tests.support import make_event, signed_headers

pytestmark = pytest.mark.e2e

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_field_values = (
    json_values
    | st.from_regex(r"-?[0-9]{0,17}(\.[0-9]{0,3})?", fullmatch=True)
    | st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{0,12}([+-][0-9:]{0,6}|Z)?", fullmatch=True)
)


@st.composite
def near_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with some fields replaced, removed or added: the input that gets deep into checks."""
    event = make_event(customer_id=f"C-fuzz{draw(st.integers(0, 9))}")
    for name in draw(st.lists(st.sampled_from(sorted(event)), max_size=3, unique=True)):
        if draw(st.booleans()):
            event[name] = draw(_field_values)
        else:
            del event[name]
    for name in draw(st.lists(st.sampled_from(["priority", "fallback", "balance", "extra"]), max_size=2)):
        event[name] = draw(_field_values | st.sampled_from(["normal", "critical", "sms", "none"]))
    return event


bodies = (
    near_events().map(orjson.dumps)
    | json_values.map(orjson.dumps)
    | st.lists(near_events(), min_size=1, max_size=3).map(lambda events: orjson.dumps({"events": events}))
    | st.dictionaries(st.text(max_size=8), json_values, max_size=2).map(lambda d: orjson.dumps({"events": d}))
    | st.binary(max_size=512)
)


def assert_not_a_server_error(answer: Answer) -> None:
    assert answer.status < 500, answer
    if answer.status >= 400:
        assert_error_shape(answer.body)
    elif "results" in answer.body:
        for result in answer.body["results"]:
            if "error" in result:
                assert_error_shape({"error": result["error"]})


@pytest.fixture
async def stack(stack_for: Callable[..., Any]) -> Stack:
    """One gateway for every example (hypothesis runs them all within one test call)."""
    built: Stack = await stack_for(workers=0)
    return built


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
async def test_no_body_gets_a_500(stack: Stack, body: bytes) -> None:
    for path in ("/v1/events", "/v1/events/batch"):
        assert_not_a_server_error(await send(stack.session, stack.client.url, "POST", path, raw=body))


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["Signature-Input", "Signature", "Content-Digest"]),
    value=st.text(st.characters(min_codepoint=0x20, exclude_characters="\x7f"), max_size=120)
    | st.sampled_from(['pushgw=("@method" "@path" "@query");created=1', "pushgw=:AAAA:", "sha-256=:A:", ","]),
)
async def test_no_signature_header_gets_a_500(stack: Stack, name: str, value: str) -> None:
    body = orjson.dumps(make_event())
    headers = {**signed_headers(body), name: value.strip()}
    answer = await send(stack.session, stack.client.url, "POST", "/v1/events", raw=body, headers=headers)
    assert_not_a_server_error(answer)


# --- hostile bodies, each named: always a 4xx in the one error shape, never a 5xx ---------------------


def _event_with(name: str, raw_value: bytes) -> bytes:
    """A valid event's JSON with one field's value replaced by raw JSON bytes (as no serializer writes)."""
    event = make_event(customer_id="C-hostile")
    event[name] = "\x01PLACEHOLDER\x01"
    return orjson.dumps(event).replace(b'"\\u0001PLACEHOLDER\\u0001"', raw_value)


_DEEP = 100_000
HOSTILE: list[tuple[str, bytes]] = [
    ("deep-array", b"[" * _DEEP + b"]" * _DEEP),
    ("deep-object", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("deep-in-a-field", _event_with("counterparty", b"[" * 2000 + b"]" * 2000)),
    ("nested-500-in-a-field", _event_with("counterparty", b"[" * 500 + b"]" * 500)),
    ("1e400", b"1e400"),
    ("1e400-amount", _event_with("amount", b"1e400")),
    ("-1e400-balance", _event_with("balance", b"-1e400")),
    ("5000-digit-integer", b"1" + b"0" * 5000),
    ("5000-digit-amount", _event_with("amount", b"1" + b"0" * 5000)),
    ("5000-digit-amount-string", _event_with("amount", b'"1' + b"0" * 5000 + b'"')),
    ("huge-exponent-string", _event_with("amount", b'"1e999999999"')),
    ("bad-utf8", _event_with("counterparty", b'"\xff\xfe\xfd"')),
    ("overlong-utf8", _event_with("counterparty", b'"\xc0\xaf"')),
    ("raw-surrogate-utf8", _event_with("counterparty", b'"\xed\xa0\x80"')),
    ("escaped-lone-high-surrogate", _event_with("counterparty", b'"\\ud800"')),
    ("escaped-lone-low-surrogate", _event_with("event_id", b'"E\\udc00"')),
    ("escaped-surrogate-key", b'{"\\ud800": 1}'),
    ("raw-nul-in-string", _event_with("counterparty", b'"Star\x00bucks"')),
    ("escaped-nul-counterparty", _event_with("counterparty", b'"Star\\u0000bucks"')),
    ("escaped-nul-event-id", _event_with("event_id", b'"E\\u0000"')),
    ("escaped-nul-customer-id", _event_with("customer_id", b'"C\\u0000"')),
    ("escaped-nul-account", _event_with("account", b'"62220202\\u000000001234"')),
    ("nul-bytes", b"\x00" * 64),
    ("bom-then-json", b"\xef\xbb\xbf" + orjson.dumps(make_event())),
    ("utf16-json", orjson.dumps(make_event()).decode().encode("utf-16")),
    ("empty", b""),
    ("whitespace", b" \n\t "),
    ("two-documents", orjson.dumps(make_event()) + orjson.dumps(make_event())),
    ("duplicate-keys", b'{"event_id":"E1","event_id":"E2"}'),
    ("nan", _event_with("amount", b"NaN")),
]
BODY_ROUTES = [
    ("POST", "/v1/events"),
    ("POST", "/v1/events/batch"),
    ("PUT", "/v1/bindings/C-hostile"),
    ("PUT", "/v1/customers/C-hostile/preferences"),
]


@pytest.mark.parametrize(("name", "body"), HOSTILE, ids=[name for name, _ in HOSTILE])
async def test_hostile_bodies_get_a_4xx(stack: Stack, name: str, body: bytes) -> None:
    for method, path in BODY_ROUTES:
        for raw in (body, b'{"events": [' + body + b"]}") if path.endswith("batch") else (body,):
            answer = await send(stack.session, stack.client.url, method, path, raw=raw)
            assert_not_a_server_error(answer)
            refused = answer.status >= 400 or all("error" in item for item in answer.body["results"])
            assert refused, (name, method, path, answer)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/json-patch+json",
        "application/xml",
        "",
        "\u00e9/\u00e9",
        "application/json; charset=utf-16",
    ],
)
async def test_wrong_content_types_get_a_4xx(stack: Stack, content_type: str) -> None:
    body = orjson.dumps(make_event(customer_id="C-ctype"))
    for method, path in BODY_ROUTES:
        headers = {**signed_headers(body), "Content-Type": content_type}
        answer = await send(stack.session, stack.client.url, method, path, raw=body, headers=headers)
        assert answer.status < 500, (content_type, path, answer)
        if answer.status >= 400:
            assert_error_shape(answer.body)


@pytest.mark.parametrize("size", [16_385, 2_097_153, 8_000_000])
async def test_oversize_bodies_get_413(stack: Stack, size: int) -> None:
    body = b'{"events": ["' + b"x" * size + b'"]}'
    for method, path in BODY_ROUTES:
        if path.endswith("batch") and size < 2_097_152:
            continue  # a batch may be larger than one event
        async with stack.session.request(
            method, stack.client.url + path, data=io.BytesIO(body), headers=signed_headers(body)
        ) as response:
            assert response.status == 413, (size, path, response.status)
            assert_error_shape(orjson.loads(await response.read()))


async def test_an_oversize_chunked_body_without_a_length_gets_413(stack: Stack) -> None:
    """No Content-Length to refuse it by: the limit holds while reading."""
    chunk = b"x" * 65_536

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"events": ["'
        for _ in range(40):  # 2.6 MB, past every limit
            yield chunk
        yield b'"]}'

    for method, path in BODY_ROUTES:
        headers = signed_headers(b"")  # the signature is wrong too: the size is refused first or 401
        async with stack.session.request(
            method, stack.client.url + path, data=chunks(), headers=headers
        ) as response:
            assert response.status in {401, 413}, (path, response.status)
            assert_error_shape(orjson.loads(await response.read()))


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events/" + "E" * 5000,
        "/v1/events/%00",
        "/v1/events/%ED%A0%80",
        "/v1/events/%FF%FE",
        "/v1/bindings/" + "9" * 5000,
        "/v1/customers/%00/events?limit=" + "9" * 5000,
        "/v1/customers/C1/events?since=1e400&limit=-1",
        "/v1/customers/C1/events?since=%00&limit=%ED%A0%80",
    ],
)
async def test_hostile_paths_and_queries_get_a_4xx(stack: Stack, path: str) -> None:
    answer = await send(stack.session, stack.client.url, "GET", path)
    assert 400 <= answer.status < 500, (path, answer)
    assert_error_shape(answer.body)


async def test_a_request_line_past_the_http_parsers_limit_gets_a_4xx(stack: Stack) -> None:
    """aiohttp's HTTP parser refuses a request line over 8 KB before any middleware sees it. This stack runs
    aiohttp's plain runner, whose answer is plain text; `pushgw gateway`'s transport answers 431 in the error
    shape, without echoing the line (tests/hostile/test_framing.py, with every other framing error)."""
    answer = await stack.session.get(stack.client.url + "/v1/events/" + "E" * 10_000)
    async with answer:
        assert 400 <= answer.status < 500


async def test_an_unused_method_gets_405_and_no_label_of_its_own(stack: Stack) -> None:
    """Label values must come from a bounded set: WebDAV methods do not grow the metrics."""
    answer = await send(stack.session, stack.client.url, "PROPFIND", "/v1/events", raw=b"{}")
    assert answer.status == 405
    assert_error_shape(answer.body)
    methods = {
        sample.labels["method"]
        for family in REGISTRY.collect()
        if family.name == "pushgw_http_requests"
        for sample in family.samples
        if sample.labels.get("code") == "405"
    }
    assert "other" in methods and "PROPFIND" not in methods
