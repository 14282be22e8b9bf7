"""What every operator command that reads Redis shares: it refuses a Redis that holds no pushgw data.

A Redis without the data epoch is another service's Redis (PUSHGW_REDIS_URL left at its default beside
`pushgw dev`, which runs its own on another port), or a Redis that lost its data: either way an empty
answer read from it would be a lie ("no dead letters"), so the command says so and reads nothing."""

from __future__ import annotations

from gateway.core.redis import Epoch, RedisClient, read_epoch
from gateway.core.settings import Settings, without_password

RUNBOOK = "docs/runbook.md, Redis lost its data"
NO_DATA_EXIT = 3  # as `pushgw reconcile` when data is missing


class NoPushgwData(Exception):
    """The Redis an operator command was pointed at holds no pushgw data epoch (or another one than
    PUSHGW_REDIS_EPOCH names). The message names the URL (never its password) and what to do."""

    exit_status = NO_DATA_EXIT


async def require_pushgw_data(redis: RedisClient, settings: Settings) -> Epoch:
    """The data epoch of the deployment's Redis; raises NoPushgwData when there is none, or another one
    than PUSHGW_REDIS_EPOCH names."""
    url = without_password(settings.redis_url)
    epoch = await read_epoch(redis)
    if epoch is None:
        raise NoPushgwData(
            f"{url} holds no pushgw data (no data epoch): it is not this deployment's Redis (set"
            " PUSHGW_REDIS_URL or --redis-url; `pushgw dev` prints the URL of its own), or it lost its data"
            f" (see {RUNBOOK}); nothing was read"
        )
    if settings.redis_epoch and epoch.epoch_id != settings.redis_epoch:
        raise NoPushgwData(
            f"{url} holds data epoch {epoch.epoch_id}, PUSHGW_REDIS_EPOCH names {settings.redis_epoch}:"
            f" another deployment's data, or data replaced underneath (see {RUNBOOK}); nothing was read"
        )
    return epoch
