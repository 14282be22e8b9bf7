"""The OpenAPI 3.1 document of the ingress API, served at /openapi.json (a test keeps it true)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.context import gateway_of
from gateway.core.event import CURRENCIES, EventType
from gateway.core.status import EventStatus
from gateway.responses import respond

_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"}
_DECIMAL = {"type": "string", "pattern": r"^(0|[1-9]\d{0,14})(\.\d{1,2})?$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _results(id_field: str, statuses: list[str], **extra: Any) -> dict[str, Any]:
    """A batch answer: one result per item, in order, naming the item by `id_field` (null when the item
    had none) with its status, its error when refused, and `extra` properties."""
    item = {
        "type": "object",
        "required": [id_field, "status"],
        "properties": {
            id_field: {"type": ["string", "null"]},
            "status": {"type": "string", "enum": statuses},
            "error": _ref("ErrorDetail"),
            **extra,
        },
    }
    return {
        "type": "object",
        "required": ["results"],
        "properties": {"results": {"type": "array", "items": item}},
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_ERRORS = {
    "400": _error("body is not JSON (an object repeating a key is not), or its HTTP framing is broken"),
    "408": _error("the body did not arrive within PUSHGW_BODY_TIMEOUT_S; the connection is closed"),
    "401": _error("missing, bad, expired or replayed signature"),
    "403": _error("the key may not call this route (PUSHGW_API_KEY_SCOPES)"),
    "415": _error("Content-Type is not application/json, or a Content-Encoding other than identity"),
    "422": _error("a field is missing, unknown or invalid"),
    "503": _error("Redis unavailable or not durable; retry after Retry-After seconds"),
}
_AUTH_ERRORS = {"401": _ERRORS["401"], "403": _ERRORS["403"], "503": _ERRORS["503"]}

_PREFERENCE_FIELDS: dict[str, Any] = {
    "muted_types": {
        "type": "array",
        "items": {"type": "string", "enum": [t.value for t in EventType]},
        "description": "event types the customer opted out of (answered `suppressed`)",
    },
    "min_amount": {
        "type": "object",
        "propertyNames": {"enum": [t.value for t in EventType]},
        "additionalProperties": _DECIMAL,
        "description": "per event type, the least amount worth a message",
    },
    "quiet_hours": {
        "type": ["object", "null"],
        "additionalProperties": False,
        "required": ["start", "end"],
        "properties": {
            "start": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
            "end": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
            "tz": {"type": "string", "description": "IANA time zone, default Asia/Shanghai"},
        },
        "description": "events in these local hours are held and sent as one digest when they end; "
        "critical events are not held",
    },
}

_SCHEMAS: dict[str, Any] = {
    "Event": {
        "type": "object",
        "additionalProperties": False,
        "required": ["event_id", "customer_id", "account", "type", "amount", "currency", "occurred_at"],
        "properties": {
            "event_id": _ID,
            "customer_id": _ID,
            "account": {"type": "string", "pattern": r"^\d{8,32}$"},
            "type": {"type": "string", "enum": [t.value for t in EventType]},
            "amount": {"type": "string", "pattern": r"^(0|[1-9]\d{0,9})(\.\d{1,2})?$"},
            "currency": {"type": "string", "enum": sorted(CURRENCIES)},
            "balance": {"type": "string", "pattern": r"^-?(0|[1-9]\d{0,14})(\.\d{1,2})?$"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "counterparty": {"type": "string", "minLength": 1, "maxLength": 64},
            "channel": {"type": "string", "minLength": 1, "maxLength": 32},
            "priority": {"type": "string", "enum": ["normal", "critical"]},
            "fallback": {"type": "string", "enum": ["sms", "none"]},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["event_id", "status"],
        "properties": {
            "event_id": _ID,
            "status": {"type": "string", "enum": ["queued", "digested", "suppressed", "duplicate"]},
        },
    },
    "BatchResults": _results(
        "event_id",
        ["queued", "digested", "suppressed", "duplicate", "rejected", "rate_limited"],
        retry_after_s={"type": "integer"},
    ),
    "Lifecycle": {
        "type": "object",
        "required": ["event_id", "status", "attempts"],
        "properties": {
            "event_id": _ID,
            "status": {"type": "string", "enum": [s.value for s in EventStatus]},
            "attempts": {"type": "integer"},
            "last_error": {
                "type": ["string", "null"],
                "description": "why it is not delivered (its last attempt's error); null once delivered",
            },
            "error_before_delivery": {
                "type": "string",
                "description": "a delivered event's error of an earlier attempt (it was retried)",
            },
            "accepted_at": {"type": ["string", "null"], "format": "date-time"},
            "updated_at": {"type": ["string", "null"], "format": "date-time"},
            "delivered_at": {"type": ["string", "null"], "format": "date-time"},
            "msgid": {"type": "string"},
            "finish_status": {
                "type": "string",
                "description": "WeChat's delivery-finished status (TEMPLATESENDJOBFINISH)",
                "enum": ["success", "failed:user block", "failed: system failed"],
            },
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "notice": {
                "type": "string",
                "description": "the status notice to the source's callback (SMS fallback)",
                "enum": ["queued", "retrying", "sent", "failed", "dead_lettered"],
            },
            "notified_at": {"type": ["string", "null"], "format": "date-time"},
            "notice_error": {"type": "string"},
            "origin": {
                "type": "string",
                "enum": ["live", "archive"],
                "description": "where the answer came from: Redis (the last PUSHGW_EVENT_TTL_S), or the "
                "PostgreSQL archive once Redis let the record expire (PUSHGW_ARCHIVE_URL)",
            },
        },
    },
    "BindingRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["openid"],
        "properties": {
            "openid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{6,64}$"},
            "appid": {
                "type": "string",
                "pattern": "^wx[A-Za-z0-9_]{1,62}$",
                "description": "the official account the customer follows (default: PUSHGW_WECHAT_APPID); "
                "one the deployment does not send through is refused with 422 unknown_appid",
            },
        },
    },
    "Binding": {
        "type": "object",
        "required": ["customer_id", "openid", "status"],
        "properties": {
            "customer_id": _ID,
            "openid": {"type": "string"},
            "appid": {"type": "string"},
            "status": {"type": "string", "enum": ["active", "unsubscribed", "invalid", "blocked"]},
        },
    },
    "Preferences": {
        "type": "object",
        "additionalProperties": False,
        "properties": _PREFERENCE_FIELDS,
    },
    "CustomerPreferences": {
        "type": "object",
        "additionalProperties": False,
        "required": ["customer_id", "muted_types", "min_amount", "quiet_hours"],
        "properties": {"customer_id": _ID, **_PREFERENCE_FIELDS},
    },
    "CustomerEvents": {
        "type": "object",
        "required": ["customer_id", "events"],
        "properties": {
            "customer_id": _ID,
            "next_cursor": {
                "type": ["string", "null"],
                "description": "the `cursor` of the next (older) page; null when this page was not full",
            },
            "events": {
                "type": "array",
                "description": "newest first: live ones, then (with an archive) archived ones, each once",
                "items": {
                    "allOf": [
                        _ref("Lifecycle"),
                        {
                            "type": "object",
                            "required": ["source", "timeline"],
                            "properties": {
                                "source": {"type": "string"},
                                "type": {"type": "string"},
                                "amount": {"type": "string"},
                                "currency": {"type": "string"},
                                "account": {"type": "string", "description": "masked: ****1234"},
                                "priority": {"type": "string", "enum": ["normal", "critical"]},
                                "occurred_at": {"type": "string"},
                                "timeline": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["state", "at"],
                                        "properties": {
                                            "state": {"type": "string"},
                                            "at": {"type": ["string", "null"], "format": "date-time"},
                                            "detail": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    ]
                },
            },
        },
    },
    "Erasure": {
        "type": "object",
        "required": ["customer_id", "erased"],
        "properties": {
            "customer_id": _ID,
            "erased": {
                "type": "object",
                "description": "how many of each were erased (a repeat answers zeros); never what they held",
                "required": [
                    "binding",
                    "preferences",
                    "timeline_entries",
                    "held_events",
                    "event_records",
                    "queued_copies",
                ],
                "properties": {
                    "binding": {"type": "integer", "minimum": 0, "maximum": 1},
                    "preferences": {"type": "integer", "minimum": 0, "maximum": 1},
                    "timeline_entries": {"type": "integer", "minimum": 0},
                    "held_events": {"type": "integer", "minimum": 0},
                    "event_records": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "records stripped of personal fields (id, status and payload hash "
                        "stay for dedup); an event in flight ends no_binding",
                    },
                    "queued_copies": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "scheduled retries, stream entries and dead letters removed",
                    },
                    "archived_events": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "only with an archive: its rows of the customer stripped of personal "
                        "fields (source, event id, status and times stay for disputes and counts)",
                    },
                },
            },
        },
    },
    "ErrorDetail": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "field": {"type": "string"},
        },
    },
    "Error": {"type": "object", "required": ["error"], "properties": {"error": _ref("ErrorDetail")}},
}


_BINDINGS_BATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["bindings"],
    "properties": {
        "bindings": {
            "type": "array",
            "minItems": 1,
            "maxItems": 500,
            "items": {
                "type": "object",
                "description": "customer_id, and the fields of a BindingRequest (each item checked alone)",
            },
        }
    },
}
_BINDING_RESULTS = _results("customer_id", ["bound", "rejected"])


def _query_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


_WECHAT_SIGNATURE = [
    _query_param(
        "signature", "hex sha1 of the sorted [PUSHGW_WECHAT_CALLBACK_TOKEN, timestamp, nonce] joined"
    ),
    _query_param("timestamp", "unix seconds, within 300 s of the gateway's clock (either way)"),
    _query_param("nonce", "a random string"),
]
_WECHAT_SAFE_MODE = [
    {
        **_query_param(
            "encrypt_type", "`aes`: a safe-mode post (required when PUSHGW_WECHAT_ENCODING_AES_KEY is set)"
        ),
        "required": False,
    },
    {
        **_query_param(
            "msg_signature", "hex sha1 of the sorted [token, timestamp, nonce, Encrypt] joined (safe mode)"
        ),
        "required": False,
    },
]
_TEXT_OK = {"content": {"text/plain": {"schema": {"type": "string"}}}}
_WECHAT_CALLBACK: dict[str, Any] = {
    "get": {
        "summary": "WeChat server-URL verification: answers echostr when the signature is right",
        "parameters": [*_WECHAT_SIGNATURE, _query_param("echostr", "echoed back as text/plain")],
        "responses": {
            "200": {"description": "the echostr", **_TEXT_OK},
            "401": _error("bad signature or stale timestamp"),
            "404": _error("PUSHGW_WECHAT_CALLBACK_TOKEN is not set"),
        },
    },
    "post": {
        "summary": "WeChat event push (TEMPLATESENDJOBFINISH): records the final status on the event; with"
        " PUSHGW_WECHAT_ENCODING_AES_KEY set, only safe-mode (encrypted) posts are taken",
        "parameters": [*_WECHAT_SIGNATURE, *_WECHAT_SAFE_MODE],
        "requestBody": {"required": True, "content": {"text/xml": {"schema": {"type": "string"}}}},
        "responses": {
            "200": {
                "description": "`success` (also for a duplicate, an unknown msgid, a msgid not sent to that"
                " user, or another event)",
                **_TEXT_OK,
            },
            "400": _error("not well-formed XML, or XML with a DOCTYPE or an entity"),
            "401": _error(
                "bad signature or msg_signature, stale timestamp, plaintext post in safe mode, or an envelope"
                " that does not open for PUSHGW_WECHAT_APPID"
            ),
            "404": _error("PUSHGW_WECHAT_CALLBACK_TOKEN is not set"),
            "413": _error("body too large"),
            "503": _error("Redis unavailable; WeChat retries"),
        },
    },
}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


def _customer_paths(signed: list[dict[str, list[str]]]) -> dict[str, Any]:
    customer = [_path_param("customer_id")]
    timeline_query = [
        {
            "name": "since",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "format": "date-time"},
            "description": "only events accepted at or after this time (ISO-8601 with offset)",
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "maxLength": 256},
            "description": "the `next_cursor` of the previous page: the events after it (older)",
        },
    ]
    return {
        "/v1/customers/{customer_id}": {
            "delete": {
                "summary": "Erase what pushgw holds about the customer (unbinding, the right to deletion)",
                "security": signed,
                "parameters": customer,
                "responses": {
                    "200": _json(_ref("Erasure"), "erased (idempotent: a repeat answers zeros)"),
                    "422": _ERRORS["422"],
                    **_AUTH_ERRORS,
                },
            }
        },
        "/v1/customers/{customer_id}/preferences": {
            "put": {
                "summary": "Set the customer's preferences (replaces them)",
                "security": signed,
                "parameters": customer,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Preferences")}},
                },
                "responses": {
                    "200": _json(_ref("CustomerPreferences"), "saved"),
                    "413": _error("too large"),
                    **_ERRORS,
                },
            },
            "get": {
                "summary": "The customer's preferences (empty ones when never set)",
                "security": signed,
                "parameters": customer,
                "responses": {
                    "200": _json(_ref("CustomerPreferences"), "the preferences"),
                    "422": _ERRORS["422"],
                    **_AUTH_ERRORS,
                },
            },
        },
        "/v1/customers/{customer_id}/events": {
            "get": {
                "summary": "The customer's recent alerts with their status timeline (customer service)",
                "security": signed,
                "parameters": [*customer, *timeline_query],
                "responses": {
                    "200": _json(_ref("CustomerEvents"), "newest first, masked"),
                    "422": _ERRORS["422"],
                    **_AUTH_ERRORS,
                    "503": _error("Redis, or the archive (when configured), unavailable; retry later"),
                },
            }
        },
    }


def document(max_batch_events: int = 500) -> dict[str, Any]:
    """The whole document; pure, so tests can compare it with the app's routes."""
    signed: list[dict[str, list[str]]] = [{"pushgwSignature": []}]
    events_body = {"required": True, "content": {"application/json": {"schema": _ref("Event")}}}
    batch_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["events"],
        "properties": {"events": {"type": "array", "minItems": 1, "maxItems": max_batch_events, "items": {}}},
    }
    binding_param = [_path_param("customer_id")]
    return {
        "openapi": "3.1.0",
        "info": {"title": "pushgw ingress", "version": "1"},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "pushgwSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": (
                        "RFC 9421 HTTP Message Signature, HMAC-SHA256, label pushgw: Signature-Input "
                        'pushgw=("@method" "@path" "@query" "content-digest");created=UNIX;keyid="K";'
                        'nonce="N" (content-digest on requests with a body, with an RFC 9530 '
                        "Content-Digest: sha-256 header); created within 300 s; a nonce of a PUT or DELETE "
                        "is accepted once. Keys may be limited to scopes (events, bindings, customers): 403 "
                        "without the route's scope. See the README."
                    ),
                }
            },
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Queue one account-change event",
                    "security": signed,
                    "requestBody": events_body,
                    "responses": {
                        "202": _json(_ref("Accepted"), "queued, digested or suppressed (durable in Redis)"),
                        "200": _json(_ref("Accepted"), "duplicate of an event already accepted"),
                        "413": _error("body too large"),
                        "429": _error("customer rate limit (policy reject)"),
                        **_ERRORS,
                    },
                }
            },
            "/v1/events/batch": {
                "post": {
                    "summary": f"Queue up to {max_batch_events} events; per-item results in request order",
                    "security": signed,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": batch_schema}},
                    },
                    "responses": {
                        "200": _json(_ref("BatchResults"), "per-item results"),
                        "413": _error("body too large or too many events"),
                        **_ERRORS,
                    },
                }
            },
            "/v1/events/{event_id}": {
                "get": {
                    "summary": "The event's lifecycle",
                    "security": signed,
                    "parameters": [_path_param("event_id")],
                    "responses": {
                        "200": _json(_ref("Lifecycle"), "the event, from Redis or the archive (`origin`)"),
                        "404": _error("no such event"),
                        "422": _ERRORS["422"],
                        **_AUTH_ERRORS,
                        "503": _error("Redis, or the archive (when Redis no longer holds it), unavailable"),
                    },
                }
            },
            "/v1/bindings/batch": {
                "post": {
                    "summary": "Bind up to 500 customers at once (a bulk re-send, e.g. after an epoch reset);"
                    " per-item results in request order",
                    "security": signed,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _BINDINGS_BATCH}},
                    },
                    "responses": {
                        "200": _json(_BINDING_RESULTS, "per-item results"),
                        "413": _error("body too large or too many bindings"),
                        **_ERRORS,
                    },
                }
            },
            "/v1/bindings/{customer_id}": {
                "put": {
                    "summary": "Bind a customer to a WeChat openid",
                    "security": signed,
                    "parameters": binding_param,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("BindingRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("Binding"), "bound"),
                        "413": _error("too large"),
                        **_ERRORS,
                    },
                },
                "get": {
                    "summary": "The customer's binding",
                    "security": signed,
                    "parameters": binding_param,
                    "responses": {
                        "200": _json(_ref("Binding"), "bound"),
                        "404": _error("no binding"),
                        "422": _ERRORS["422"],
                        **_AUTH_ERRORS,
                    },
                },
                "delete": {
                    "summary": "Remove the binding",
                    "security": signed,
                    "parameters": binding_param,
                    "responses": {
                        "204": {"description": "removed"},
                        "404": _error("no binding"),
                        "422": _ERRORS["422"],
                        **_AUTH_ERRORS,
                    },
                },
            },
            **_customer_paths(signed),
            "/wechat/callback": _WECHAT_CALLBACK,
            "/healthz": {"get": {"summary": "Process is up", "responses": {"200": {"description": "up"}}}},
            "/readyz": {
                "get": {
                    "summary": "Ready exactly when an event would be accepted (Redis reachable and durable,"
                    " its data epoch there, not shedding); 503 `unavailable` (with `data_lost` when Redis"
                    " holds no pushgw data), `shedding` or `draining` (it stops soon, still serving)",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (here unless PUSHGW_GATEWAY_METRICS_PORT gives them a"
                    " listener of their own: then 404 here)",
                    "responses": {"200": {"description": "text"}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "json"}}}
            },
        },
    }


async def serve(request: web.Request) -> web.Response:
    return respond(document(gateway_of(request).settings.max_batch_events))
