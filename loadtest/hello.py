"""The baseline server: bare aiohttp on uvloop answering every POST with a small JSON (H in the bench)."""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web


async def _hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"status":"ok"}', status=202, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app = web.Application()
    app.router.add_post("/{tail:.*}", _hello)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
