"""Tasks and their one store: a SQLite database under the data directory.

Every state change is one transaction, so "which tasks are active", "where is this
task in the queue" and "which tasks did a dead worker leave behind" are queries. The
HTTP process and every worker process open their own :class:`TaskStore` on the same
file (WAL mode lets readers run beside one writer).

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

import contextlib
import enum
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from retracer.server import statistics
from retracer.server.errors import TaskNotFound
from retracer.server.statistics import Statistics

log = logging.getLogger(__name__)

QUEUED_STAGE = "Waiting for a free worker"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    stage TEXT NOT NULL,
    created REAL NOT NULL,
    queued REAL NOT NULL,
    finished REAL,
    reason TEXT,
    password_hash TEXT NOT NULL,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, queued);
CREATE TABLE IF NOT EXISTS spent_passwords (
    task_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (task_id, hash)
);
-- No longer used (failures are counted per client, in memory); gone on upgrade.
DROP TABLE IF EXISTS password_failures;
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS worker_heartbeats (worker TEXT PRIMARY KEY, seen REAL NOT NULL);
"""
# Columns added after the first release, with their types (added where missing):
# the lease holder, the core's SHA-256 from the upload, and "<release id>:<repository
# metadata revision>" of a successful retrace (the last two let an identical core reuse
# its result).
_ADDED_COLUMNS = {"owner": "TEXT", "core_sha256": "TEXT", "result_key": "TEXT"}
_RESULTS_INDEX = (
    "CREATE INDEX IF NOT EXISTS tasks_by_result ON tasks (core_sha256, result_key, state)"
)


class TaskState(enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    FINISHED_SUCCESS = "FINISHED_SUCCESS"
    FINISHED_FAILURE = "FINISHED_FAILURE"

    @property
    def finished(self) -> bool:
        return self in (TaskState.FINISHED_SUCCESS, TaskState.FINISHED_FAILURE)

    @property
    def wire(self) -> str:
        """The ``X-Task-Status`` value: PENDING until the task has finished."""
        return self.value if self.finished else "PENDING"


_ACTIVE = (TaskState.QUEUED.value, TaskState.RUNNING.value)
_FINISHED = (TaskState.FINISHED_SUCCESS.value, TaskState.FINISHED_FAILURE.value)


@dataclass(frozen=True)
class Task:
    id: str
    state: TaskState
    # What the task is doing now, in the words ABRT clients show.
    stage: str
    created: float
    finished: float | None
    # Why the task failed: one sentence from the analyzer, or "internal error".
    reason: str | None
    attempts: int


class TaskStore:
    """All task state, in one SQLite file; open one per process (or per thread)."""

    def __init__(self, path: Path, busy_seconds: float = 10.0) -> None:
        """``busy_seconds``: how long a statement waits for another writer's lock."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per store; the HTTP process may build the app in one thread
        # and serve it from another, but never uses a store from two threads at once.
        self._db = sqlite3.connect(
            path, isolation_level=None, timeout=busy_seconds, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # Commits survive a killed process either way; only those made with
        # ``durable=True`` (a new task, a finished one) also wait for the disk.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.executescript(statistics.SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                with contextlib.suppress(sqlite3.OperationalError):  # another process won
                    self._db.execute(f"ALTER TABLE tasks ADD COLUMN {column} {kind}")
        self._db.execute(_RESULTS_INDEX)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> TaskStore:
        return cls(data_dir / "tasks.db")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on success and rolled back on any error.

        A durable one is on disk when this returns (WAL fsynced), not just committed.
        """
        if durable:
            self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        finally:
            if durable:
                self._db.execute("PRAGMA synchronous=NORMAL")

    # Creation and lookup

    def insert(
        self,
        task_id: str,
        password_hash: str,
        now: float | None = None,
        reserve_seconds: float | None = None,
        core_sha256: str | None = None,
    ) -> bool:
        """Store a new QUEUED task; False if the id is taken.

        With ``reserve_seconds`` the task is reserved (not queued by housekeeping, not
        claimable) until :meth:`admitted` or until that time has passed.
        """
        now = time.time() if now is None else now
        reserved = None if reserve_seconds is None else now + reserve_seconds
        try:
            with self._write(durable=True) as db:
                db.execute(
                    "INSERT INTO tasks (id, state, stage, created, queued, password_hash,"
                    " lease_until, core_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        task_id,
                        TaskState.QUEUED.value,
                        QUEUED_STAGE,
                        now,
                        now,
                        password_hash,
                        reserved,
                        core_sha256,
                    ),
                )
                _bump(db, "created")
                db.execute(
                    "INSERT INTO task_history (task_id, created) VALUES (?, ?)", (task_id, now)
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def admitted(self, task_id: str) -> None:
        """End a new task's reservation: its folder is in place."""
        with self._write() as db:
            db.execute(
                "UPDATE tasks SET lease_until = NULL WHERE id = ? AND state = ?",
                (task_id, TaskState.QUEUED.value),
            )

    def forget(self, task_id: str) -> None:
        """Delete a reserved task whose folder could not be moved in (and its count)."""
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM tasks WHERE id = ? AND state = ?", (task_id, TaskState.QUEUED.value)
            )
            if cursor.rowcount:
                db.execute("UPDATE totals SET value = value - 1 WHERE name = 'created'")

    def get(self, task_id: str) -> Task:
        """The task with this id; raises TaskNotFound."""
        row = self._db.execute(
            "SELECT id, state, stage, created, finished, reason, attempts FROM tasks WHERE id = ?",
            (task_id,),
        ).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        return Task(row[0], TaskState(row[1]), row[2], row[3], row[4], row[5], row[6])

    def exists(self, task_id: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() is not None
        )

    def ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT id FROM tasks")}

    def active_count(self) -> int:
        """Tasks queued or running: what /settings reports as ``running_tasks``."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM tasks WHERE state IN (?, ?)", _ACTIVE
        ).fetchone()
        return int(count)

    def count_by_state(self) -> dict[TaskState, int]:
        counts = dict.fromkeys(TaskState, 0)
        for state, count in self._db.execute("SELECT state, count(*) FROM tasks GROUP BY state"):
            counts[TaskState(state)] = count
        return counts

    def queue_position(self, task_id: str) -> int | None:
        """1 for the next task to run; None unless the task is queued."""
        row = self._db.execute(
            "SELECT count(*) FROM tasks t, tasks me WHERE me.id = ? AND me.state = ?"
            " AND t.state = ? AND t.queued <= me.queued",
            (task_id, TaskState.QUEUED.value, TaskState.QUEUED.value),
        ).fetchone()
        return int(row[0]) or None

    def totals(self) -> dict[str, int]:
        """Counters kept across processes and restarts (tasks created, finished by result)."""
        return {name: value for name, value in self._db.execute("SELECT name, value FROM totals")}

    # The worker's side

    def claim(
        self,
        task_id: str,
        lease_seconds: float,
        now: float | None = None,
        owner: str | None = None,
    ) -> Task | None:
        """Mark a queued task (or one whose lease ran out) RUNNING for ``owner``; None if
        it is not claimable (finished, reserved, or held by a live lease)."""
        now = time.time() if now is None else now
        with self._write() as db:
            cursor = db.execute(
                "UPDATE tasks SET state = ?, lease_until = ?, attempts = attempts + 1, owner = ?"
                " WHERE id = ? AND state IN (?, ?) AND (lease_until IS NULL OR lease_until < ?)",
                (
                    TaskState.RUNNING.value,
                    now + lease_seconds,
                    owner,
                    task_id,
                    TaskState.QUEUED.value,
                    TaskState.RUNNING.value,
                    now,
                ),
            )
        return self.get(task_id) if cursor.rowcount else None

    def renew(
        self, task_id: str, lease_seconds: float, owner: str | None = None, now: float | None = None
    ) -> bool:
        """Extend ``owner``'s lease; False when the task is no longer RUNNING for ``owner``
        (its lease ran out and another worker took it, or it finished)."""
        now = time.time() if now is None else now
        with self._write() as db:
            cursor = db.execute(
                "UPDATE tasks SET lease_until = ? WHERE id = ? AND state = ? AND owner IS ?",
                (now + lease_seconds, task_id, TaskState.RUNNING.value, owner),
            )
        return bool(cursor.rowcount)

    def set_stage(self, task_id: str, stage: str) -> None:
        with self._write() as db:
            db.execute(
                f"UPDATE tasks SET stage = ? WHERE id = ? AND state NOT IN {_FINISHED}",
                (stage, task_id),
            )

    def finish(
        self,
        task_id: str,
        success: bool,
        reason: str | None,
        stage: str,
        owner: str | None = None,
    ) -> bool:
        """Record the outcome; False (and no change) if the task had already finished,
        or (with ``owner``) if another worker has taken it over."""
        state = TaskState.FINISHED_SUCCESS if success else TaskState.FINISHED_FAILURE
        owned = "" if owner is None else " AND owner IS ?"
        with self._write(durable=True) as db:
            cursor = db.execute(
                "UPDATE tasks SET state = ?, stage = ?, reason = ?, finished = ?,"
                f" lease_until = NULL WHERE id = ? AND state NOT IN {_FINISHED}{owned}",
                (state.value, stage, reason, time.time(), task_id)
                + (() if owner is None else (owner,)),
            )
            if cursor.rowcount:
                _bump(db, state.value.lower())
                db.execute(
                    "INSERT OR REPLACE INTO task_history (task_id, created, finished, success,"
                    " reason, release, arch, environment_cached)"
                    " SELECT t.id, t.created, t.finished, ?, t.reason, h.release, h.arch,"
                    " h.environment_cached FROM tasks t"
                    " LEFT JOIN task_history h ON h.task_id = t.id WHERE t.id = ?",
                    (int(success), task_id),
                )
        return bool(cursor.rowcount)

    def release_expired(self, now: float | None = None) -> list[str]:
        """Put RUNNING tasks whose lease ran out back in the queue; returns their ids."""
        now = time.time() if now is None else now
        with self._write() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM tasks WHERE state = ? AND lease_until < ?",
                    (TaskState.RUNNING.value, now),
                )
            ]
            db.executemany(
                "UPDATE tasks SET state = ?, stage = ?, lease_until = NULL WHERE id = ?",
                [(TaskState.QUEUED.value, QUEUED_STAGE, i) for i in ids],
            )
        return ids

    def running_owners(self) -> dict[str, str | None]:
        """RUNNING tasks and the owner of each."""
        rows = self._db.execute(
            "SELECT id, owner FROM tasks WHERE state = ?", (TaskState.RUNNING.value,)
        )
        return dict(rows.fetchall())

    def release(self, task_id: str, owner: str | None) -> bool:
        """Put a RUNNING task of ``owner`` (a dead worker) back in the queue at once."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE tasks SET state = ?, stage = ?, lease_until = NULL"
                " WHERE id = ? AND state = ? AND owner IS ?",
                (TaskState.QUEUED.value, QUEUED_STAGE, task_id, TaskState.RUNNING.value, owner),
            )
        return bool(cursor.rowcount)

    def queued_ids(self, now: float | None = None) -> list[str]:
        """QUEUED tasks, oldest first, except new ones still reserved."""
        now = time.time() if now is None else now
        return [
            row[0]
            for row in self._db.execute(
                "SELECT id FROM tasks WHERE state = ? AND (lease_until IS NULL OR lease_until < ?)"
                " ORDER BY queued",
                (TaskState.QUEUED.value, now),
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
            db.executemany(
                "INSERT INTO step_times (task_id, step, seconds, at) VALUES (?, ?, ?, ?)",
                [(task_id, name, seconds, now) for name, seconds in steps],
            )

    def record_environment_cache(self, images: int, size_bytes: int) -> None:
        """The environment cache's size, as the worker last measured it."""
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO gauges (name, value) VALUES (?, ?)",
                [("environment_images", images), ("environment_bytes", size_bytes)],
            )

    def statistics(self, now: float | None = None) -> Statistics:
        """The operator's figures (see :mod:`retracer.server.statistics`)."""
        return statistics.collect(self._db, time.time() if now is None else now)

    # Results shared by identical cores

    def core_sha256(self, task_id: str) -> str | None:
        row = self._db.execute("SELECT core_sha256 FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else row[0]

    def set_result_key(self, task_id: str, result_key: str) -> None:
        """Record what a successful retrace was made against (release and metadata revision)."""
        with self._write() as db:
            db.execute("UPDATE tasks SET result_key = ? WHERE id = ?", (result_key, task_id))

    def find_result(self, core_sha256: str, result_key: str, task_id: str) -> str | None:
        """A finished successful task, other than ``task_id``, with this core and key."""
        row = self._db.execute(
            "SELECT id FROM tasks WHERE core_sha256 = ? AND result_key = ? AND state = ?"
            " AND id != ? ORDER BY finished DESC LIMIT 1",
            (core_sha256, result_key, TaskState.FINISHED_SUCCESS.value, task_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def count_reuse(self) -> None:
        with self._write() as db:
            _bump(db, "reused")

    # Worker heartbeats

    def beat(self, worker: str, now: float | None = None) -> None:
        """Say that ``worker`` (a consumer process) is alive now."""
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO worker_heartbeats VALUES (?, ?)", (worker, now))
            db.execute("DELETE FROM worker_heartbeats WHERE seen < ?", (now - 86400,))

    def stop_beating(self, worker: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM worker_heartbeats WHERE worker = ?", (worker,))

    def workers_seen_since(self, since: float) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM worker_heartbeats WHERE seen >= ?", (since,)
        ).fetchone()
        return int(count)

    # Credentials

    def password_hash(self, task_id: str) -> str:
        row = self._db.execute(
            "SELECT password_hash FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
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
                    "INSERT OR IGNORE INTO spent_passwords (task_id, hash) VALUES (?, ?)",
                    (task_id, old_hash),
                )
        return bool(cursor.rowcount)

    def is_spent(self, task_id: str, password_hash: str) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM spent_passwords WHERE task_id = ? AND hash = ?",
                (task_id, password_hash),
            ).fetchone()
            is not None
        )

    # Expiry

    def expired(self, finished_before: float, created_before: float) -> list[str]:
        """Finished tasks older than the one age, and unfinished ones older than the other."""
        return [
            row[0]
            for row in self._db.execute(
                f"SELECT id FROM tasks WHERE (state IN {_FINISHED} AND finished < ?)"
                f" OR (state IN {_ACTIVE} AND created < ?)",
                (finished_before, created_before),
            )
        ]

    def delete(self, task_id: str) -> None:
        with self._write() as db:
            for table, column in (("tasks", "id"), ("spent_passwords", "task_id")):
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (task_id,))


def _bump(db: sqlite3.Connection, name: str) -> None:
    db.execute(
        "INSERT INTO totals (name, value) VALUES (?, 1)"
        " ON CONFLICT (name) DO UPDATE SET value = value + 1",
        (name,),
    )
