"""Which events are critical: core banking's own mark, or the bank's configured rules.

A rule is `TYPE>=AMOUNT` (an event of that type, `*` for any, of at least that amount in its own currency)
or `channel=NAME` (for example the card-not-present channels). Critical events skip quiet hours, digests and
the per-customer rate limit, and are read before every other event.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gateway.core.event import Event, EventType


@dataclass(frozen=True)
class CriticalRules:
    least_amounts: tuple[tuple[str, Decimal], ...] = ()  # (event type or "*", least amount)
    channels: frozenset[str] = frozenset()

    def is_critical(self, event: Event) -> bool:
        if event.priority == "critical" or (event.channel is not None and event.channel in self.channels):
            return True
        if not self.least_amounts:  # the usual case, on the ingest hot path
            return False
        amount = Decimal(event.amount)
        return any(kind in ("*", event.type) and amount >= least for kind, least in self.least_amounts)

    def __str__(self) -> str:
        rules = [f"{kind}>={least}" for kind, least in self.least_amounts]
        return ",".join([*rules, *(f"channel={channel}" for channel in sorted(self.channels))])


def parse_critical_rules(raw: str) -> CriticalRules:
    """`debit>=50000,*>=200000,channel=CNP` -> CriticalRules. Raises ValueError naming the bad rule."""
    amounts: list[tuple[str, Decimal]] = []
    channels: set[str] = set()
    for rule in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, value = rule.partition("=")
        if sep and name == "channel" and value:
            channels.add(value)
            continue
        kind, sep, least = rule.partition(">=")
        if not sep or kind not in {"*", *EventType}:
            raise ValueError(f"rule {rule[:40]!r} must look like TYPE>=AMOUNT, *>=AMOUNT or channel=NAME")
        try:
            amounts.append((kind, Decimal(least)))
        except InvalidOperation:
            raise ValueError(f"rule {rule[:40]!r}: {least[:20]!r} is not an amount") from None
    return CriticalRules(tuple(amounts), frozenset(channels))
