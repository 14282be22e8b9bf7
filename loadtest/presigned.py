"""Signed ingress requests for wrk, built before a measurement: every event id new, every customer given at
most `per_customer` events in a run, so under the default rate limit no event is a duplicate or digested.

A customer is never handed out twice in a run (its rate window would still hold its earlier events): the
bench binds each range as it is handed out (`Customers.unbound`), and after Redis is emptied binds afresh.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import orjson

from loadtest.payloads import EventFactory, signed_headers
from loadtest.wrk import raw_request

SINGLE, BATCH = "/v1/events", "/v1/events/batch"


class Customers:
    """Customer indexes handed out in order, `per_customer` events each, never twice in a run."""

    def __init__(self, per_customer: int) -> None:
        self.per_customer = per_customer
        self._next = 0
        self._bound_to = 0

    def take(self, events: int) -> int:
        """Reserve customers for `events` events; the first (event i goes to first + i // per_customer)."""
        first = self._next
        self._next += math.ceil(events / self.per_customer)
        return first

    def unbound(self) -> range:
        """The customers handed out but not bound yet; they count as bound from now on."""
        todo = range(self._bound_to, self._next)
        self._bound_to = self._next
        return todo

    def forget_bindings(self) -> None:
        """Redis was emptied: nothing handed out so far is bound any more, nor will it be used again."""
        self._bound_to = self._next


class RequestMaker:
    """Raw signed requests: single events (POST /v1/events) and batches (POST /v1/events/batch)."""

    def __init__(self, key_id: str, secret: str, customers: Customers, batch_size: int = 100) -> None:
        self._key_id, self._secret = key_id, secret
        self.customers = customers
        self.batch_size = batch_size
        self._factory = EventFactory(1, seed=17, prefix="WRK")

    def _signed(self, target: str, body: bytes) -> bytes:
        return raw_request(target, body, signed_headers(self._key_id, self._secret, "POST", target, body))

    def singles(self, requests: int, fresh: bool = True) -> Iterator[bytes]:
        """`requests` single-event requests; `fresh=False`: all for customer 0 (for a server that keeps no
        state, hello)."""
        first = self.customers.take(requests) if fresh else 0
        per = self.customers.per_customer
        for i in range(requests):
            event = self._factory.event(customer=first + i // per if fresh else 0)
            yield self._signed(SINGLE, orjson.dumps(event))

    def batches(self, requests: int) -> Iterator[bytes]:
        """`requests` batch requests of `batch_size` events each."""
        size, per = self.batch_size, self.customers.per_customer
        first = self.customers.take(requests * size)
        for i in range(requests):
            events = [self._factory.event(customer=first + (i * size + j) // per) for j in range(size)]
            yield self._signed(BATCH, orjson.dumps({"events": events}))
