"""Bounded admission of ingest requests in one gateway process: `Admission`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType

from gateway.core import metrics
from gateway.core.errors import ServiceUnavailable

SHED_RECENTLY_S = 1.0


@dataclass
class Admission:
    """Bounded admission: at most `limit` ingest requests in work at once in this process; the next one is
    refused at once (503 + Retry-After) instead of queueing behind the others past its client's timeout."""

    limit: int
    waiting: int = 0
    shed_at_s: float = float("-inf")

    def admitted(self) -> Admission:
        """`with admission.admitted():` holds a slot for the block. Raises ServiceUnavailable when full
        (counted in pushgw_ingress_shed_total). A plain context manager, not @contextmanager: it runs for
        every request."""
        return self

    def __enter__(self) -> None:
        if self.full:
            self.shed_at_s = time.monotonic()
            metrics.INGRESS_SHED.inc()
            raise ServiceUnavailable("the gateway is overloaded, retry later", retry_after_s=1)
        self.waiting += 1
        metrics.INGRESS_WAITING.inc()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.waiting -= 1
        metrics.INGRESS_WAITING.dec()

    @property
    def full(self) -> bool:
        """Whether the next ingest request would be refused (the condition `admitted` checks)."""
        return self.waiting >= self.limit

    @property
    def shedding(self) -> bool:
        """Whether the next ingest request would be refused, or one was within the last second (what
        /readyz reports: a load balancer should send elsewhere before the next refusal, not after it)."""
        return self.full or time.monotonic() - self.shed_at_s < SHED_RECENTLY_S
