"""The operator's figures, read from the task store: the one source of /admin and /metrics.

The store keeps a small history row per task (created, finished, outcome, reason,
release, architecture, whether the environment came from the cache) and the time of
each retrace step, written in the same transactions as the task's own changes. The
rows outlive a task's expiry, so rates and rankings cover tasks whose files are gone.
:func:`collect` turns them into one frozen :class:`Statistics`; the dashboard draws
it and the Prometheus collector exports it, so the two never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retracer.server.tasks.store import Database

HOURS_SHOWN = 24
DAYS_SHOWN = 14
# Step times older than this are left out of the percentiles.
STEP_WINDOW_SECONDS = 7 * 86400
# The whole life of a task, from upload to result, is reported beside the steps.
TOTAL = "total (upload to result)"


@dataclass(frozen=True)
class Percentiles:
    step: str
    count: int
    p50: float
    p99: float


@dataclass(frozen=True)
class Statistics:
    now: float
    # Tasks created in each of the last 24 hours and 14 days, oldest first.
    created_per_hour: tuple[int, ...]
    created_per_day: tuple[int, ...]
    succeeded: int
    failed: int
    # (reason, count), most frequent first.
    failure_reasons: tuple[tuple[str, int], ...]
    # (name, count) of retraced tasks, most frequent first.
    per_release: tuple[tuple[str, int], ...]
    per_arch: tuple[tuple[str, int], ...]
    queued: int
    running: int
    environments_reused: int
    environments_built: int
    environment_images: int
    environment_bytes: int
    step_times: tuple[Percentiles, ...]

    @property
    def success_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return self.succeeded / finished if finished else None

    @property
    def environment_hit_rate(self) -> float | None:
        total = self.environments_reused + self.environments_built
        return self.environments_reused / total if total else None


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def collect(db: Database, now: float) -> Statistics:
    hour_start = math.floor(now / 3600) * 3600
    day_start = math.floor(now / 86400) * 86400
    gauges = dict(db.rows("SELECT name, value FROM gauges"))
    return Statistics(
        now=now,
        created_per_hour=_buckets(db, hour_start, 3600, HOURS_SHOWN),
        created_per_day=_buckets(db, day_start, 86400, DAYS_SHOWN),
        succeeded=_count(db, "success = 1"),
        failed=_count(db, "success = 0"),
        failure_reasons=_ranked(db, "coalesce(reason, 'no reason recorded')", "success = 0"),
        per_release=_ranked(db, "release", "release IS NOT NULL"),
        per_arch=_ranked(db, "arch", "arch IS NOT NULL"),
        queued=_active(db, "QUEUED"),
        running=_active(db, "RUNNING"),
        environments_reused=_count(db, "environment_cached = 1"),
        environments_built=_count(db, "environment_cached = 0"),
        environment_images=int(gauges.get("environment_images", 0)),
        environment_bytes=int(gauges.get("environment_bytes", 0)),
        step_times=_step_times(db, now - STEP_WINDOW_SECONDS),
    )


def _buckets(db: Database, current_start: float, width: int, count: int) -> tuple[int, ...]:
    first = current_start - (count - 1) * width
    counts = [0] * count
    bucket = db.dialect.floor.format("(created - ?) / ?")
    for index, number in db.rows(
        f"SELECT {bucket}, count(*) FROM task_history WHERE created >= ? GROUP BY 1",
        (first, width, first),
    ):
        if 0 <= index < count:
            counts[index] = number
    return tuple(counts)


def _count(db: Database, condition: str) -> int:
    ((value,),) = db.rows(f"SELECT count(*) FROM task_history WHERE {condition}")
    return int(value)


def _ranked(db: Database, column: str, condition: str) -> tuple[tuple[str, int], ...]:
    rows = db.rows(
        f"SELECT {column}, count(*) AS n FROM task_history WHERE {condition}"
        " GROUP BY 1 ORDER BY n DESC, 1"
    )
    return tuple((str(name), int(count)) for name, count in rows)


def _active(db: Database, state: str) -> int:
    ((value,),) = db.rows("SELECT count(*) FROM tasks WHERE state = ?", (state,))
    return int(value)


def _step_times(db: Database, since: float) -> tuple[Percentiles, ...]:
    samples: dict[str, list[float]] = {}
    for step, seconds in db.rows(
        "SELECT step, seconds FROM step_times WHERE at >= ? ORDER BY seconds", (since,)
    ):
        samples.setdefault(step, []).append(seconds)
    totals = [
        row[0]
        for row in db.rows(
            "SELECT finished - created FROM task_history WHERE finished >= ? ORDER BY 1",
            (since,),
        )
    ]
    if totals:
        samples[TOTAL] = totals
    return tuple(
        Percentiles(step, len(values), percentile(values, 0.5), percentile(values, 0.99))
        for step, values in samples.items()
    )
