"""Whether this gateway may write to Redis now (reachable, holding its data epoch, durable): `Readiness`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gateway.core import metrics
from gateway.core.errors import ServiceUnavailable
from gateway.core.redis import (
    UNREACHABLE,
    DataLost,
    EpochGuard,
    NotDurable,
    RedisClient,
    check_durability,
    check_epoch,
    guard_of,
    refusal,
)

log = logging.getLogger(__name__)


@dataclass
class Readiness:
    """Whether Redis may be written to: reachable, holding the data epoch this process accepts, persistence
    on, no eviction; refreshed by a background check. No epoch, or another one, refuses ingest even where
    durability is not required, and so does a Redis in which this process has not yet seen an epoch.
    Unreachable is a state of its own: durability is then unknown (ingest is refused: it would fail anyway),
    and `pushgw_redis_durable` keeps its last value, so an outage never reads as "not durable"."""

    require_durable: bool
    durable: bool | None = None  # None: unknown (not checked yet, unreachable, or its data epoch refused)
    reachable: bool | None = None
    problems: list[str] = field(default_factory=list)
    data_lost: bool = False
    shards: int = 1
    _guard: EpochGuard | None = None

    async def refresh(self, redis: RedisClient) -> None:
        guard = self._guard = guard_of(redis)
        guard.refuse_unsafe = self.require_durable
        durable: bool | None = None
        found: list[str] = []
        lost = None
        reachable = True
        try:
            found = (await check_durability(redis)).problems
            guard.durability_problems, durable = tuple(found), not found
            lost = await check_epoch(redis, self.shards)
        except DataLost as exc:  # a new connection found no epoch, or another one
            lost = str(exc)
        except NotDurable as exc:  # a new connection found Redis unsafe
            found, durable = [str(exc)], False
        except UNREACHABLE as exc:  # a refused password (AuthenticationError) is one too: say which
            reachable = False
            found = [
                refusal(exc)
                or f"redis unreachable ({type(exc).__name__}): events are refused until it answers"
            ]
        except Exception as exc:  # CONFIG refused: unknown persistence counts as not durable
            if (refused := refusal(exc)) is not None:  # protected mode: every command answered DENIED
                reachable, found = False, [refused]
            else:
                found, durable = [f"cannot read Redis persistence settings ({type(exc).__name__})"], False
        self.durable, self.reachable, self.data_lost = durable, reachable, lost is not None
        self._record(found, lost, unreachable=not reachable)
        if durable is not None:
            metrics.REDIS_DURABLE.set(1 if durable else 0)

    def _record(self, found: list[str], lost: str | None, *, unreachable: bool) -> None:
        """Keep the check's problems, the data epoch's first; each new set is logged once (an outage as a
        warning; a refused epoch is logged by its guard)."""
        problems = [lost, *found] if lost is not None else found
        if problems != self.problems:
            for problem in found:
                if unreachable:
                    log.warning("redis check failed: %s", problem)
                else:
                    level = logging.ERROR if self.require_durable or lost else logging.WARNING
                    log.log(level, "redis does not keep acknowledged events safe: %s", problem)
        self.problems = problems

    def current_problems(self) -> list[str]:
        """The last check's problems and what a connection made since then found (a Redis restart)."""
        guard = self._guard or EpochGuard()
        fresh = ([guard.lost] if guard.lost else []) + list(guard.durability_problems)
        found = self.problems + [problem for problem in fresh if problem not in self.problems]
        return found or ["redis not checked yet"]

    def lost_data(self) -> bool:
        return self.data_lost or (self._guard is not None and self._guard.lost is not None)

    def refuses(self) -> bool:
        """Whether ingest must be refused now (see require_accepting)."""
        if self.lost_data():
            return True
        if self._guard is None or self._guard.known is None:  # no epoch seen: never write to this Redis
            return True
        if not self.require_durable:
            return False
        return not self.durable or bool(self._guard.durability_problems)

    def refusal(self) -> ServiceUnavailable | None:
        """Why ingest is refused now, as its answer (None: Redis may be written to). The one predicate of
        ingest (`require_accepting`) and /readyz: Redis holds the data epoch this process accepts and is
        known to be durable (or durability is not required); a Redis restart is judged by its first
        connection."""
        if self.lost_data():
            message = "the queue lost its data or was never initialised; an operator must check it"
            return ServiceUnavailable(message, retry_after_s=30)
        if not self.refuses():
            return None
        if self.durable is None:
            return ServiceUnavailable("the queue cannot be reached right now, retry later", retry_after_s=1)
        return ServiceUnavailable("the queue is not durable right now, retry later", retry_after_s=5)

    def require_accepting(self) -> None:
        """Raises `refusal()` when there is one."""
        if (refused := self.refusal()) is not None:
            raise refused
