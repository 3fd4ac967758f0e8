"""The task store's one interface, written once in SQL both backends understand.

:class:`TaskStore` holds every query; a backend (:mod:`.sqlite`, :mod:`.postgresql`)
supplies connections, transactions, the placeholder style and the few spellings that
differ (:class:`Dialect`). Every driver error leaves a method as StoreUnavailable, so
callers handle one error whatever the backend.

A task moves QUEUED -> RUNNING -> FINISHED_SUCCESS or FINISHED_FAILURE; a RUNNING task
whose lease ran out goes back to QUEUED. A finished task never changes again.

A new task's row is written before its folder is moved into the spool, *reserved*
(a QUEUED row whose ``lease_until`` lies ahead) until the folder is in place: no
housekeeping queues it meanwhile, and a server killed in between leaves a row that
fails with a reason once the reservation runs out, never a folder nobody knows.
A RUNNING task names its ``owner`` (one worker's attempt): only the owner renews or
finishes it, so a worker whose lease was taken over cannot write over the new one.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from retracer.builder.model import Stage
from retracer.server import statistics
from retracer.server.errors import StoreUnavailable, TaskNotFound
from retracer.server.statistics import Statistics
from retracer.server.tasks.model import LiveWorker, Task, TaskState, Total

log = logging.getLogger(__name__)

_QUEUED = TaskState.QUEUED.value
_RUNNING = TaskState.RUNNING.value
_SUCCESS = TaskState.FINISHED_SUCCESS.value
_FAILURE = TaskState.FINISHED_FAILURE.value
# Heartbeats older than this are deleted.
HEARTBEAT_MEMORY_SECONDS = 86400.0


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL."""

    # The driver's placeholder; queries are written with "?".
    placeholder: str
    # "a IS b" that also holds when both are NULL.
    same: str
    # Locks a row a claim takes, skipping rows another transaction holds.
    skip_locked: str
    # An integer floor of a non-negative number (statistics' time buckets).
    floor: str

    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


class Database:
    """One connection seen through the dialect: what the statistics queries run on."""

    def __init__(self, connection: Connection, dialect: Dialect) -> None:
        self._connection = connection
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._connection.execute(self.dialect.sql(sql), params)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, params).fetchall())


class TaskStore(abc.ABC):
    """All task state; open one per process (or per thread): :func:`open_store`."""

    # Backends say which exceptions mean "the database failed".
    driver_errors: tuple[type[BaseException], ...] = ()

    @abc.abstractmethod
    def _transaction(self, durable: bool) -> AbstractContextManager[Database]:
        """One write transaction; durable ones are on disk when it ends."""

    @abc.abstractmethod
    def _reading(self) -> AbstractContextManager[Database]:
        """A connection for reads outside a transaction."""

    @abc.abstractmethod
    def reopen(self, busy_seconds: float | None = None) -> TaskStore:
        """Another connection to the same store (a thread of its own needs one)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the store lives, for logs (never a password)."""

    @contextmanager
    def _write(self, durable: bool = False) -> Iterator[Database]:
        try:
            with self._transaction(durable) as db:
                yield db
        except self.driver_errors as error:
            log.warning("the task store failed: %s", _detail(error))
            raise StoreUnavailable(_detail(error)) from error

    @contextmanager
    def _read(self) -> Iterator[Database]:
        try:
            with self._reading() as db:
                yield db
        except self.driver_errors as error:
            log.warning("the task store failed: %s", _detail(error))
            raise StoreUnavailable(_detail(error)) from error

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read, tried twice: the first may meet a connection that died while idle
        (a database restart), and reads are safe to repeat."""
        try:
            with self._read() as db:
                return db.rows(sql, params)
        except StoreUnavailable:
            with self._read() as db:
                return db.rows(sql, params)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    # Creation and lookup

    def insert(
        self,
        task_id: str,
        password_hash: str,
        now: float | None = None,
        reserve_seconds: float | None = None,
        core_sha256: str | None = None,
        arch: str | None = None,
        release: str | None = None,
    ) -> bool:
        """Store a new QUEUED task; False if the id is taken.

        With ``reserve_seconds`` the task is reserved (not queued by housekeeping, not
        claimable) until :meth:`admitted` or until that time has passed.
        """
        now = time.time() if now is None else now
        reserved = None if reserve_seconds is None else now + reserve_seconds
        with self._write(durable=True) as db:
            cursor = db.execute(
                "INSERT INTO tasks (id, state, stage, created, queued, password_hash,"
                " lease_until, core_sha256, arch, release)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (task_id, _QUEUED, Stage.QUEUED.name, now, now, password_hash, reserved,
                 core_sha256, arch, release),
            )  # fmt: skip
            if not cursor.rowcount:
                return False
            _bump(db, Total.CREATED)
            db.execute(
                "INSERT INTO task_history (task_id, created) VALUES (?, ?)"
                " ON CONFLICT (task_id) DO NOTHING",
                (task_id, now),
            )
        return True

    def admitted(self, task_id: str) -> None:
        """End a new task's reservation: its folder is in place."""
        with self._write() as db:
            db.execute(
                "UPDATE tasks SET lease_until = NULL WHERE id = ? AND state = ?",
                (task_id, _QUEUED),
            )

    def forget(self, task_id: str) -> None:
        """Delete a reserved task whose folder could not be moved in (and its count)."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM tasks WHERE id = ? AND state = ?", (task_id, _QUEUED))
            if cursor.rowcount:
                db.execute(
                    "UPDATE totals SET value = value - 1 WHERE name = ?", (Total.CREATED.name,)
                )
                db.execute("DELETE FROM task_history WHERE task_id = ?", (task_id,))

    def get(self, task_id: str) -> Task:
        """The task with this id; raises TaskNotFound."""
        row = self._one(
            "SELECT id, state, stage, created, finished, reason, attempts, arch, release"
            " FROM tasks"
            " WHERE id = ?",
            (task_id,),
        )
        if row is None:
            raise TaskNotFound(task_id)
        return Task(row[0], TaskState(row[1]), Stage[row[2]], row[3], row[4], row[5], row[6],
                    row[7], row[8])  # fmt: skip

    def exists(self, task_id: str) -> bool:
        return self._one("SELECT 1 FROM tasks WHERE id = ?", (task_id,)) is not None

    def ids(self) -> set[str]:
        return {row[0] for row in self._rows("SELECT id FROM tasks")}

    def active_count(self) -> int:
        """Tasks queued or running: what /settings reports as ``running_tasks``."""
        (count,) = self._one(
            "SELECT count(*) FROM tasks WHERE state IN (?, ?)", (_QUEUED, _RUNNING)
        )
        return int(count)

    def count_by_state(self) -> dict[TaskState, int]:
        counts = dict.fromkeys(TaskState, 0)
        for state, count in self._rows("SELECT state, count(*) FROM tasks GROUP BY state"):
            counts[TaskState(state)] = int(count)
        return counts

    def queue_position(self, task_id: str) -> int | None:
        """1 for the next task of its architecture to run; None unless it is queued."""
        row = self._one(
            "SELECT count(*) FROM tasks t, tasks me WHERE me.id = ? AND me.state = ?"
            f" AND t.state = ? AND t.queued <= me.queued AND t.arch {self._same()} me.arch",
            (task_id, _QUEUED, _QUEUED),
        )
        return int(row[0]) or None

    def totals(self) -> dict[Total, int]:
        """Counters kept across processes and restarts (tasks created, finished by result)."""
        known = {total.name: total for total in Total}
        return {
            known[name]: int(value)
            for name, value in self._rows("SELECT name, value FROM totals")
            if name in known
        }

    # The worker's side

    def claim(
        self,
        task_id: str,
        lease_seconds: float,
        now: float | None = None,
        owner: str | None = None,
    ) -> Task | None:
        """Mark a queued task (or one whose lease ran out) RUNNING for ``owner``; None if
        it is not claimable (finished, reserved, held by a live lease, or being claimed
        by another worker this instant)."""
        now = time.time() if now is None else now
        with self._write() as db:
            claimable = db.rows(
                "SELECT id FROM tasks WHERE id = ? AND state IN (?, ?)"
                f" AND (lease_until IS NULL OR lease_until < ?){self._dialect().skip_locked}",
                (task_id, _QUEUED, _RUNNING, now),
            )
            if not claimable:
                return None
            db.execute(
                "UPDATE tasks SET state = ?, lease_until = ?, attempts = attempts + 1,"
                " owner = ? WHERE id = ?",
                (_RUNNING, now + lease_seconds, owner, task_id),
            )
        return self.get(task_id)

    def renew(
        self, task_id: str, lease_seconds: float, owner: str | None = None, now: float | None = None
    ) -> bool:
        """Extend ``owner``'s lease; False when the task is no longer RUNNING for ``owner``
        (its lease ran out and another worker took it, or it finished)."""
        now = time.time() if now is None else now
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE tasks SET lease_until = ? WHERE id = ? AND state = ?"
                f" AND owner {self._same()} ?",
                (now + lease_seconds, task_id, _RUNNING, owner),
            )
        return bool(cursor.rowcount)

    def set_stage(self, task_id: str, stage: Stage) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE tasks SET stage = ? WHERE id = ? AND state NOT IN (?, ?)",
                (stage.name, task_id, _SUCCESS, _FAILURE),
            )

    def finish(
        self,
        task_id: str,
        success: bool,
        reason: str | None,
        stage: Stage = Stage.FINISHING,
        owner: str | None = None,
    ) -> bool:
        """Record the outcome; False (and no change) if the task had already finished,
        or (with ``owner``) if another worker has taken it over."""
        state = TaskState.FINISHED_SUCCESS if success else TaskState.FINISHED_FAILURE
        owned = "" if owner is None else f" AND owner {self._same()} ?"
        with self._write(durable=True) as db:
            cursor = db.execute(
                "UPDATE tasks SET state = ?, stage = ?, reason = ?, finished = ?,"
                f" lease_until = NULL WHERE id = ? AND state NOT IN (?, ?){owned}",
                (state.value, stage.name, reason, time.time(), task_id, _SUCCESS, _FAILURE)
                + (() if owner is None else (owner,)),
            )
            if cursor.rowcount:
                _bump(db, Total.finished(state))
                db.execute(
                    "INSERT INTO task_history (task_id, created, finished, success, reason)"
                    " SELECT t.id, t.created, t.finished, ?, t.reason FROM tasks t"
                    " WHERE t.id = ? ON CONFLICT (task_id) DO UPDATE SET"
                    " finished = excluded.finished, success = excluded.success,"
                    " reason = excluded.reason",
                    (int(success), task_id),
                )
        return bool(cursor.rowcount)

    def release_expired(self, now: float | None = None) -> list[str]:
        """Put RUNNING tasks whose lease ran out back in the queue; returns their ids."""
        now = time.time() if now is None else now
        with self._write() as db:
            ids = [
                row[0]
                for row in db.rows(
                    "SELECT id FROM tasks WHERE state = ? AND lease_until < ?"
                    f"{self._dialect().skip_locked}",
                    (_RUNNING, now),
                )
            ]
            for task_id in ids:
                db.execute(
                    "UPDATE tasks SET state = ?, stage = ?, lease_until = NULL WHERE id = ?",
                    (_QUEUED, Stage.QUEUED.name, task_id),
                )
        return ids

    def running_owners(self) -> dict[str, str | None]:
        """RUNNING tasks and the owner of each."""
        return dict(self._rows("SELECT id, owner FROM tasks WHERE state = ?", (_RUNNING,)))

    def release(self, task_id: str, owner: str | None) -> bool:
        """Put a RUNNING task of ``owner`` (a dead worker) back in the queue at once."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE tasks SET state = ?, stage = ?, lease_until = NULL"
                f" WHERE id = ? AND state = ? AND owner {self._same()} ?",
                (_QUEUED, Stage.QUEUED.name, task_id, _RUNNING, owner),
            )
        return bool(cursor.rowcount)

    def queued_ids(self, now: float | None = None) -> list[str]:
        """QUEUED tasks, oldest first, except new ones still reserved."""
        return [task_id for task_id, _ in self.queued(now)]

    def queued(self, now: float | None = None) -> list[tuple[str, str | None]]:
        """QUEUED tasks and their architecture, oldest first, except reserved ones."""
        now = time.time() if now is None else now
        return [
            (row[0], row[1])
            for row in self._rows(
                "SELECT id, arch FROM tasks WHERE state = ?"
                " AND (lease_until IS NULL OR lease_until < ?) ORDER BY queued",
                (_QUEUED, now),
            )
        ]

    def record_retrace(
        self,
        task_id: str,
        release_id: str,
        arch: str,
        environment_cached: bool,
        steps: tuple[tuple[str, float], ...],
    ) -> None:
        """Keep what the dashboard and /metrics report about one retrace."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE task_history SET release = ?, arch = ?, environment_cached = ?"
                " WHERE task_id = ?",
                (release_id, arch, int(environment_cached), task_id),
            )
            for name, seconds in steps:
                db.execute(
                    "INSERT INTO step_times (task_id, step, seconds, at) VALUES (?, ?, ?, ?)",
                    (task_id, name, seconds, now),
                )

    def record_environment_cache(self, images: int, size_bytes: int) -> None:
        """The environment cache's size, as the worker last measured it."""
        with self._write() as db:
            for name, value in (("environment_images", images), ("environment_bytes", size_bytes)):
                db.execute(
                    "INSERT INTO gauges (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )

    def statistics(self, now: float | None = None) -> Statistics:
        """The operator's figures (see :mod:`retracer.server.statistics`)."""
        with self._read() as db:
            return statistics.collect(db, time.time() if now is None else now)

    # Results shared by identical cores

    def core_sha256(self, task_id: str) -> str | None:
        row = self._one("SELECT core_sha256 FROM tasks WHERE id = ?", (task_id,))
        return None if row is None else row[0]

    def set_result_key(self, task_id: str, result_key: str) -> None:
        """Record what a successful retrace was made against (release and metadata revision)."""
        with self._write() as db:
            db.execute("UPDATE tasks SET result_key = ? WHERE id = ?", (result_key, task_id))

    def find_result(self, core_sha256: str, result_key: str, task_id: str) -> str | None:
        """A finished successful task, other than ``task_id``, with this core and key."""
        row = self._one(
            "SELECT id FROM tasks WHERE core_sha256 = ? AND result_key = ? AND state = ?"
            " AND id != ? ORDER BY finished DESC LIMIT 1",
            (core_sha256, result_key, _SUCCESS, task_id),
        )
        return None if row is None else str(row[0])

    def count_reuse(self) -> None:
        with self._write() as db:
            _bump(db, Total.REUSED)

    # Worker heartbeats

    def beat(
        self,
        worker: str,
        now: float | None = None,
        arches: tuple[str, ...] = (),
        releases: tuple[str, ...] = (),
    ) -> None:
        """Say that ``worker`` (a consumer process) is alive now, serving these
        architectures and releases."""
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(
                "INSERT INTO worker_heartbeats (worker, seen, arches, releases)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (worker) DO UPDATE SET seen = excluded.seen,"
                " arches = excluded.arches, releases = excluded.releases",
                (worker, now, " ".join(arches), " ".join(releases)),
            )
            db.execute(
                "DELETE FROM worker_heartbeats WHERE seen < ?", (now - HEARTBEAT_MEMORY_SECONDS,)
            )

    def stop_beating(self, worker: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM worker_heartbeats WHERE worker = ?", (worker,))

    def workers_seen_since(self, since: float) -> int:
        return len(self.live_workers(since))

    def live_workers(self, since: float) -> tuple[LiveWorker, ...]:
        """Consumers seen at ``since`` or later, by name."""
        rows = self._rows(
            "SELECT worker, arches, releases, seen FROM worker_heartbeats WHERE seen >= ?"
            " ORDER BY worker",
            (since,),
        )
        return tuple(
            LiveWorker(name, tuple(arches.split()), tuple(releases.split()), seen)
            for name, arches, releases, seen in rows
        )

    # Credentials

    def password_hash(self, task_id: str) -> str:
        row = self._one("SELECT password_hash FROM tasks WHERE id = ?", (task_id,))
        if row is None:
            raise TaskNotFound(task_id)
        return str(row[0])

    def rotate_password(self, task_id: str, old_hash: str, new_hash: str) -> bool:
        """Replace the password if it is still ``old_hash``; remember the old one as spent."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE tasks SET password_hash = ? WHERE id = ? AND password_hash = ?",
                (new_hash, task_id, old_hash),
            )
            if cursor.rowcount:
                db.execute(
                    "INSERT INTO spent_passwords (task_id, hash) VALUES (?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (task_id, old_hash),
                )
        return bool(cursor.rowcount)

    def is_spent(self, task_id: str, password_hash: str) -> bool:
        return (
            self._one(
                "SELECT 1 FROM spent_passwords WHERE task_id = ? AND hash = ?",
                (task_id, password_hash),
            )
            is not None
        )

    # Expiry

    def expired(self, finished_before: float, created_before: float) -> list[str]:
        """Finished tasks older than the one age, and unfinished ones older than the other."""
        return [
            row[0]
            for row in self._rows(
                "SELECT id FROM tasks WHERE (state IN (?, ?) AND finished < ?)"
                " OR (state IN (?, ?) AND created < ?)",
                (_SUCCESS, _FAILURE, finished_before, _QUEUED, _RUNNING, created_before),
            )
        ]

    def delete(self, task_id: str) -> None:
        with self._write() as db:
            for table, column in (("tasks", "id"), ("spent_passwords", "task_id")):
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (task_id,))

    # Helpers

    @abc.abstractmethod
    def _dialect(self) -> Dialect: ...

    def _same(self) -> str:
        return self._dialect().same


def _bump(db: Database, total: Total) -> None:
    db.execute(
        "INSERT INTO totals (name, value) VALUES (?, 1)"
        " ON CONFLICT (name) DO UPDATE SET value = totals.value + 1",
        (total.name,),
    )


def _detail(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
