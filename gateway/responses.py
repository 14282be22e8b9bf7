"""JSON responses encoded with orjson (the one way handlers answer)."""

from typing import Any

import orjson
from aiohttp import web


def respond(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )
