"""Running the simulator: its configuration from `PUSHGW_SIM_*` variables and a serve-until-cancelled loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

import orjson
from aiohttp import web

from wechatsim.app import create_app
from wechatsim.callback import CallbackConfig, aes_key
from wechatsim.config import SimConfig
from wechatsim.faults import FaultConfig, FaultError, parse_faults

__all__ = ["config_from_env", "serve"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_APPS = "wx_demo_app:demo_secret"
# WeChat's front ends take a burst of new connections; aiohttp's default of 128 made a worker opening its
# pool all at once wait 1 s (dropped SYNs) for some of them
LISTEN_BACKLOG = 2048
_DEFAULT_OVERLAP_S = 300


def _apps(raw: str) -> dict[str, str]:
    apps: dict[str, str] = {}
    for index, entry in enumerate(raw.split(","), start=1):
        appid, sep, secret = entry.strip().partition(":")
        if not sep or not appid or not secret:
            raise ValueError(f"PUSHGW_SIM_APPS: entry {index} must be appid:secret (comma-separated pairs)")
        apps[appid] = secret
    return apps


def _env_value(environ: Mapping[str, str], name: str, parse: Callable[[str], _T], default: _T) -> _T:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except ValueError as exc:
        raise ValueError(f"{name}: bad value {raw!r} ({exc})") from None


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def config_from_env(environ: Mapping[str, str]) -> SimConfig:
    """A SimConfig from `PUSHGW_SIM_APPS` (appid:secret,...), `PUSHGW_SIM_TOKEN_TTL_S`, `PUSHGW_SIM_SEED`,
    and the optional `PUSHGW_SIM_TOKEN_OVERLAP_S`, `PUSHGW_SIM_DEDUP_WINDOW_S`, `PUSHGW_SIM_DAILY_QUOTA`,
    `PUSHGW_SIM_MINUTE_QUOTA`, `PUSHGW_SIM_QPS` (sends per second per app, 0: none),
    `PUSHGW_SIM_FAULTS_FILE` (a JSON file of the `PUT /sim/faults` shape, in force from the start and after
    a reset), `PUSHGW_SIM_CALLBACK_URL`, `PUSHGW_SIM_CALLBACK_TOKEN` and `PUSHGW_SIM_ENCODING_AES_KEY`
    (finish events, in safe mode when the key is set; see callback.py).
    Raises ValueError naming the variable on a bad value.
    """
    raw_apps = environ.get("PUSHGW_SIM_APPS") or DEFAULT_APPS
    if "PUSHGW_SIM_APPS" in environ and not environ["PUSHGW_SIM_APPS"].strip():
        raise ValueError("PUSHGW_SIM_APPS: bad value '' (give comma-separated appid:secret pairs)")
    ttl_s = _env_value(environ, "PUSHGW_SIM_TOKEN_TTL_S", _positive_int, 7200)
    overlap_s = _env_value(
        environ, "PUSHGW_SIM_TOKEN_OVERLAP_S", _non_negative_int, min(_DEFAULT_OVERLAP_S, ttl_s // 2)
    )
    if overlap_s >= ttl_s:
        raise ValueError(
            f"PUSHGW_SIM_TOKEN_OVERLAP_S: bad value {overlap_s} (must be < the token TTL {ttl_s})"
        )
    return SimConfig(
        apps=_apps(raw_apps),
        token_ttl_s=ttl_s,
        token_overlap_s=overlap_s,
        dedup_window_s=_env_value(environ, "PUSHGW_SIM_DEDUP_WINDOW_S", _non_negative_int, 600),
        daily_quota=_env_value(environ, "PUSHGW_SIM_DAILY_QUOTA", _non_negative_int, 100_000),
        minute_quota=_env_value(environ, "PUSHGW_SIM_MINUTE_QUOTA", _non_negative_int, 0),
        seed=_env_value(environ, "PUSHGW_SIM_SEED", int, 0),
        qps=_env_value(environ, "PUSHGW_SIM_QPS", _non_negative_int, 0),
        keep_messages=_env_value(environ, "PUSHGW_SIM_KEEP_MESSAGES", _positive_int, 100_000),
        faults=_env_value(environ, "PUSHGW_SIM_FAULTS_FILE", _faults_file, FaultConfig()),
        callback=_callback(environ),
    )


def _faults_file(path: str) -> FaultConfig:
    try:
        with open(path, "rb") as file:
            return parse_faults(orjson.loads(file.read()))
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    except FaultError as exc:
        raise ValueError(str(exc)) from None


def _callback(environ: Mapping[str, str]) -> CallbackConfig | None:
    url = (environ.get("PUSHGW_SIM_CALLBACK_URL") or "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"PUSHGW_SIM_CALLBACK_URL: bad value {url!r} (must be an http(s) URL)")
    encoding_aes_key = environ.get("PUSHGW_SIM_ENCODING_AES_KEY", "").strip()
    if encoding_aes_key:
        try:
            aes_key(encoding_aes_key)
        except ValueError as exc:  # the key itself is not shown: it is a secret
            raise ValueError(f"PUSHGW_SIM_ENCODING_AES_KEY: bad value ({exc})") from None
    token = environ.get("PUSHGW_SIM_CALLBACK_TOKEN", "")
    return CallbackConfig(url=url, token=token, encoding_aes_key=encoding_aes_key)


async def serve(host: str, port: int, config: SimConfig) -> None:
    """Serve the simulator on host:port until cancelled; the listener is closed on the way out.

    The access log is off: request lines carry access tokens and openids.
    """
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
        await site.start()
        logger.info("wechatsim listening on %s:%d with %d app(s)", host, port, len(config.apps))
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        logger.info("wechatsim stopped")
