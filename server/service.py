"""What the retrace protocol does, apart from HTTP: one method per endpoint.

The views in :mod:`retracer.server.api` parse a request, call one method here and
shape the answer. This layer composes the TaskStore, the Spool, the JobQueue, the
Gatekeeper and the PackageCatalog; it never sees a Flask object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retracer.builder.errors import BuilderError
from retracer.builder.problem import read_problem
from retracer.server.auth import Access, Gatekeeper, digest, new_password, new_task_id
from retracer.server.clients import trusted_networks
from retracer.server.config import Config
from retracer.server.errors import (
    CrashRejected,
    MethodNotAllowed,
    NoExploitableInfo,
    PackageUnknown,
    QueueUnavailable,
    ResultNotReady,
    ServerBusy,
    ServerError,
    TooManyCreates,
    TooManyUploads,
    status_of,
)
from retracer.server.jobs import JobQueue
from retracer.server.metrics import Metrics
from retracer.server.packages import PackageCatalog
from retracer.server.ratelimit import ConcurrencyLimit, SlidingWindow
from retracer.server.spool import SUPPORTED_FORMATS, Spool, Upload
from retracer.server.statistics import Statistics
from retracer.server.tasks import Stage, Task, TaskState, TaskStore
from retracer.sync.errors import SyncError

log = logging.getLogger(__name__)

FINISHED_MESSAGES = {
    TaskState.FINISHED_SUCCESS: "Retrace job finished successfully",
    TaskState.FINISHED_FAILURE: "Retrace job failed",
}
# How long a new task's row stays reserved while its folder is moved in. Past it (the
# server died in between), housekeeping queues the task and the worker fails it.
ADMIT_SECONDS = 60.0
# The task's files a client may read, and when each one exists.
DOCUMENTS = {
    "backtrace": TaskState.FINISHED_SUCCESS,
    "backtrace.json": TaskState.FINISHED_SUCCESS,
    "core_backtrace": TaskState.FINISHED_SUCCESS,
    "log": None,  # once finished, either way
}


@dataclass(frozen=True)
class Created:
    task_id: str
    password: str


@dataclass(frozen=True)
class Status:
    """What ``GET /<id>`` reports."""

    status: str  # X-Task-Status: PENDING, FINISHED_SUCCESS or FINISHED_FAILURE
    body: str  # depends on the protocol profile
    stage: str
    queue_position: int | None


@dataclass(frozen=True)
class Capacity:
    """What ``/settings`` reports, one ``key value`` line each."""

    running_tasks: int
    max_running_tasks: int
    max_packed_size: int
    max_unpacked_size: int
    supported_formats: tuple[str, ...]
    supported_releases: tuple[str, ...]
    # Live workers per architecture and per release they hold (extra keys: ABRT clients
    # skip keys they do not know).
    workers_per_arch: tuple[tuple[str, int], ...] = ()
    workers_per_release: tuple[tuple[str, int], ...] = ()


class RetraceService:
    def __init__(
        self,
        config: Config,
        store: TaskStore,
        spool: Spool,
        queue: JobQueue,
        catalog: PackageCatalog,
        metrics: Metrics,
        offload: Callable[[Callable[[], Any]], Any],
    ) -> None:
        self._config = config
        self._settings = config.server
        self._store = store
        self._spool = spool
        self._queue = queue
        self._catalog = catalog
        self._metrics = metrics
        self._offload = offload
        self.gatekeeper = Gatekeeper(store, config.server)
        self.trusted_proxies = trusted_networks(config.server.trusted_proxies)
        self._creates = SlidingWindow(
            config.server.creates_per_client, config.server.create_window_seconds
        )
        self._uploading = ConcurrencyLimit(config.server.uploads_per_client)

    def capacity(self) -> Capacity:
        """The queue counts uploads in flight too: each may become a task any moment."""
        settings = self._settings
        return Capacity(
            running_tasks=self._store.active_count() + self._spool.uploads_in_flight,
            max_running_tasks=settings.workers + settings.max_queued_tasks,
            max_packed_size=settings.max_packed_size_mib,
            max_unpacked_size=settings.max_unpacked_size_mib,
            supported_formats=SUPPORTED_FORMATS,
            supported_releases=tuple(release.id for release in self._config.releases),
            workers_per_arch=tuple(sorted(self.live_arches().items())),
            workers_per_release=tuple(sorted(self.live_releases().items())),
        )

    def check_package(self, nvr: str, arch: str, release_id: str | None) -> None:
        """Raises PackageUnknown (or UnknownRelease) unless the package is known."""
        if not nvr or not arch:
            raise PackageUnknown(nvr or "(no X-Package-NVR)", arch or "(no X-Package-Arch)")
        found = self._offload(lambda: self._catalog.find(nvr, arch, release_id))
        if found is None:
            raise PackageUnknown(nvr, arch)

    def create(self, method: str, upload: Upload, client: str) -> Created:
        """Store an upload as a new queued task; the checks run in the original
        retrace server's order (503, 405, 415, 411, 413, 507, then 403 and 400), after
        the per-client limit (429), and end with the crash's own check."""
        try:
            retry_after = self._creates.retry_after(client)
            if retry_after is not None:
                creates = self._creates
                raise TooManyCreates(creates.allowed, creates.window, max(1.0, retry_after))
            self._creates.record(client)
            if self._uploading.full(client):
                raise TooManyUploads(self._uploading.allowed)
            capacity = self.capacity()
            if capacity.running_tasks >= capacity.max_running_tasks:
                raise ServerBusy(capacity.running_tasks, capacity.max_running_tasks)
            if method != "POST":
                raise MethodNotAllowed(method, ("POST",))
            # On the event loop, like put: redis-py's sockets are gevent's there, and
            # its pooled connections must stay on one thread's hub.
            self._queue.check()
            found: list[tuple[str, str]] = []  # the core's arch and release, from the check
            with self._uploading.hold(client):
                received = self._spool.receive(
                    upload, lambda problem_dir: found.append(self._check_crash(problem_dir))
                )
        except ServerError as error:
            self._metrics.refused(status_of(error))
            raise
        password = new_password()
        arch, release = found[0] if found else (None, None)
        try:
            task_id = self._store_and_admit(
                received.token, digest(password), received.core_sha256, arch, release
            )
        except BaseException:
            self._spool.discard(received.token)
            raise
        try:
            self._queue.put(task_id, arch)
        except QueueUnavailable as error:
            # The task is stored, so it is accepted: the workers' housekeeping queues it
            # once the queue is back (it went down since the check above).
            log.warning("task %s stored but not queued yet: %s", task_id, error.detail)
        self._metrics.accepted(received.packed_bytes)
        log.info(
            "task %s created: %d bytes packed, %d unpacked",
            task_id,
            received.packed_bytes,
            received.unpacked_bytes,
        )
        return Created(task_id, password)

    def _check_crash(self, problem_dir: Path) -> tuple[str, str]:
        """The analyzer's own check, before a task exists (runs in the upload's thread);
        returns the core's architecture and the release it belongs to."""
        try:
            problem = read_problem(problem_dir, self._config.releases)
            return problem.arch, problem.release.id
        except (BuilderError, SyncError) as error:
            raise CrashRejected(error.reason) from error

    def _store_and_admit(
        self,
        token: str,
        password_hash: str,
        core_sha256: str | None,
        arch: str | None,
        release: str | None,
    ) -> str:
        """Write the task's row (reserved), then move its folder in: a folder in the
        spool always has a row, so housekeeping never takes it for an orphan."""
        while True:
            task_id = new_task_id()
            if not self._store.insert(
                task_id,
                password_hash,
                reserve_seconds=ADMIT_SECONDS,
                core_sha256=core_sha256,
                arch=arch,
                release=release,
            ):
                continue
            try:
                admitted = self._spool.admit(token, task_id)
            except BaseException:
                self._store.forget(task_id)
                raise
            if admitted:
                self._store.admitted(task_id)
                return task_id
            self._store.forget(task_id)  # a folder of that name exists: take another id

    def authenticate(self, task_id: str, password: str | None, client: str) -> Access:
        return self.gatekeeper.check(task_id, password, client)

    def status(self, task: Task) -> Status:
        position = self._store.queue_position(task.id)
        current = task.stage
        if task.state is TaskState.QUEUED and task.arch and task.arch not in self.live_arches():
            current = Stage.WAITING_FOR_ARCH  # it waits, it does not fail
        stage = current.message(task.arch)
        if position is not None:
            stage = f"{stage} (position {position})"
        if self._settings.protocol_profile == "seed":
            body = task.state.wire
        else:
            body = FINISHED_MESSAGES.get(task.state, stage)
        return Status(task.state.wire, body, stage, position)

    def document(self, task: Task, name: str) -> str:
        """The text of ``backtrace``, ``backtrace.json`` or ``log``.

        Raises:
            ResultNotReady: the task has not finished, failed, or has no such file.
        """
        needed = DOCUMENTS[name]
        if not task.state.finished:
            raise ResultNotReady(task.id, name, "the task has not finished yet")
        if needed is not None and task.state is not needed:
            raise ResultNotReady(
                task.id, name, f"the retrace failed ({(task.reason or '').rstrip('.')})"
            )
        text = self._spool.read(task.id, name)
        if text is None:
            raise ResultNotReady(task.id, name, "the retrace did not produce it")
        return text

    def live_log(self, task: Task) -> str:
        """The log so far, also while the task runs (empty before a worker starts it)."""
        return self._spool.read(task.id, "log") or ""

    def workers_alive(self) -> int:
        """Worker processes with a recent heartbeat (the figure /metrics and /health use)."""
        return self._metrics.workers_alive()

    def live_arches(self) -> dict[str, int]:
        """Live workers per architecture they serve."""
        return self._metrics.workers_by_arch()

    def live_releases(self) -> dict[str, int]:
        """Live workers per release whose repositories they hold."""
        return self._metrics.workers_by_release()

    def statistics(self) -> Statistics:
        """The operator's figures, from the store (the same /metrics exports)."""
        return self._store.statistics()

    def exploitable(self, task: Task) -> str:
        """The two-line rating; NoExploitableInfo (404, "no info" to ABRT clients) when
        the task has not finished well or was retraced before ratings existed."""
        text = self._spool.read(task.id, "exploitable") if task.state.finished else None
        if task.state is not TaskState.FINISHED_SUCCESS or text is None:
            raise NoExploitableInfo(task.id)
        return text
