"""Locust load shapes (step ramp, spike); the locustfile exports one only when PUSHGW_LOCUST_SHAPE names it,
because Locust uses any shape class it finds in the locustfile and then ignores -u/-r."""

from __future__ import annotations

from locust import LoadTestShape

from loadtest.policy import Stage, spike_stages, stage_at, step_stages


class _StagedShape(LoadTestShape):
    abstract = True
    stages: list[Stage]

    def tick(self) -> tuple[int, float] | None:
        run_time_s = float(self.get_run_time())  # type: ignore[no-untyped-call]  # unannotated in locust
        return stage_at(self.stages, run_time_s)


class StepRampShape(_StagedShape):
    """10 more users every 30 s, five times (2.5 minutes): where does latency start to climb?"""

    stages = step_stages()


class SpikeShape(_StagedShape):
    """10 users for 30 s, 100 at once for 20 s, 10 again for 30 s: does it shed cleanly and recover?"""

    stages = spike_stages()


SHAPE_CLASSES: dict[str, type[LoadTestShape]] = {"step": StepRampShape, "spike": SpikeShape}
