"""``retracer worker``: take task ids from the queue and retrace them.

Each worker process keeps one Analyzer (it holds repository metadata in memory), one
TaskStore connection and one Spool, made on its first task. While a task runs, a
:class:`TaskGuard` thread renews its lease and watches its deadline; when the deadline
passes, the lease is lost (another worker took the task) or cannot be renewed, the
retrace is stopped (see TaskGuard). If the process dies, a new worker process (or
housekeeping, once the lease runs out) queues the task again. The outcome is written
to the task folder before the task is marked finished, so a task interrupted after
its retrace is finished from that file instead of being retraced again. Every failure
on the way (the folder gone, a full disk, a SQLite error) still finishes the task as
failed with a reason.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from retracer.builder.errors import BuilderError
from retracer.builder.model import Stage
from retracer.builder.retrace import Analyzer
from retracer.server.config import Config, ServerSettings
from retracer.server.errors import QueueUnavailable, ServerError, StoreUnavailable
from retracer.server.expiry import expire
from retracer.server.jobs import JobQueue, requeue_lost
from retracer.server.lifetime import exit_with_parent, forks_exit_with_parent, new_owner
from retracer.server.remote import FrontEnd, FrontEndUnreachable, ProblemGone, TaskTakenOver
from retracer.server.spool import Spool
from retracer.server.tasks import Task, TaskStore, open_store
from retracer.sync.errors import SyncError
from retracer.sync.model import Release

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal error"
# A task whose worker died this many times is failed instead of run again.
MAX_ATTEMPTS = 3
# A worker that passes on a task of a release it does not hold pauses this long.
PASS_ON_PAUSE_SECONDS = 5.0
# A claim that meets a store error is retried this often (waiting 1, 2, 4... s).
CLAIM_ATTEMPTS = 5
# Recording an outcome is retried this often (waiting 1, 2, 4... s) before the task is
# left to its lease.
FINISH_ATTEMPTS = 4
FOLDER_GONE = "The task's files were removed from the spool before the retrace could read them."
OUTCOME = "outcome.json"
BACKTRACE = "backtrace"
REPORT = "backtrace.json"
CORE_BACKTRACE = "core_backtrace"
EXPLOITABLE = "exploitable"
LOG = "log"
# What a successful retrace leaves, and an identical core's task copies.
RESULT_FILES = (BACKTRACE, REPORT, CORE_BACKTRACE, EXPLOITABLE)


def run(config: Config, parent_pid: int | None = None) -> None:
    """Recover what a previous run left behind, then consume the queue until stopped.

    With ``parent_pid`` (``retracer serve`` starting its worker), this process and its
    worker processes die with that parent.
    """
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    arches = config.worker.served_arches()
    queue = JobQueue(config.queue, config.data_dir, arches)
    store = open_store(config.store, config.data_dir)
    requeue_lost(store, queue)
    store.close()
    worker = Worker(config)
    forks_exit_with_parent()  # huey's processes die with this one
    log.info("serving the queues of %s", ", ".join(arches))
    with Heartbeat(config, arches):
        try:
            queue.consume(
                worker.retrace,
                worker.housekeeping,
                workers=config.server.workers,
                on_worker_start=worker.recover,
            )
        finally:
            worker.close()


class Heartbeat:
    """Tells the store, from a thread, that this consumer is alive and what it serves
    (see /health, /settings and /metrics): its architectures, and the releases whose
    repositories it holds."""

    def __init__(self, config: Config, arches: tuple[str, ...]) -> None:
        self._config = config
        self._arches = arches
        self._releases = held_releases(config)
        self._seconds = config.server.worker_heartbeat_seconds
        # Held around every store call of the thread, and by a fork: huey forks its
        # worker processes while this thread runs, and the child of a process whose
        # SQLite connection held a lock at that moment finds the file locked forever.
        self._calls = threading.Lock()
        self._name = new_owner()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> None:
        os.register_at_fork(
            before=self._calls.acquire,
            after_in_parent=self._calls.release,
            after_in_child=self._calls.release,
        )
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        store: TaskStore | None = None
        try:
            while True:
                try:
                    with self._calls:
                        if store is None:
                            store = open_store(
                                self._config.store, self._config.data_dir, self._seconds
                            )
                        store.beat(self._name, arches=self._arches, releases=self._releases)
                except StoreUnavailable as error:
                    log.warning("heartbeat not recorded: %s", error.detail)
                if self._stop.wait(self._seconds):
                    break
            if store is not None:
                with self._calls:
                    store.stop_beating(self._name)
        except StoreUnavailable:
            pass  # the heartbeat ages out on its own
        finally:
            if store is not None:
                with self._calls:
                    store.close()


def held_releases(config: Config) -> tuple[str, ...]:
    """Releases whose every repository is on this host: the only ones it retraces."""
    return tuple(
        release.id
        for release in config.releases
        if all(Path(repository).is_dir() for repository in release.repositories)
    )


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
        # A remote worker's way to the front end's files (None: the spool is here).
        self._front_end: FrontEnd | None = None
        self._held: tuple[str, ...] | None = None
        self.pass_on_pause = PASS_ON_PAUSE_SECONDS

    def retrace(self, task_id: str) -> None:
        """Retrace one task, unless it finished already or another worker holds it."""
        store, spool = self._open()
        settings = self._config.server
        owner = new_owner()
        if not self._holds_release(store, task_id):
            return
        task = self._claim(store, task_id, owner)
        if task is None:
            return
        guard = TaskGuard(store, task_id, owner, settings)
        with guard:
            try:
                outcome = self._saved_outcome(spool, task_id)
                fresh = outcome is None
                if outcome is None:
                    outcome = self._attempt(store, spool, task_id, owner, task.attempts)
            except TaskAborted as aborted:
                outcome, fresh = Outcome(False, aborted.reason), True
            except FrontEndUnreachable as error:
                # Not the task's fault: give it back at once for another attempt.
                log.warning("task %s: the front end failed, released: %s", task_id, error.detail)
                self._try(task_id, "release the task", store.release, task_id, owner)
                return
        if guard.lease_lost:
            log.warning("task %s: %s", task_id, guard.reason)
            return
        if fresh:
            if not outcome.success:
                self._try(task_id, "log", spool.append_log, task_id,
                          f"Retrace failed: {outcome.reason}")  # fmt: skip
            self._try(task_id, "save the outcome", spool.write_result, task_id, OUTCOME,
                      json.dumps(outcome.__dict__))  # fmt: skip
        self._finish(store, spool, task_id, owner, outcome)
        log.info("task %s finished: %s", task_id, outcome.reason or "success")

    def _holds_release(self, store: TaskStore, task_id: str) -> bool:
        """Whether this host should take the task: it holds the repositories of the
        task's release, or no live worker does (then the retrace fails with the
        analyzer's reason, as on one host). Otherwise the task goes back to its queue
        for a host that holds them, after a pause that keeps this one from taking it
        again at once."""
        try:
            task = store.get(task_id)
            if task.release is None or task.release in self._held_releases():
                return True
            since = time.time() - 3 * self._config.server.worker_heartbeat_seconds
            holders = [w for w in store.live_workers(since) if task.release in w.releases]
        except ServerError:
            return True  # unknown or unreadable: the claim decides
        if not holders:
            return True
        log.info("task %s: release %s is not held here; passed on", task_id, task.release)
        try:
            JobQueue(self._config.queue, self._config.data_dir).put(task_id, task.arch)
        except QueueUnavailable as error:
            log.warning("task %s not passed on: %s", task_id, error.detail)
        time.sleep(self.pass_on_pause)
        return False

    def _held_releases(self) -> tuple[str, ...]:
        if self._held is None:
            self._held = held_releases(self._config)
        return self._held

    def _claim(self, store: TaskStore, task_id: str, owner: str) -> Task | None:
        """Claim the task, waiting out a short store outage (a database restart); None
        if it is not claimable or the store stayed away (housekeeping queues it again)."""
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                task = store.claim(task_id, self._config.server.task_lease_seconds, owner=owner)
            except StoreUnavailable as error:
                log.warning("task %s not claimed, the store failed: %s", task_id, error.detail)
                time.sleep(2**attempt)
                continue
            if task is None:
                log.info("task %s is finished or held by another worker; skipped", task_id)
            return task
        return None

    def recover(self) -> None:
        """Queue again what dead workers left (a new worker process's first step)."""
        store, _ = self._open()
        try:
            requeue_lost(store, JobQueue(self._config.queue, self._config.data_dir))
        except (StoreUnavailable, QueueUnavailable) as error:
            log.warning("could not requeue lost tasks: %s", error.detail)

    def _attempt(
        self, store: TaskStore, spool: Spool, task_id: str, owner: str, attempts: int
    ) -> Outcome:
        """Run the analyzer, unless this task wore out its attempts or lost its files."""
        if attempts > MAX_ATTEMPTS:
            return Outcome(False, f"the retrace was interrupted {MAX_ATTEMPTS} times")
        if self._front_end is not None:
            try:
                self._front_end.fetch(task_id, spool.problem_dir(task_id))
            except ProblemGone:
                return Outcome(False, FOLDER_GONE)
        if not spool.problem_dir(task_id).is_dir():
            return Outcome(False, FOLDER_GONE)
        return self._reuse_or_retrace(store, spool, task_id, owner)

    def _finish(
        self, store: TaskStore, spool: Spool, task_id: str, owner: str, outcome: Outcome
    ) -> None:
        """Seal the folder and record the outcome; file errors do not stop the record,
        and a store error is retried, then left to the lease (the task is run again)."""
        self._try(task_id, "set the stage", store.set_stage, task_id, Stage.FINISHING)
        if self._front_end is not None:
            self._deliver(self._front_end, spool, task_id, owner, outcome)
            return
        if not self._config.server.keep_core:
            self._try(task_id, "remove the core", spool.remove_core, task_id)
        self._try(task_id, "seal the folder", spool.seal, task_id)
        for attempt in range(FINISH_ATTEMPTS):
            try:
                store.finish(task_id, outcome.success, outcome.reason, owner=owner)
                return
            except StoreUnavailable as error:
                log.warning("task %s: recording the outcome failed: %s", task_id, error.detail)
                time.sleep(2**attempt)
        log.error("task %s: the outcome could not be recorded; it will run again", task_id)

    @staticmethod
    def _deliver(
        front_end: FrontEnd, spool: Spool, task_id: str, owner: str, outcome: Outcome
    ) -> None:
        """Hand the results, the log and the outcome to the front end, which seals and
        records the task; retried, then left to the lease (the task is run again)."""
        for attempt in range(FINISH_ATTEMPTS):
            try:
                for name in (*RESULT_FILES, LOG):
                    text = spool.read(task_id, name)
                    if text is not None:
                        front_end.put_result(task_id, owner, name, text.encode())
                front_end.finish(task_id, owner, outcome.success, outcome.reason)
            except TaskTakenOver:
                log.warning("task %s: another worker took it over meanwhile", task_id)
            except FrontEndUnreachable as error:
                log.warning("task %s: handing back the results failed: %s", task_id, error.detail)
                time.sleep(2**attempt)
                continue
            spool.remove(task_id)  # this host's copy is no longer needed
            return
        log.error("task %s: the results could not be handed back; it will run again", task_id)

    @staticmethod
    def _try(task_id: str, what: str, action: Callable[..., object], *args: object) -> bool:
        """Run one step of finishing; a failing file or store step is logged, not raised."""
        try:
            action(*args)
        except (OSError, ServerError) as error:
            log.warning("task %s: could not %s: %s", task_id, what, _describe(error))
            return False
        return True

    def housekeeping(self, now: float | None = None) -> None:
        """Requeue lost tasks, expire old ones, sweep abandoned uploads, and remove what
        dead workers left in podman (every minute). ``now`` is injectable for tests."""
        store, spool = self._open()
        requeue_lost(store, JobQueue(self._config.queue, self._config.data_dir))
        if self._front_end is None:
            expire(store, spool, self._config.server, now)
        try:
            self._get_analyzer().clean_up()
        except BuilderError as error:
            log.warning("could not clean up after dead workers: %s", error.reason)

    def _reuse_or_retrace(
        self, store: TaskStore, spool: Spool, task_id: str, owner: str
    ) -> Outcome:
        """Copy the result of an identical core retraced against the same repository
        metadata, if a finished task holds one; otherwise retrace."""
        core_sha256 = store.core_sha256(task_id)
        key = self._get_analyzer().result_key(spool.problem_dir(task_id)) if core_sha256 else None
        source = store.find_result(core_sha256, key, task_id) if core_sha256 and key else None
        if source is not None and self._copied(spool, source, task_id):
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
        outcome = self._run_analyzer(store, spool, task_id, owner)
        if outcome.success and key:
            store.set_result_key(task_id, key)
        return outcome

    @staticmethod
    def _copied(spool: Spool, source: str, task_id: str) -> bool:
        """Whether the results of ``source`` were copied; a failure means a real retrace."""
        try:
            return _copy_results(spool, source, task_id)
        except (OSError, ServerError) as error:
            log.warning("task %s: could not reuse task %s: %s", task_id, source, _describe(error))
            return False

    def _run_analyzer(self, store: TaskStore, spool: Spool, task_id: str, owner: str) -> Outcome:
        observer = TaskObserver(store, spool, task_id, self._front_end, owner)
        try:
            result = self._get_analyzer().retrace(spool.problem_dir(task_id), observer)
        except (BuilderError, SyncError) as error:
            return Outcome(False, error.reason)
        except Exception:  # the one place: anything else is a bug, not the user's problem
            log.exception("task %s: internal error in the analyzer", task_id)
            return Outcome(False, INTERNAL_ERROR)
        self._try(
            task_id,
            "record the retrace's figures",
            store.record_retrace,
            task_id,
            result.release_id,
            Release.parse(result.release_id).arch,
            result.environment_cached,
            tuple((step.name, step.seconds) for step in result.steps),
        )
        usage = self._get_analyzer().environment_cache()
        self._try(
            task_id,
            "record the cache size",
            store.record_environment_cache,
            usage.packages,
            usage.bytes,
        )
        try:
            spool.write_result(task_id, BACKTRACE, result.backtrace)
            spool.write_result(task_id, REPORT, json.dumps(result.report.to_json()))
            spool.write_result(task_id, CORE_BACKTRACE, json.dumps(result.report.core_backtrace()))
            spool.write_result(task_id, EXPLOITABLE, result.report.exploitable_text())
            spool.append_log(task_id, "Retrace finished successfully")
        except (OSError, ServerError) as error:
            why = _describe(error)
            return Outcome(False, f"The results could not be saved: {why}.")
        return Outcome(True, None)

    def _saved_outcome(self, spool: Spool, task_id: str) -> Outcome | None:
        try:
            text = spool.read(task_id, OUTCOME)
            if text is None:
                return None
            saved = json.loads(text)
            return Outcome(bool(saved["success"]), saved["reason"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("task %s: saved outcome unreadable, retracing: %s", task_id, error)
            return None

    def _open(self) -> tuple[TaskStore, Spool]:
        """This process's store and spool (huey forks workers, so never the parent's)."""
        if self._pid != os.getpid() or self._store is None or self._spool is None:
            self._pid = os.getpid()
            self._store = open_store(self._config.store, self._config.data_dir)
            self._spool = Spool.in_data_dir(self._config.data_dir, self._config.server)
            self._analyzer = None
            remote = self._config.worker
            if remote.front_end and remote.token:
                self._front_end = FrontEnd(remote.front_end, remote.token)
        return self._store, self._spool

    def close(self) -> None:
        """Close this process's analyzer (its podman connections), if it made one."""
        if self._analyzer is not None and self._pid == os.getpid():
            self._analyzer.close()
            self._analyzer = None

    def _get_analyzer(self) -> Analyzer:
        if self._analyzer is None:
            config = self._config
            self._analyzer = Analyzer.in_data_dir(config.builder, config.releases, config.data_dir)
        return self._analyzer


def _copy_results(spool: Spool, source: str, task_id: str) -> bool:
    """Copy a finished task's result files; False if any is gone (the task expired)."""
    texts = {name: spool.read(source, name) for name in RESULT_FILES}
    if any(text is None for text in texts.values()):
        return False
    for name, text in texts.items():
        spool.write_result(task_id, name, text or "")
    return True


def _describe(error: BaseException) -> str:
    """A short description of a file, spool or store error, without a trailing period."""
    why = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
    return str(why).rstrip(".")


class TaskObserver:
    """Records the analyzer's progress on the task: stage in the store, lines in the log.

    A remote worker's log lives on its own host until the task ends; so at each new
    stage it also hands the log so far to the front end, whose clients read it there.
    """

    def __init__(
        self,
        store: TaskStore,
        spool: Spool,
        task_id: str,
        front_end: FrontEnd | None = None,
        owner: str = "",
    ) -> None:
        self._store = store
        self._spool = spool
        self._task_id = task_id
        self._front_end = front_end
        self._owner = owner

    def stage(self, stage: Stage) -> None:
        try:
            self._store.set_stage(self._task_id, stage)
        except StoreUnavailable as error:  # progress only; the outcome is what counts
            log.warning("task %s: stage not recorded: %s", self._task_id, error.detail)
        if self._front_end is not None:
            self._hand_over_log(self._front_end)

    def _hand_over_log(self, front_end: FrontEnd) -> None:
        text = self._spool.read(self._task_id, LOG) or ""
        try:
            front_end.put_result(self._task_id, self._owner, LOG, text.encode())
        except (FrontEndUnreachable, TaskTakenOver) as error:  # progress only, as above
            log.warning("task %s: log not handed over: %s", self._task_id, error)

    def log(self, line: str) -> None:
        self._spool.append_log(self._task_id, line)


class TaskAborted(BaseException):
    """Raised in the retracing thread when its task must stop; ``reason`` says why.

    A BaseException, so that no ``except Exception`` on the way swallows it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskGuard:
    """Keeps a running task's lease and enforces its deadline, from a thread with its
    own store connection.

    Each round (a third of the lease) renews the lease. The retrace must stop when the
    deadline has passed, when the lease was lost (it ran out and another worker took
    the task: this worker must not finish it), or when renewals kept failing until
    the lease is about to run out. Then TaskAborted is raised in the retracing thread
    by a signal, which also breaks a blocking wait (a lock, a socket read); the
    ``finally`` blocks on the way remove the containers. A retrace still running
    ``abort_grace_seconds`` later is stuck in C code: the guard records the failure
    itself (unless the lease was lost) and ends the process, and the queue's consumer
    starts a new one.

    ``clock`` (monotonic) and ``wall`` (epoch seconds) are injectable for tests.
    """

    SIGNAL = signal.SIGUSR1

    def __init__(
        self,
        store: TaskStore,
        task_id: str,
        owner: str,
        settings: ServerSettings,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._opened = store
        self._task_id = task_id
        self._owner = owner
        self._lease = settings.task_lease_seconds
        self._deadline_seconds = settings.task_deadline_seconds
        self._grace = settings.abort_grace_seconds
        self._clock = clock
        self._wall = wall
        self._deadline = clock() + self._deadline_seconds
        self._lease_until = wall() + self._lease
        self._store: TaskStore | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"guard-{task_id}", daemon=True)
        self._target: int | None = None
        self._previous_handler: object = None
        self.reason: str | None = None
        self.lease_lost = False

    @property
    def interval(self) -> float:
        return self._lease / 3

    def __enter__(self) -> TaskGuard:
        # Only the main thread can receive Python signal handlers; elsewhere (a test
        # calling from a thread) the grace period's backstop is the only stop.
        if threading.current_thread() is threading.main_thread():
            self._target = threading.get_ident()
            previous = signal.signal(self.SIGNAL, self._raise_in_retrace)
            self._previous_handler = signal.SIG_DFL if previous is None else previous
        else:
            self._target = None
        # Opened now, not on the first renewal: the host-side dnf bootstrap chroots this
        # whole process while rpm installs, and a path opened then is inside the new root.
        self._store = self._opened.reopen(busy_seconds=self.interval / 2)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._stop.set()
        self._thread.join()
        if self._target is not None:
            signal.signal(self.SIGNAL, self._previous_handler)  # type: ignore[arg-type]

    def check(self) -> str | None:
        """One round: renew the lease and judge; returns why the retrace must stop."""
        if self._clock() >= self._deadline:
            return f"The retrace ran past its deadline of {self._deadline_seconds:g} s."
        try:
            if self._store is None:
                # A renewal may wait for a busy database, but never past its round.
                self._store = self._opened.reopen(busy_seconds=self.interval / 2)
            renewed = self._store.renew(self._task_id, self._lease, self._owner, now=self._wall())
        except StoreUnavailable as error:
            if self._wall() + self.interval >= self._lease_until:
                return (
                    f"The task's lease could not be renewed ({error.detail}), so another"
                    " worker may take the task."
                )
            log.warning("task %s: lease not renewed, retrying: %s", self._task_id, error.detail)
            return None
        if not renewed:
            self.lease_lost = True
            return "the lease ran out and another worker took over the task"
        self._lease_until = self._wall() + self._lease
        return None

    def _watch(self) -> None:
        try:
            # Wake for each renewal, and at the deadline if that comes sooner.
            while not self._stop.wait(min(self.interval, self._until_deadline())):
                reason = self.check()
                if reason is not None:
                    self._abort(reason)
                    return
        finally:
            if self._store is not None:
                self._store.close()

    def _until_deadline(self) -> float:
        return max(0.0, self._deadline - self._clock())

    def _abort(self, reason: str) -> None:
        self.reason = reason
        log.warning("task %s: stopping the retrace: %s", self._task_id, reason)
        if self._target is not None:
            signal.pthread_kill(self._target, self.SIGNAL)
        if self._done.wait(self._grace):
            return
        log.error("task %s: the retrace did not stop; ending this worker process", self._task_id)
        if not self.lease_lost and self._store is not None:
            try:
                self._store.finish(self._task_id, False, reason, owner=self._owner)
            except StoreUnavailable as error:
                log.error("task %s: failure not recorded: %s", self._task_id, error.detail)
        os._exit(1)

    def _raise_in_retrace(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None and not self._done.is_set():
            raise TaskAborted(self.reason)
