"""The embedded task store: one SQLite file under the data directory.

Every process opens its own :class:`SqliteTaskStore` on the same file (WAL mode lets
readers run beside one writer). A write transaction starts with BEGIN IMMEDIATE, so
a claim's check and update happen under the one write lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retracer.server.errors import StoreUnavailable
from retracer.server.tasks.migrations import MIGRATIONS, UNVERSIONED_COLUMNS
from retracer.server.tasks.store import Database, Dialect, TaskStore
from retracer.sync.wal import connect_wal

DIALECT = Dialect(placeholder="?", same="IS", skip_locked="", floor="CAST({} AS INTEGER)")


class SqliteTaskStore(TaskStore):
    driver_errors = (sqlite3.Error,)

    def __init__(self, path: Path, busy_seconds: float = 10.0) -> None:
        """``busy_seconds``: how long a statement waits for another writer's lock."""
        self.path = path
        self._busy_seconds = busy_seconds
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # One connection per store; the HTTP process may build the app in one thread
            # and serve it from another, but never uses a store from two threads at once.
            self._db = connect_wal(path, busy_seconds, isolation_level=None)
            # Commits survive a killed process either way; only those made with
            # ``durable=True`` (a new task, a finished one) also wait for the disk.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.Error as error:
            raise StoreUnavailable(str(error)) from error

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SqliteTaskStore:
        return cls(data_dir / "tasks.db")

    def reopen(self, busy_seconds: float | None = None) -> SqliteTaskStore:
        return SqliteTaskStore(self.path, busy_seconds or self._busy_seconds)

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def close(self) -> None:
        self._db.close()

    def _dialect(self) -> Dialect:
        return DIALECT

    @contextmanager
    def _transaction(self, durable: bool) -> Iterator[Database]:
        """Committed on success and rolled back on any error; a durable one is on disk
        when this returns (WAL fsynced), not just committed."""
        if durable:
            self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield Database(self._db, DIALECT)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        finally:
            if durable:
                self._db.execute("PRAGMA synchronous=NORMAL")

    @contextmanager
    def _reading(self) -> Iterator[Database]:
        yield Database(self._db, DIALECT)

    def _migrate(self) -> None:
        # Most opens find the schema current: a read, no write lock.
        with contextlib.suppress(sqlite3.OperationalError):  # no such table yet
            (version,) = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
            if version == MIGRATIONS[-1].version:
                return
        with self._transaction(durable=True) as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current == 0 and db.rows("SELECT 1 FROM sqlite_master WHERE name = 'tasks'"):
                # A file of a release before versioning: bring it to version 1 first.
                present = {row[1] for row in db.rows("PRAGMA table_info(tasks)")}
                for column, kind in UNVERSIONED_COLUMNS.items():
                    if column not in present:
                        db.execute(f"ALTER TABLE tasks ADD COLUMN {column} {kind}")
            for migration in MIGRATIONS:
                if migration.version > current:
                    for statement in migration.sqlite:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_version VALUES (?)", (migration.version,))
