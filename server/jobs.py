"""The queues of task ids waiting for a retrace, one per architecture, over huey.

The HTTP process calls :meth:`JobQueue.put` with the core's architecture; a task goes
to that architecture's queue (``retracer.<arch>``). ``retracer worker`` calls
:meth:`JobQueue.consume`, which runs huey's consumer with a bounded number of worker
processes, taking messages from the queues of the architectures it serves (taking
turns, so none starves) plus its own host's queue, where its periodic housekeeping
goes. The queues hold only task ids: the task itself lives in the TaskStore, so a
lost message costs nothing that :func:`requeue_lost` cannot restore.

Backends: ``sqlite`` (``<data_dir>/queue.db``, one host) or ``redis`` (several hosts).
A failing backend raises QueueUnavailable from :meth:`put`; huey's consumer retries
its reads by itself, and redis-py reconnects after a Redis restart.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from huey import Huey, crontab
from huey.storage import RedisStorage, SqliteStorage

from retracer.server.config import QueueSettings
from retracer.server.errors import QueueUnavailable
from retracer.server.lifetime import owner_is_dead
from retracer.server.tasks import TaskStore

log = logging.getLogger(__name__)

QUEUE_PREFIX = "retracer"
# Tasks whose core's architecture is not known (a store of an earlier release).
UNKNOWN_ARCH = "any"
# How often the consumer checks its worker processes (a check is cheap).
WORKER_CHECK_SECONDS = 2.0


def queue_name(arch: str | None) -> str:
    return f"{QUEUE_PREFIX}.{arch or UNKNOWN_ARCH}"


class JobQueue:
    """Task ids in, task ids out to a handler; FIFO per architecture, at most
    ``workers`` at a time. ``arches`` are those this process consumes (none: it only
    puts)."""

    def __init__(self, settings: QueueSettings, data_dir: Path, arches: Iterable[str] = ()) -> None:
        self._settings = settings
        self._data_dir = data_dir
        self.arches = tuple(arches)
        self._producers: dict[str, tuple[Huey, Any]] = {}
        own = f"{QUEUE_PREFIX}.host.{socket.gethostname()}"
        sources = [queue_name(arch) for arch in self.arches]
        if self.arches:
            sources.append(queue_name(None))  # tasks stored before queues had an arch
        self._huey = _make_huey(settings, data_dir, own, sources)
        self._handler: Callable[[str], None] | None = None
        self._retrace = self._huey.task(name="retrace")(self._dispatch)

    def put(self, task_id: str, arch: str | None = None) -> None:
        """Raises QueueUnavailable when the backend cannot take the message."""
        _, retrace = self._producer(arch)
        try:
            retrace(task_id)
        except Exception as error:  # redis-py and sqlite3 errors alike
            raise QueueUnavailable(str(error)) from error

    def check(self) -> None:
        """Raises QueueUnavailable unless the backend answers (Redis: a PING)."""
        huey, _ = self._producer(None)
        try:
            if isinstance(huey.storage, RedisStorage):
                huey.storage.conn.ping()
        except Exception as error:  # redis-py's connection errors
            raise QueueUnavailable(str(error)) from error

    def waiting(self, arches: Iterable[str | None]) -> set[str]:
        """Ids whose message is still in one of these queues (not yet taken)."""
        found: set[str] = set()
        for arch in set(arches):
            huey, _ = self._producer(arch)
            # Raw messages, not huey.pending(): that one needs every task name registered
            # here and logs a traceback for the housekeeping messages this queue lacks.
            messages = (huey.serializer.deserialize(data) for data in huey.storage.enqueued_items())
            found.update(str(m.args[0]) for m in messages if m.name.endswith(".retrace") and m.args)
        return found

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

    def _producer(self, arch: str | None) -> tuple[Huey, Any]:
        """The huey of one architecture's queue, and its retrace task."""
        name = queue_name(arch)
        if name not in self._producers:
            huey = _make_huey(self._settings, self._data_dir, name, [])
            self._producers[name] = (huey, huey.task(name="retrace")(self._dispatch))
        return self._producers[name]

    def _dispatch(self, task_id: str) -> None:
        if self._handler is None:
            raise RuntimeError("this JobQueue is not consuming")
        self._handler(task_id)


def requeue_lost(store: TaskStore, queue: JobQueue) -> list[str]:
    """Queue again every task a dead worker or a lost message left behind.

    A RUNNING task whose lease ran out, or whose owner was a process of this host that
    is gone, goes back to QUEUED; a QUEUED task with no message in its queue gets one.
    Running a task twice is harmless: claiming it is atomic and a finished task is
    skipped.
    """
    released = store.release_expired()
    for task_id, owner in store.running_owners().items():
        if owner is not None and owner_is_dead(owner) and store.release(task_id, owner):
            released.append(task_id)
    queued = store.queued()
    waiting = queue.waiting(arch for _, arch in queued)
    lost = [(task_id, arch) for task_id, arch in queued if task_id not in waiting]
    for task_id, arch in lost:
        queue.put(task_id, arch)
    if released or lost:
        log.warning("requeued %d tasks (%d with an expired lease)", len(lost), len(released))
    return [task_id for task_id, _ in lost]


class _RedisQueues(RedisStorage):
    """Redis storage whose dequeue also takes from other queues (BRPOP on several lists,
    their order turning each time so that a busy queue starves none)."""

    def __init__(self, name: str, sources: list[str], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._sources = [f"huey.redis.{source}" for source in sources]
        self._turn = itertools.count()

    def dequeue(self) -> Any:
        if not self._sources:
            return super().dequeue()
        shift = next(self._turn) % len(self._sources)
        keys = [self.queue_key, *self._sources[shift:], *self._sources[:shift]]
        try:
            return self.conn.brpop(keys, timeout=self.read_timeout)[1]
        except (TimeoutError, TypeError, IndexError):
            return None  # empty or timed out; a ConnectionError propagates for backoff


class _SqliteQueues(SqliteStorage):
    """SQLite storage whose dequeue also takes from other queues, taking turns."""

    def __init__(self, name: str, sources: list[str], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._sources = sources
        self._turn = itertools.count()

    def dequeue(self) -> Any:
        shift = next(self._turn) % max(1, len(self._sources))
        for queue in [self.name, *self._sources[shift:], *self._sources[:shift]]:
            with self.db(commit=True) as cursor:
                cursor.execute(
                    "select id, data from task where queue = ? order by priority desc, id limit 1",
                    (queue,),
                )
                row = cursor.fetchone()
                if row is not None:
                    cursor.execute("delete from task where id = ?", (row[0],))
                    if cursor.rowcount == 1:
                        return row[1]
        return None


def _make_huey(settings: QueueSettings, data_dir: Path, name: str, sources: list[str]) -> Huey:
    if settings.backend == "redis":
        return Huey(
            name,
            results=False,
            storage_class=_RedisQueues,
            sources=sources,
            url=settings.redis_url,
            clean_name=False,
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    return Huey(
        name,
        results=False,
        storage_class=_SqliteQueues,
        sources=sources,
        filename=str(data_dir / "queue.db"),
        fsync=True,
    )
