"""Delivery stream entries: the field names (the one place that spells them) and the typed record read
from them.

An entry carries one event (kind "event": src, eid, ev, ...) or a digest of held events (kind "digest":
did and an `items` JSON list of (src, eid, ev)). The Lua scripts write the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from gateway.core import keys
from gateway.core.event import Event

SOURCE = "src"
EVENT_ID = "eid"
EVENT = "ev"  # the event as accepted (JSON)
CUSTOMER_ID = "cid"
ACCEPTED_MS = "acc"
ATTEMPTS = "att"
UNCLEAR_SINCE_MS = "unc"
REPLAYED_MS = "rep"
PRIORITY = "pri"
KIND = "kind"
DIGEST_ID = "did"
ITEMS = "items"  # a digest's events: JSON list of {src, eid, ev}

DIGEST = "digest"  # a KIND value
CRITICAL = "critical"  # a PRIORITY value


def items_of(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The (src, eid, ev) items an entry (or its JSON copy) carries: a digest's `items`, else the entry
    itself. Raises KeyError (a digest without items) or orjson.JSONDecodeError."""
    if fields.get(KIND) == DIGEST:
        items: list[dict[str, Any]] = orjson.loads(fields[ITEMS])
        return items
    return [fields]


def message_id_of(fields: Mapping[str, Any]) -> str:
    """The id an entry is logged by: the digest id, else the event id ("" when it has neither)."""
    return str(fields.get(DIGEST_ID) or fields.get(EVENT_ID, ""))


@dataclass(frozen=True)
class Entry:
    """One stream entry: a single event (kind "event") or a digest of held events (kind "digest")."""

    shard: int
    entry_id: str
    fields: dict[str, str]

    @classmethod
    def from_fields(cls, shard: int, entry_id: str, fields: dict[str, str]) -> Entry:
        """The entry as XREADGROUP returned it (or its JSON copy in the retry set or dead-letter stream)."""
        return cls(shard, entry_id, fields)

    @property
    def is_digest(self) -> bool:
        return self.fields.get(KIND) == DIGEST

    @property
    def customer_id(self) -> str:
        return self.fields[CUSTOMER_ID]

    @property
    def critical(self) -> bool:
        return self.fields.get(PRIORITY) == CRITICAL

    @property
    def stream(self) -> str:
        return keys.stream(self.shard, self.critical)

    @property
    def attempts(self) -> int:
        return int(self.fields.get(ATTEMPTS, "0"))

    @property
    def accepted_ms(self) -> int:
        return int(self.fields[ACCEPTED_MS])

    @property
    def age_from_ms(self) -> int:
        """Where its age (PUSHGW_MAX_AGE_S) is counted from: acceptance, or its last replay."""
        return max(self.accepted_ms, int(self.fields.get(REPLAYED_MS) or 0))

    @property
    def message_id(self) -> str:
        """The id this entry is known by: the event id, or the digest id (also its client_msg_id)."""
        return self.fields[DIGEST_ID] if self.is_digest else self.fields[EVENT_ID]

    @cached_property
    def items(self) -> list[dict[str, str]]:
        """(src, eid, ev) of each event the entry carries."""
        return items_of(self.fields)

    @cached_property
    def event_fields(self) -> dict[str, Any]:
        """The fields of a single event's entry, as the gateway accepted them (its `ev` JSON): what the worker
        renders, without building an Event. Raises KeyError on a digest (it carries `items`, no `ev`)."""
        fields: dict[str, Any] = orjson.loads(self.fields[EVENT])
        return fields

    @cached_property
    def events(self) -> list[Event]:
        return [Event.from_dict(orjson.loads(item[EVENT])) for item in self.items]

    @cached_property
    def records(self) -> list[str]:
        return [keys.event(self.shard, item[SOURCE], item[EVENT_ID]) for item in self.items]

    @property
    def unclear_since_ms(self) -> int:
        """When a send of it first ended with no clear answer (0: none did): WeChat may have sent it then."""
        return int(self.fields.get(UNCLEAR_SINCE_MS) or 0)

    def marked_unclear(self, at_ms: int) -> Entry:
        return Entry(self.shard, self.entry_id, {**self.fields, UNCLEAR_SINCE_MS: str(at_ms)})

    def to_json(self, attempts: int) -> bytes:
        """The entry as the retry set and the dead-letter stream keep it, with its attempts so far."""
        return orjson.dumps({**self.fields, ATTEMPTS: str(attempts)}, option=orjson.OPT_SORT_KEYS)
