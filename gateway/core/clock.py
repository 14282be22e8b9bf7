"""Wall-clock helpers in base units, and the one parser of an operator's time argument; Redis TIME is the
clock of every limit and schedule."""

import re
import time
from datetime import datetime

_UNIX_S = re.compile(r"\d{1,12}(\.\d{1,6})?")


class BadInstant(ValueError):
    """An operator's time argument is neither unix seconds nor ISO-8601 with a time zone; names the flag."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def now_s() -> float:
    return time.time()


def parse_instant_ms(raw: str, flag: str) -> int:
    """Unix seconds (`1767225600`, `1767225600.5`) or an ISO-8601 time with a zone offset
    (`2026-11-24T00:00:00+08:00`, `...Z`), as unix ms. Raises BadInstant naming `flag`: a time without a
    zone is refused, never read in the host's zone (operators on other hosts would see other windows)."""
    text = raw.strip()
    if _UNIX_S.fullmatch(text):
        return int(float(text) * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInstant(f"{flag}={raw!r}: use unix seconds or ISO-8601 with a time zone") from None
    if moment.tzinfo is None:
        raise BadInstant(f"{flag}={raw!r}: give a time zone offset (e.g. +08:00 or Z)")
    return int(moment.timestamp() * 1000)
