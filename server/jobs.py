"""The queue of task ids waiting for a retrace, behind a small interface over huey.

The HTTP process calls :meth:`JobQueue.put`; ``retracer worker`` calls
:meth:`JobQueue.consume`, which runs huey's consumer with a bounded number of worker
processes plus a periodic housekeeping job. The queue holds only task ids: the task
itself lives in the TaskStore, so a lost message costs nothing that
:func:`requeue_lost` cannot restore.

Backends: ``sqlite`` (SqliteHuey, ``<data_dir>/queue.db``) or ``redis`` (RedisHuey).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from huey import Huey, RedisHuey, SqliteHuey, crontab

from retracer.server.config import QueueSettings
from retracer.server.lifetime import owner_is_dead
from retracer.server.tasks import TaskStore

log = logging.getLogger(__name__)

QUEUE_NAME = "retracer"
# How often the consumer checks its worker processes (a check is cheap).
WORKER_CHECK_SECONDS = 2.0


class JobQueue:
    """Task ids in, task ids out to a handler; FIFO, at most ``workers`` at a time."""

    def __init__(self, settings: QueueSettings, data_dir: Path) -> None:
        self._huey = _make_huey(settings, data_dir)
        self._handler: Callable[[str], None] | None = None
        self._retrace = self._huey.task(name="retrace")(self._dispatch)

    def put(self, task_id: str) -> None:
        self._retrace(task_id)

    def waiting(self) -> set[str]:
        """Ids whose message is still in the queue (not yet taken by a worker)."""
        # Raw messages, not huey.pending(): that one needs every task name registered
        # here and logs a traceback for the housekeeping messages this queue lacks.
        messages = (
            self._huey.serializer.deserialize(data) for data in self._huey.storage.enqueued_items()
        )
        return {str(m.args[0]) for m in messages if m.name.endswith(".retrace") and m.args}

    def __len__(self) -> int:
        return int(self._huey.pending_count())

    def consume(
        self,
        handler: Callable[[str], None],
        housekeeping: Callable[[], None],
        workers: int,
        on_worker_start: Callable[[], None] | None = None,
    ) -> None:
        """Run ``handler(task_id)`` for each message in ``workers`` processes, and
        ``housekeeping()`` every minute, until SIGINT (graceful) or SIGTERM.

        A worker process that dies is replaced within WORKER_CHECK_SECONDS; each new
        one first calls ``on_worker_start()``.
        """
        self._handler = handler
        self._huey.periodic_task(crontab(minute="*"), name="housekeeping")(housekeeping)
        if on_worker_start is not None:
            self._huey.on_startup(name="retracer")(on_worker_start)
        consumer = self._huey.create_consumer(
            workers=workers,
            worker_type="process",
            periodic=True,
            check_worker_health=True,
            health_check_interval=WORKER_CHECK_SECONDS,
        )
        consumer.run()

    def _dispatch(self, task_id: str) -> None:
        if self._handler is None:
            raise RuntimeError("this JobQueue is not consuming")
        self._handler(task_id)


def requeue_lost(store: TaskStore, queue: JobQueue) -> list[str]:
    """Queue again every task a dead worker or a lost message left behind.

    A RUNNING task whose lease ran out, or whose owner was a process of this host that
    is gone, goes back to QUEUED; a QUEUED task with no message in the queue gets one.
    Running a task twice is harmless: claiming it is atomic and a finished task is
    skipped.
    """
    released = store.release_expired()
    for task_id, owner in store.running_owners().items():
        if owner is not None and owner_is_dead(owner) and store.release(task_id, owner):
            released.append(task_id)
    waiting = queue.waiting()
    lost = [task_id for task_id in store.queued_ids() if task_id not in waiting]
    for task_id in lost:
        queue.put(task_id)
    if released or lost:
        log.warning("requeued %d tasks (%d with an expired lease)", len(lost), len(released))
    return lost


def _make_huey(settings: QueueSettings, data_dir: Path) -> Huey:
    if settings.backend == "redis":
        return RedisHuey(QUEUE_NAME, url=settings.redis_url, results=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(QUEUE_NAME, filename=str(data_dir / "queue.db"), results=False, fsync=True)
