"""HTTP handlers: the WeChat API paths (`/cgi-bin/...`) and the test-facing inspection API (`/sim/...`)."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Mapping

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from wechatsim import errcodes
from wechatsim.catalog import template_from_json
from wechatsim.faults import FaultError, parse_faults
from wechatsim.send import send_template, token_errcode
from wechatsim.state import SimState

__all__ = ["METRICS_KEY", "STATE_KEY", "BadRequest", "json_response", "routes"]

logger = logging.getLogger(__name__)

STATE_KEY = web.AppKey("wechatsim_state", SimState)
METRICS_KEY = web.AppKey("wechatsim_metrics", CollectorRegistry)

routes = web.RouteTableDef()


class BadRequest(Exception):
    """Bad input to a `/sim` endpoint; answered HTTP 400 `{"error": message}`."""


def json_response(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


async def _read_json_object(request: web.Request) -> Mapping[str, object]:
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadRequest("body must be JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    return payload


def _string_field(payload: Mapping[str, object], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def _token_answer(state: SimState, body: dict[str, object]) -> web.Response:
    state.stats.token_errcodes[str(body.get("errcode", 0))] += 1
    return json_response(body)


def _credentials_errcode(state: SimState, grant_type: object, appid: object, secret: object) -> int | None:
    if grant_type != "client_credential":
        return errcodes.INVALID_GRANT_TYPE
    if not isinstance(appid, str) or not appid:
        return errcodes.APPID_MISSING
    expected = state.config.apps.get(appid)
    if expected is None:
        return errcodes.INVALID_APPID
    if not isinstance(secret, str) or not secret:
        return errcodes.APPSECRET_MISSING
    if not secrets.compare_digest(secret.encode(), expected.encode()):
        return errcodes.INVALID_APPSECRET
    return None


@routes.get("/cgi-bin/token")
async def token(request: web.Request) -> web.Response:
    """A new access token per call; the previous one stays valid `token_overlap_s` more."""
    state = request.app[STATE_KEY]
    query = request.query
    appid = query.get("appid")
    errcode = _credentials_errcode(state, query.get("grant_type"), appid, query.get("secret"))
    if errcode is not None or appid is None:
        return _token_answer(state, errcodes.error_body(errcode or errcodes.APPID_MISSING, state.clock()))
    issued = state.tokens.issue(appid, state.clock())
    return _token_answer(state, {"access_token": issued.value, "expires_in": state.config.token_ttl_s})


@routes.post("/cgi-bin/stable_token")
async def stable_token(request: web.Request) -> web.Response:
    """The same token while valid, renewed within `token_overlap_s` of expiry or on `force_refresh`."""
    state = request.app[STATE_KEY]
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        payload = None
    force_refresh = payload.get("force_refresh", False) if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or not isinstance(force_refresh, bool):
        return _token_answer(state, errcodes.error_body(errcodes.DATA_FORMAT, state.clock()))
    appid = payload.get("appid")
    errcode = _credentials_errcode(state, payload.get("grant_type"), appid, payload.get("secret"))
    if errcode is not None or not isinstance(appid, str):
        return _token_answer(state, errcodes.error_body(errcode or errcodes.APPID_MISSING, state.clock()))
    now_s = state.clock()
    refused = state.tokens.force_refresh_errcode(appid, now_s) if force_refresh else None
    if refused is not None:
        return _token_answer(state, errcodes.error_body(refused, now_s))
    issued = state.tokens.stable(appid, now_s, force_refresh)
    expires_in = max(0, math.ceil(issued.expires_at_s - now_s))
    return _token_answer(state, {"access_token": issued.value, "expires_in": expires_in})


@routes.post("/cgi-bin/message/template/send")
async def template_send(request: web.Request) -> web.Response:
    """A template message send, answered as WeChat would (see `send.send_template`), after any delay.

    A reset fault closes the connection without an answer (the client sees a disconnect).
    """
    state = request.app[STATE_KEY]
    answer = send_template(state, request.query.get("access_token"), await request.read())
    state.stats.errcodes[answer.errcode_label] += 1
    if answer.appid is not None:
        app_stats = state.stats.app(answer.appid)
        app_stats.sends += 1
        app_stats.errcodes[answer.errcode_label] += 1
    if answer.delay_s > 0:
        await asyncio.sleep(answer.delay_s)
    if answer.reset:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never written: the transport is gone
    if answer.body is None:
        return web.Response(status=answer.http_status, text=f"{answer.http_status} upstream error")
    return json_response(answer.body, answer.http_status)


@routes.get("/cgi-bin/template/get_all_private_template")
async def templates(request: web.Request) -> web.Response:
    """The account's templates, for a valid access token."""
    state = request.app[STATE_KEY]
    token = request.query.get("access_token")
    errcode = token_errcode(state, token)
    if errcode is not None:
        return json_response(errcodes.error_body(errcode, state.clock()))
    _, appid = state.tokens.check(token or "", state.clock())
    listed = state.templates_of(appid or "").values()
    return json_response({"template_list": [t.to_json() for t in listed]})


@routes.post("/sim/templates")
async def set_templates(request: web.Request) -> web.Response:
    """Give one app its own templates `{"appid", "templates": [{template_id, title, ..., content}]}`
    (replacing the shipped ones for it): sends of another app's template ids answer 40037."""
    state = request.app[STATE_KEY]
    payload = await _read_json_object(request)
    appid, entries = _configured_app(state, payload.get("appid")), payload.get("templates")
    if not isinstance(entries, list) or not entries:
        raise BadRequest("templates must be a non-empty list of templates")
    try:
        templates = [template_from_json(entry) for entry in entries]
    except TypeError as exc:
        raise BadRequest(str(exc)) from None
    state.app_templates[appid] = {t.template_id: t for t in templates}
    return json_response({"status": "ok", "appid": appid, "templates": len(templates)})


@routes.get("/sim/messages")
async def messages(request: web.Request) -> web.Response:
    """Delivered messages in arrival order (one per dedup key), all or only those of `?touser=` and of
    `?appid=` (the sending app)."""
    state = request.app[STATE_KEY]
    touser, appid = request.query.get("touser"), request.query.get("appid")
    if (touser is not None and not touser) or (appid is not None and not appid):
        raise BadRequest("touser and appid must not be empty")
    found = [
        m
        for m in state.messages
        if (touser is None or m.touser == touser) and (appid is None or m.appid == appid)
    ]
    return json_response({"messages": [m.to_json() for m in found]})


@routes.get("/sim/stats")
async def stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].stats.to_json())


@routes.post("/sim/reset")
async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    logger.info("simulator state reset")
    return json_response({"status": "ok"})


def _configured_app(state: SimState, appid: object) -> str:
    if not isinstance(appid, str) or appid not in state.config.apps:
        raise BadRequest("appid is not a configured app")
    return appid


def _faults_app(request: web.Request) -> str | None:
    """`?appid=`: the app whose own fault set is meant (absent: the global set)."""
    appid = request.query.get("appid")
    return None if appid is None else _configured_app(request.app[STATE_KEY], appid)


@routes.get("/sim/faults")
async def get_faults(request: web.Request) -> web.Response:
    """The faults in force: the global set, or with `?appid=` that app's (its own, else the global)."""
    return json_response(request.app[STATE_KEY].faults_for(_faults_app(request)).config.to_json())


@routes.put("/sim/faults")
async def put_faults(request: web.Request) -> web.Response:
    """Replace the faults in force (see `faults` for the shape); answers the new config. With `?appid=`
    the set is that app's own, in force for its calls instead of the global set (until `POST /sim/reset`)."""
    state = request.app[STATE_KEY]
    appid = _faults_app(request)
    try:
        config = parse_faults(await _read_json_object(request))
    except FaultError as exc:
        raise BadRequest(str(exc)) from None
    if appid is None:
        injector = state.faults
        injector.set(config)
    else:
        injector = state.set_app_faults(appid, config)
    logger.info(
        "faults set%s: outage=%s script_steps=%d http_5xx_rate=%s errcodes=%s",
        "" if appid is None else f" for {appid}",
        config.outage,
        len(config.script),
        config.http_5xx_rate,
        sorted(config.errcode_rates),
    )
    return json_response(injector.config.to_json())


async def _toggle(request: web.Request, members: set[str], *, add: bool) -> None:
    """Add the body's openid to (or remove it from) one of the state's sets."""
    openid = _string_field(await _read_json_object(request), "openid")
    if add:
        members.add(openid)
    else:
        members.discard(openid)


@routes.post("/sim/unsubscribe")
async def unsubscribe(request: web.Request) -> web.Response:
    """The user stops following the account: sends to it answer 43004."""
    await _toggle(request, request.app[STATE_KEY].unsubscribed, add=True)
    return json_response({"status": "ok", "subscribed": False})


@routes.post("/sim/subscribe")
async def subscribe(request: web.Request) -> web.Response:
    """The user follows the account again."""
    await _toggle(request, request.app[STATE_KEY].unsubscribed, add=False)
    return json_response({"status": "ok", "subscribed": True})


@routes.post("/sim/block")
async def block(request: web.Request) -> web.Response:
    """The user blacklists the account: sends to it answer 43019."""
    await _toggle(request, request.app[STATE_KEY].blocked, add=True)
    return json_response({"status": "ok", "blocked": True})


@routes.post("/sim/unblock")
async def unblock(request: web.Request) -> web.Response:
    await _toggle(request, request.app[STATE_KEY].blocked, add=False)
    return json_response({"status": "ok", "blocked": False})


@routes.post("/sim/openids")
async def register_openid(request: web.Request) -> web.Response:
    """Scope an openid to one app: sends to it through any other app answer 40003."""
    state = request.app[STATE_KEY]
    payload = await _read_json_object(request)
    openid, appid = _string_field(payload, "openid"), _string_field(payload, "appid")
    if appid not in state.config.apps:
        raise BadRequest("appid is not a configured app")
    state.openid_apps[openid] = appid
    return json_response({"status": "ok", "openid": openid, "appid": appid})


@routes.get("/sim/callbacks")
async def callbacks(request: web.Request) -> web.Response:
    """The finish events posted so far (each once it was acknowledged or given up), in that order."""
    return json_response({"callbacks": request.app[STATE_KEY].stats.callbacks.log})


@routes.post("/sim/tokens/expire")
async def expire_tokens(request: web.Request) -> web.Response:
    """Expire every token of an app now: sends with them answer 42001."""
    state = request.app[STATE_KEY]
    appid = _string_field(await _read_json_object(request), "appid")
    if appid not in state.config.apps:
        raise BadRequest("appid is not a configured app")
    expired = state.tokens.expire_app(appid, state.clock())
    return json_response({"status": "ok", "expired": expired})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """The stats as Prometheus counters (`pushgw_sim_*`)."""
    body = generate_latest(request.app[METRICS_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
