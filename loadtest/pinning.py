"""Which CPU each bench process runs on: the process under test on one, its load and helpers on another.

On a machine with two or more CPUs the process measured (hello, gateway, worker, the bare client) runs on the
second allowed CPU and what drives or serves it (wrk, Redis, the simulator, the open-loop generator) on the
first, so neither steals the other's cycles. With fewer CPUs nothing is pinned and the report says so.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Pinning:
    """`product`: the CPU of the process under test; `load`: that of its load and helpers; None: unpinned."""

    product: int | None
    load: int | None

    @classmethod
    def detect(cls) -> Pinning:
        """Pin when this process may use two CPUs or more and `taskset` is installed."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(product=cpus[1], load=cpus[0])

    @property
    def pinned(self) -> bool:
        return self.product is not None

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned (fewer than 2 CPUs or no taskset)"
        return f"product on CPU {self.product}, load + Redis + simulator on CPU {self.load}"


def on_cpu(cpu: int | None, command: list[str]) -> list[str]:
    """`command` started on `cpu` (through taskset, so every thread it starts inherits it); as is for None."""
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]
