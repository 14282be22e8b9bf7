"""The worker renders a single event from its stream entry's JSON (`render_fields` on `Entry.event_fields`),
without building an Event: that path gives exactly the message `render_event` gives for the same event, and
fails where it fails."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.entries import Entry
from gateway.core.errors import Unprocessable
from gateway.core.event import Event, EventType, parse_event
from tests.support import KEY_ID, make_event
from workers.render import RenderError, Templates, render_event, render_fields

OPENID = "oUser_fields"
TEMPLATES = Templates.load()


def _entry(event: Event) -> Entry:
    """The stream entry the ingest script writes for the event: its canonical JSON under `ev`."""
    fields = {"kind": "event", "src": KEY_ID, "eid": event.event_id, "cid": event.customer_id}
    return Entry.from_fields(0, "1-0", {**fields, "ev": event.canonical_json().decode(), "acc": "1"})


def _both(event: Event, templates: Templates = TEMPLATES) -> tuple[dict[str, Any], dict[str, Any]]:
    by_entry = render_fields(templates, _entry(event).event_fields, OPENID, KEY_ID)
    return by_entry, render_event(templates, event, OPENID, KEY_ID)


@pytest.mark.parametrize("event_type", list(EventType))
def test_each_type_renders_the_same_from_the_entry(event_type: EventType) -> None:
    by_entry, by_event = _both(parse_event(make_event(type=event_type.value)))
    assert by_entry == by_event


@pytest.mark.parametrize(
    "overrides",
    [
        {"balance": None, "counterparty": None, "channel": None},  # optional fields absent from the JSON
        {"balance": "-12.00"},  # overdrawn: left out
        {"balance": "999999999999999.99"},  # past WeChat's digits: left out
        {"amount": "1234567890.12"},  # whole units only
        {"currency": "JPY", "amount": "1200"},
        {"counterparty": "转账 6222020200009876 张三"},  # an account number inside free text is masked
        {"occurred_at": "2026-11-22T02:00:00Z"},  # shown in Shanghai time
    ],
)
def test_optional_and_edge_values_render_the_same_from_the_entry(overrides: dict[str, Any]) -> None:
    by_entry, by_event = _both(parse_event(make_event(**overrides)))
    assert by_entry == by_event


def test_another_accounts_template_ids_are_used_from_the_entry_too() -> None:
    ids = {kind: f"T-other-{kind}" for kind in TEMPLATES.event_templates} | {"digest": "T-other-digest"}
    other = TEMPLATES.with_ids(ids)
    by_entry, by_event = _both(parse_event(make_event()), other)
    assert by_entry == by_event
    assert by_entry["template_id"] == ids["card_purchase"]


@given(
    amount=st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False).map(str),
    counterparty=st.text(min_size=1, max_size=40),
)
def test_any_accepted_event_renders_the_same_from_the_entry(amount: str, counterparty: str) -> None:
    try:
        event = parse_event(make_event(amount=amount, counterparty=counterparty))
    except Unprocessable:  # not accepted by the gateway: never in a stream
        return
    by_entry, by_event = _both(event)
    assert by_entry == by_event


def test_an_entry_that_cannot_be_rendered_fails_the_same_way() -> None:
    """A poisoned entry (a time past the calendar's end, which the gateway refuses now) raises on both paths,
    so the worker dead-letters it (`render: OverflowError`) instead of reclaiming it for ever."""
    body = orjson.loads(_entry(parse_event(make_event())).fields["ev"])
    body["occurred_at"] = "9999-12-31T23:59:59-23:59"
    with pytest.raises(OverflowError):
        render_fields(TEMPLATES, body, OPENID, KEY_ID)
    with pytest.raises(OverflowError):
        render_event(TEMPLATES, Event.from_dict(body), OPENID, KEY_ID)


def test_a_phrase_key_that_cannot_fit_is_a_render_error_on_the_entry_path() -> None:
    templates = replace(TEMPLATES, event_fields={"phrase1": "counterparty"})
    body = _entry(parse_event(make_event(counterparty="Starbucks Shanghai"))).event_fields
    with pytest.raises(RenderError):
        render_fields(templates, body, OPENID, KEY_ID)
