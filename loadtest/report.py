"""Pure helpers of the benchmark: percentiles, the printed table, a py-spy profile summary.

`python -m loadtest.report PROFILE.txt...` prints the top functions of py-spy `-f raw` profiles (what
`pushgw bench --profile DIR` writes)."""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (0 < fraction <= 1) of `values`; inf counts as the slowest answer
    (an event never delivered), nan when there are no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its unit, and optionally its ratio to a named baseline."""

    name: str
    value: float
    unit: str
    ratio: float | None = None
    base: str = ""
    target: str = ""


def _value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    if unit == "ms":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def table(title: str, rows: Iterable[Row]) -> str:
    """The benchmark table: fixed-width, one figure a line, ratio and target beside it; a row without a
    unit is a heading."""
    lines = [title, f"{'measure':<46}{'value':>11}  {'unit':<9}{'ratio':>7}  {'of':<6}target"]
    for row in rows:
        if not row.unit:  # a heading
            lines.append(row.name)
            continue
        ratio = "" if row.ratio is None or math.isnan(row.ratio) else f"{row.ratio:7.2f}"
        value = _value(row.value, row.unit)
        line = f"{row.name:<46}{value:>11}  {row.unit:<9}{ratio:>7}  {row.base:<6}{row.target}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def profile_top(
    collapsed: Iterable[str], limit: int = 15
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy `-f raw` (collapsed stacks: `frame;frame;leaf count`): the functions with the largest
    self time and the largest inclusive time, each as (function, share of all samples)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return [], []
    entry = max(inclusive.values())  # the process's entry frames are on every stack: they say nothing
    return (
        [(name, n / total) for name, n in own.most_common(limit)],
        [(name, n / total) for name, n in inclusive.most_common() if n < entry][:limit],
    )


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`: lines merged, paths shortened."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def main() -> None:
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as lines:
            own, inclusive = profile_top(lines)
        sys.stdout.write(f"== {path}\nself time:\n")
        sys.stdout.writelines(f"  {share:6.1%}  {name}\n" for name, share in own)
        sys.stdout.write("inclusive (below the entry frames):\n")
        sys.stdout.writelines(f"  {share:6.1%}  {name}\n" for name, share in inclusive)


if __name__ == "__main__":
    main()
