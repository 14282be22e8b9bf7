"""The simulator's configuration: accepted apps, token lifetime, dedup window, quotas and random seed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from wechatsim.callback import CallbackConfig
from wechatsim.catalog import Template, default_apps
from wechatsim.faults import FaultConfig

__all__ = ["SimConfig"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What the simulated account accepts; `repr` leaves the app secrets out.

    `minute_quota` and `qps` 0 mean no limit. `keep_messages`: how many of the latest delivered messages
    `/sim/messages` lists (older ones are only counted, so a long run's memory stays flat). `faults` are in
    force at start and after `POST /sim/reset`; `callback` says where finish events go (None: nowhere).
    `templates` gives an app its own templates (WeChat template ids belong to one account); an app not in it
    knows the shipped ones. Raises ValueError for an impossible combination.
    """

    apps: dict[str, str] = field(default_factory=default_apps, repr=False)
    token_ttl_s: int = 7200
    token_overlap_s: int = 300
    dedup_window_s: float = 600.0
    daily_quota: int = 100_000
    minute_quota: int = 0
    seed: int = 0
    qps: int = 0
    keep_messages: int = 100_000  # a default day's quota
    faults: FaultConfig = field(default_factory=FaultConfig)
    callback: CallbackConfig | None = None
    templates: Mapping[str, tuple[Template, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.apps:
            raise ValueError("apps: at least one appid:secret pair is needed")
        if self.token_ttl_s <= 0:
            raise ValueError(f"token_ttl_s must be > 0, got {self.token_ttl_s}")
        if not 0 <= self.token_overlap_s < self.token_ttl_s:
            raise ValueError(f"token_overlap_s must be in [0, token_ttl_s), got {self.token_overlap_s}")
        if min(self.dedup_window_s, self.daily_quota, self.minute_quota, self.qps) < 0:
            raise ValueError("dedup_window_s, daily_quota, minute_quota and qps must be >= 0")
        if self.keep_messages <= 0:
            raise ValueError(f"keep_messages must be > 0, got {self.keep_messages}")
        unknown = sorted(set(self.templates) - set(self.apps))
        if unknown:
            raise ValueError(f"templates: {unknown[0]} is not one of the apps")
