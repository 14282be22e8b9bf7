"""Wall-clock helpers in base units; Redis TIME is the clock of every limit and schedule."""

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def now_s() -> float:
    return time.time()
