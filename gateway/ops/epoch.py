"""`pushgw epoch init|show|reset`: the operator's commands for the data epoch (see gateway/core/redis.py).

`init` is the one explicit first initialisation of a deployment's data: no process ever decides by itself
that an empty Redis is new. It refuses when Redis holds an epoch, and when PUSHGW_REDIS_EPOCH names one
(that deployment had data: an empty Redis there has lost it). Each prints one JSON object; the exit status
is 0 on success, 1 when refused (or, for `show`, when the epoch is missing or not the expected one).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from typing import Any

import orjson

from gateway.core.redis import (
    Epoch,
    EpochExists,
    RedisClient,
    connect,
    ensure_groups,
    init_epoch,
    read_epoch,
    write_epoch,
)
from gateway.core.settings import Settings

log = logging.getLogger(__name__)
RUNBOOK = "docs/runbook.md, Redis lost its data"


def _print(epoch: Epoch | None, **extra: Any) -> None:
    shown = {"epoch": asdict(epoch) if epoch is not None else None, **extra}
    sys.stdout.write(orjson.dumps(shown).decode() + "\n")


def _say(line: str) -> None:
    sys.stderr.write(f"pushgw epoch: {line}\n")


async def _init(redis: RedisClient, settings: Settings) -> int:
    if settings.redis_epoch:
        _say(
            f"PUSHGW_REDIS_EPOCH names epoch {settings.redis_epoch}: this deployment was initialised before,"
            f" so a Redis without its epoch has lost its data or is the wrong one; see {RUNBOOK}"
        )
        _print(await read_epoch(redis), expected=settings.redis_epoch)
        return 1
    try:
        epoch = await init_epoch(redis, settings.shards)
    except EpochExists as exc:
        _say(f"{exc}: refusing to initialise it again (a fresh start after a loss is `pushgw epoch reset`)")
        _print(exc.epoch)
        return 1
    _say(f"initialised; pin it on every gateway and worker: PUSHGW_REDIS_EPOCH={epoch.epoch_id}")
    _print(epoch)
    return 0


async def _show(redis: RedisClient, settings: Settings) -> int:
    found = await read_epoch(redis)
    expected = settings.redis_epoch or None
    _print(found, expected=expected)
    if found is None:
        _say(f"redis holds no data epoch: it lost its data or was never initialised; see {RUNBOOK}")
        return 1
    if expected is not None and found.epoch_id != expected:
        _say(f"redis holds epoch {found.epoch_id}, PUSHGW_REDIS_EPOCH names {expected}; see {RUNBOOK}")
        return 1
    return 0


async def _reset(redis: RedisClient, settings: Settings) -> int:
    epoch = await write_epoch(redis, "operator", replace=True)
    await ensure_groups(redis, settings.shards)
    log.warning("data epoch reset by an operator: a fresh start was acknowledged")
    if settings.redis_epoch:
        _say(
            f"processes pinned by PUSHGW_REDIS_EPOCH={settings.redis_epoch} refuse the new epoch until it is"
            f" set to {epoch.epoch_id} and they are restarted"
        )
    _print(epoch)
    return 0


async def run_epoch(settings: Settings, args: argparse.Namespace) -> int:
    """`init`: the first initialisation of a deployment's data. `show`: the epoch (and the expected one).
    `reset --yes`: an operator acknowledges that Redis's data is gone for good (a real fresh start): a new
    epoch that running processes follow, and the consumer groups. Returns the exit status."""
    if args.action == "reset" and not args.yes:
        _say("reset: add --yes to acknowledge that queued events are lost")
        return 2
    redis = connect(settings, epoch_guard=False)  # it inspects, and writes, an epoch-less Redis
    try:
        if args.action == "init":
            return await _init(redis, settings)
        if args.action == "reset":
            return await _reset(redis, settings)
        return await _show(redis, settings)
    finally:
        await redis.aclose()
