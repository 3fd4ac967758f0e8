"""Prometheus metrics at ``/metrics``: tasks created and finished, upload bytes, queue,
workers alive; and ``/health``: 200 while a worker is alive, else 503.

Counts of tasks come from the TaskStore (so they include what the worker processes
did and survive restarts); upload bytes and refused uploads are counted in the HTTP
process. Each app gets its own registry: nothing is global.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from retracer.server.config import ServerSettings
from retracer.server.statistics import Statistics
from retracer.server.tasks import LiveWorker, TaskState, TaskStore, Total

bp = Blueprint("metrics", __name__)


class Metrics:
    """The app's registry and the counters the HTTP side updates."""

    def __init__(self, store: TaskStore, settings: ServerSettings) -> None:
        self._store = store
        self._settings = settings
        self.registry = CollectorRegistry()
        self.upload_bytes = Counter(
            "retracer_upload_bytes",
            "Bytes of packed archives accepted by /create.",
            registry=self.registry,
        )
        self.uploads_refused = Counter(
            "retracer_uploads_refused",
            "Uploads /create refused, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.registry.register(_TaskCollector(store, self))

    def accepted(self, packed_bytes: int) -> None:
        self.upload_bytes.inc(packed_bytes)

    def refused(self, status: int) -> None:
        self.uploads_refused.labels(status=str(status)).inc()

    def workers_alive(self) -> int:
        """Consumers (``retracer worker``) whose heartbeat is at most three beats old."""
        since = time.time() - 3 * self._settings.worker_heartbeat_seconds
        return self._store.workers_seen_since(since)

    def workers_by_arch(self) -> dict[str, int]:
        """Live consumers per architecture they serve."""
        return _count_each(worker.arches for worker in self._live())

    def workers_by_release(self) -> dict[str, int]:
        """Live consumers per release whose repositories they hold."""
        return _count_each(worker.releases for worker in self._live())

    def _live(self) -> tuple[LiveWorker, ...]:
        since = time.time() - 3 * self._settings.worker_heartbeat_seconds
        return self._store.live_workers(since)


def _count_each(groups: Iterator[tuple[str, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for group in groups:
        for name in group:
            counts[name] = counts.get(name, 0) + 1
    return counts


class _TaskCollector(Collector):
    def __init__(self, store: TaskStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        totals = self._store.totals()
        yield CounterMetricFamily(
            "retracer_tasks_created",
            "Tasks accepted by /create.",
            value=totals.get(Total.CREATED, 0),
        )
        finished = CounterMetricFamily(
            "retracer_tasks_finished", "Tasks finished, by result.", labels=["result"]
        )
        for total, result in (
            (Total.FINISHED_SUCCESS, "success"),
            (Total.FINISHED_FAILURE, "failure"),
        ):
            finished.add_metric([result], totals.get(total, 0))
        yield finished
        yield CounterMetricFamily(
            "retracer_results_reused",
            "Tasks finished with the result of an identical core, without a retrace.",
            value=totals.get(Total.REUSED, 0),
        )
        counts = self._store.count_by_state()
        yield GaugeMetricFamily(
            "retracer_queue_length", "Tasks waiting for a worker.", value=counts[TaskState.QUEUED]
        )
        yield GaugeMetricFamily(
            "retracer_running_tasks", "Tasks being retraced.", value=counts[TaskState.RUNNING]
        )
        yield GaugeMetricFamily(
            "retracer_workers_alive",
            "Worker processes (retracer worker) with a recent heartbeat; 0 means tasks wait.",
            value=self._metrics.workers_alive(),
        )
        per_arch = GaugeMetricFamily(
            "retracer_workers_alive_by_arch",
            "Live workers serving each architecture; 0 means its tasks wait.",
            labels=["arch"],
        )
        for arch, count in sorted(self._metrics.workers_by_arch().items()):
            per_arch.add_metric([arch], count)
        yield per_arch
        yield from statistics_families(self._store.statistics())


def statistics_families(stats: Statistics) -> Iterator[GaugeMetricFamily]:
    """The dashboard's figures (the same Statistics the /admin page draws)."""
    yield GaugeMetricFamily(
        "retracer_tasks_created_last_hour",
        "Tasks created in the current hour.",
        value=stats.created_per_hour[-1],
    )
    yield GaugeMetricFamily(
        "retracer_tasks_created_last_day", "Tasks created today.", value=stats.created_per_day[-1]
    )
    for name, help_text, label, rows in (
        ("retracer_task_failures", "Failed tasks, by reason.", "reason", stats.failure_reasons),
        ("retracer_retraces_by_release", "Retraced tasks, by release.", "release",
         stats.per_release),
        ("retracer_retraces_by_arch", "Retraced tasks, by architecture.", "arch", stats.per_arch),
    ):  # fmt: skip
        family = GaugeMetricFamily(name, help_text, labels=[label])
        for value, count in rows:
            family.add_metric([value], count)
        yield family
    environments = GaugeMetricFamily(
        "retracer_environments", "Retraces by where their environment came from.", labels=["source"]
    )
    environments.add_metric(["cache"], stats.environments_reused)
    environments.add_metric(["built"], stats.environments_built)
    yield environments
    yield GaugeMetricFamily(
        "retracer_environment_cache_bytes",
        "Bytes of environment images cached, as the worker last measured.",
        value=stats.environment_bytes,
    )
    yield GaugeMetricFamily(
        "retracer_environment_cache_images",
        "Environment images cached, as the worker last measured.",
        value=stats.environment_images,
    )
    steps = GaugeMetricFamily(
        "retracer_step_seconds",
        "Seconds per retrace step over the last week, by percentile.",
        labels=["step", "quantile"],
    )
    for times in stats.step_times:
        steps.add_metric([times.step, "0.5"], times.p50)
        steps.add_metric([times.step, "0.99"], times.p99)
    yield steps


def init_app(app: Flask, store: TaskStore, settings: ServerSettings) -> Metrics:
    metrics = Metrics(store, settings)
    app.extensions["retracer.metrics"] = metrics
    app.register_blueprint(bp)
    return metrics


@bp.get("/metrics")
def export() -> Response:
    metrics: Metrics = current_app.extensions["retracer.metrics"]
    return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)


@bp.get("/health")
def health() -> Response:
    metrics: Metrics = current_app.extensions["retracer.metrics"]
    alive = metrics.workers_alive()
    if alive:
        return Response(f"ok: {alive} worker(s) alive\n", content_type="text/plain")
    return Response(
        "No worker is alive: new tasks wait until one starts.\n",
        status=503,
        content_type="text/plain",
    )
