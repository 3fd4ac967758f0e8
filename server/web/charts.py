"""Bar charts for the dashboard, laid out here and drawn by the template as SVG.

Only numbers leave this module: the template writes ``<rect>`` elements from them and
escapes every label, so a chart needs no script and no library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 480
HEIGHT = 120
GAP = 2


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    peak: int


def columns(values: Sequence[int], labels: Sequence[str]) -> Chart:
    """One column per value, scaled so the highest fills the chart's height."""
    peak = max(values, default=0)
    slot = WIDTH / max(len(values), 1)
    bars = []
    for index, (value, label) in enumerate(zip(values, labels, strict=True)):
        height = HEIGHT * value / peak if peak else 0.0
        bars.append(Bar(index * slot, HEIGHT - height, max(slot - GAP, 1.0), height, value, label))
    return Chart(WIDTH, HEIGHT, tuple(bars), peak)


def rows(ranked: Sequence[tuple[str, int]], row_height: int = 18) -> Chart:
    """One horizontal bar per (label, count), longest for the largest count."""
    peak = max((count for _, count in ranked), default=0)
    bars = tuple(
        Bar(0.0, index * row_height, WIDTH * count / peak if peak else 0.0, row_height - GAP,
            count, label)
        for index, (label, count) in enumerate(ranked)
    )  # fmt: skip
    return Chart(WIDTH, max(len(bars), 1) * row_height, bars, peak)
