"""``retracer worker``: take task ids from the queue and retrace them.

Each worker process keeps one Analyzer (it holds repository metadata in memory), one
TaskStore connection and one Spool, made on its first task. While a task runs, a
thread renews its lease; if the process dies, the lease runs out and housekeeping
queues the task again. The outcome is written to the task folder before the task is
marked finished, so a task interrupted after its retrace is finished from that file
instead of being retraced again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from retracer.builder.errors import BuilderError
from retracer.builder.model import Stage
from retracer.builder.retrace import Analyzer
from retracer.server.config import Config
from retracer.server.jobs import JobQueue, requeue_lost
from retracer.server.spool import Spool
from retracer.server.tasks import TaskStore
from retracer.sync.errors import SyncError
from retracer.sync.model import Release

log = logging.getLogger(__name__)

FINISHING = "Finishing task"
INTERNAL_ERROR = "internal error"
# A task whose worker died this many times is failed instead of run again.
MAX_ATTEMPTS = 3
OUTCOME = "outcome.json"
BACKTRACE = "backtrace"
REPORT = "backtrace.json"
CORE_BACKTRACE = "core_backtrace"
EXPLOITABLE = "exploitable"
# What a successful retrace leaves, and an identical core's task copies.
RESULT_FILES = (BACKTRACE, REPORT, CORE_BACKTRACE, EXPLOITABLE)


def run(config: Config) -> None:
    """Recover what a previous run left behind, then consume the queue until stopped."""
    queue = JobQueue(config.queue, config.data_dir)
    store = TaskStore.in_data_dir(config.data_dir)
    requeue_lost(store, queue)
    store.close()
    worker = Worker(config)
    queue.consume(worker.retrace, worker.housekeeping, workers=config.server.workers)


@dataclass(frozen=True)
class Outcome:
    success: bool
    reason: str | None


class Worker:
    """Runs retraces in the current process; safe to hand to forked children."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._pid: int | None = None
        self._store: TaskStore | None = None
        self._spool: Spool | None = None
        self._analyzer: Analyzer | None = None

    def retrace(self, task_id: str) -> None:
        """Retrace one task, unless it finished already or another worker holds it."""
        store, spool = self._open()
        settings = self._config.server
        task = store.claim(task_id, settings.task_lease_seconds)
        if task is None:
            log.info("task %s is finished or held by another worker; skipped", task_id)
            return
        with _Lease(store.path, task_id, settings.task_lease_seconds):
            outcome = self._saved_outcome(spool, task_id)
            if outcome is None:
                if task.attempts > MAX_ATTEMPTS:
                    reason = f"the retrace was interrupted {MAX_ATTEMPTS} times"
                    outcome = Outcome(False, reason)
                else:
                    outcome = self._reuse_or_retrace(store, spool, task_id)
                spool.write_result(task_id, OUTCOME, json.dumps(outcome.__dict__))
            store.set_stage(task_id, FINISHING)
            if not settings.keep_core:
                spool.remove_core(task_id)
            spool.seal(task_id)
            store.finish(task_id, outcome.success, outcome.reason, FINISHING)
        log.info("task %s finished: %s", task_id, outcome.reason or "success")

    def housekeeping(self) -> None:
        """Requeue lost tasks, expire old ones, sweep abandoned uploads, and remove what
        dead workers left in podman (every minute)."""
        store, spool = self._open()
        requeue_lost(store, JobQueue(self._config.queue, self._config.data_dir))
        settings = self._config.server
        now = time.time()
        for task_id in store.expired(
            finished_before=now - settings.finished_task_max_age_hours * 3600,
            created_before=now - settings.unfinished_task_max_age_hours * 3600,
        ):
            store.delete(task_id)
            spool.remove(task_id)
            log.info("task %s expired", task_id)
        known = store.ids()
        for task_id in spool.task_ids() - known:
            spool.remove(task_id)  # admitted, but the server died before storing it
        spool.sweep_incoming(older_than_seconds=3600)
        try:
            self._get_analyzer().clean_up()
        except BuilderError as error:
            log.warning("could not clean up after dead workers: %s", error.reason)

    def _reuse_or_retrace(self, store: TaskStore, spool: Spool, task_id: str) -> Outcome:
        """Copy the result of an identical core retraced against the same repository
        metadata, if a finished task holds one; otherwise retrace."""
        core_sha256 = store.core_sha256(task_id)
        key = self._get_analyzer().result_key(spool.problem_dir(task_id)) if core_sha256 else None
        source = store.find_result(core_sha256, key, task_id) if core_sha256 and key else None
        if source is not None and _copy_results(spool, source, task_id):
            spool.append_log(
                task_id,
                "Result reused: an identical core was retraced against the same repository"
                f" metadata ({key}); nothing was run again",
            )
            spool.append_log(task_id, "Retrace finished successfully")
            store.count_reuse()
            store.set_result_key(task_id, key or "")
            log.info("task %s reused the result of task %s", task_id, source)
            return Outcome(True, None)
        outcome = self._run_analyzer(store, spool, task_id)
        if outcome.success and key:
            store.set_result_key(task_id, key)
        return outcome

    def _run_analyzer(self, store: TaskStore, spool: Spool, task_id: str) -> Outcome:
        observer = _TaskObserver(store, spool, task_id)
        try:
            result = self._get_analyzer().retrace(spool.problem_dir(task_id), observer)
        except (BuilderError, SyncError) as error:
            spool.append_log(task_id, f"Retrace failed: {error.reason}")
            return Outcome(False, error.reason)
        except Exception:  # the one place: anything else is a bug, not the user's problem
            log.exception("task %s: internal error in the analyzer", task_id)
            spool.append_log(task_id, f"Retrace failed: {INTERNAL_ERROR}")
            return Outcome(False, INTERNAL_ERROR)
        store.record_retrace(
            task_id,
            result.release_id,
            Release.parse(result.release_id).arch,
            result.environment_cached,
            tuple((step.name, step.seconds) for step in result.steps),
        )
        usage = self._get_analyzer().environment_cache()
        store.record_environment_cache(usage.images, usage.bytes)
        spool.write_result(task_id, BACKTRACE, result.backtrace)
        spool.write_result(task_id, REPORT, json.dumps(result.report.to_json()))
        spool.write_result(task_id, CORE_BACKTRACE, json.dumps(result.report.core_backtrace()))
        spool.write_result(task_id, EXPLOITABLE, result.report.exploitable_text())
        spool.append_log(task_id, "Retrace finished successfully")
        return Outcome(True, None)

    def _saved_outcome(self, spool: Spool, task_id: str) -> Outcome | None:
        text = spool.read(task_id, OUTCOME)
        if text is None:
            return None
        saved = json.loads(text)
        return Outcome(bool(saved["success"]), saved["reason"])

    def _open(self) -> tuple[TaskStore, Spool]:
        """This process's store and spool (huey forks workers, so never the parent's)."""
        if self._pid != os.getpid() or self._store is None or self._spool is None:
            self._pid = os.getpid()
            self._store = TaskStore.in_data_dir(self._config.data_dir)
            self._spool = Spool.in_data_dir(self._config.data_dir, self._config.server)
            self._analyzer = None
        return self._store, self._spool

    def _get_analyzer(self) -> Analyzer:
        if self._analyzer is None:
            config = self._config
            self._analyzer = Analyzer(
                settings=config.builder,
                releases=config.releases,
                state_dir=config.data_dir / "builder",
            )
        return self._analyzer


def _copy_results(spool: Spool, source: str, task_id: str) -> bool:
    """Copy a finished task's result files; False if any is gone (the task expired)."""
    texts = {name: spool.read(source, name) for name in RESULT_FILES}
    if any(text is None for text in texts.values()):
        return False
    for name, text in texts.items():
        spool.write_result(task_id, name, text or "")
    return True


class _TaskObserver:
    """Records the analyzer's progress on the task: stage in the store, lines in the log."""

    def __init__(self, store: TaskStore, spool: Spool, task_id: str) -> None:
        self._store = store
        self._spool = spool
        self._task_id = task_id

    def stage(self, stage: Stage) -> None:
        self._store.set_stage(self._task_id, stage.value)

    def log(self, line: str) -> None:
        self._spool.append_log(self._task_id, line)


class _Lease:
    """Renews a task's lease from a thread (with its own connection) while the task runs."""

    def __init__(self, store_path: Path, task_id: str, seconds: float) -> None:
        self._store_path = store_path
        self._task_id = task_id
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{task_id}", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        store = TaskStore(self._store_path)
        try:
            while not self._stop.wait(self._seconds / 3):
                store.renew(self._task_id, self._seconds)
        finally:
            store.close()
