"""The connections' RESP encoding in C gives exactly the bytes redis-py's own encoder gives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import AbstractConnection, Connection

from gateway.core.redis import packing_in_c
from gateway.core.status import EventStatus

PYTHON = Connection(decode_responses=True)
IN_C = packing_in_c(Connection)(decode_responses=True)
_ARG = st.one_of(st.text(), st.binary(), st.integers(min_value=-(2**70), max_value=2**70))


def _wire(connection: AbstractConnection, *args: Any) -> bytes:
    return b"".join(bytes(part) for part in connection.pack_command(*args))


@given(st.lists(_ARG, max_size=12))
def test_any_command_packs_to_the_same_bytes(args: list[Any]) -> None:
    assert _wire(IN_C, "EVALSHA", *args) == _wire(PYTHON, "EVALSHA", *args)


@pytest.mark.parametrize(
    "args",
    [
        ("CONFIG GET", "appendonly"),
        ("XINFO GROUPS", "pushgw:{s0}:stream"),
        ("SET", "k", "尾号1234\r\n", "EX", 10),
        ("ZADD", "k", 1.5, "member"),  # floats go the pure-Python way (repr), as before
        ("HSET", "k", "status", EventStatus.DELIVERED),  # a StrEnum is its value
        ("SET", "k", memoryview(b"value")),
    ],
)
def test_special_arguments_pack_to_the_same_bytes(args: tuple[Any, ...]) -> None:
    assert _wire(IN_C, *args) == _wire(PYTHON, *args)


def test_what_redis_py_refuses_is_still_refused() -> None:
    bad_values: list[Any] = [True, None, "\ud800"]
    for bad in bad_values:
        with pytest.raises(Exception) as in_c:
            IN_C.pack_command("SET", "k", bad)
        with pytest.raises(Exception) as in_python:
            PYTHON.pack_command("SET", "k", bad)
        assert type(in_c.value) is type(in_python.value)
