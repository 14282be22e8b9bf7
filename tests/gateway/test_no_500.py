"""Bad input can never reach the 500 path: arbitrary JSON and bytes get a 4xx in the one error shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error_shape, fresh_headers, send
from tests.support import make_event

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
    name=st.sampled_from(["X-Pushgw-Key", "X-Pushgw-Timestamp", "X-Pushgw-Signature"]),
    value=st.text(st.characters(min_codepoint=0x20, exclude_characters="\x7f"), max_size=40),
)
async def test_no_signature_header_gets_a_500(stack: Stack, name: str, value: str) -> None:
    body = orjson.dumps(make_event())
    headers = {**fresh_headers(body), name: value.strip()}
    answer = await send(stack.session, stack.client.url, "POST", "/v1/events", raw=body, headers=headers)
    assert_not_a_server_error(answer)
