"""Event statuses: the public strings of DESIGN.md, and which of them are final."""

from enum import StrEnum


class EventStatus(StrEnum):
    QUEUED = "queued"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    DUPLICATE = "duplicate"
    DIGESTED = "digested"
    NO_BINDING = "no_binding"
    SUPPRESSED = "suppressed"

    @property
    def is_final(self) -> bool:
        """A final status is never changed by delivery again (dead letters change only by replay)."""
        return self in _FINAL


_FINAL = frozenset(
    {
        EventStatus.DELIVERED,
        EventStatus.FAILED,
        EventStatus.DEAD_LETTERED,
        EventStatus.NO_BINDING,
        EventStatus.SUPPRESSED,
    }
)
