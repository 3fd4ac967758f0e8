"""The task store on PostgreSQL (psycopg 3), for front ends and workers on several hosts.

Each store holds one connection in autocommit mode; writes run in explicit
transactions. A claim locks its row with ``FOR UPDATE SKIP LOCKED``, so two hosts
claiming the same task at once never both win (the loser sees nothing to claim).
A connection that broke (the server restarted) is replaced on the next call; the call
that noticed fails with StoreUnavailable and its caller retries as it would for any
store error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from retracer.server.errors import StoreUnavailable
from retracer.server.tasks.migrations import MIGRATIONS
from retracer.server.tasks.store import Database, Dialect, TaskStore

DIALECT = Dialect(
    placeholder="%s",
    same="IS NOT DISTINCT FROM",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    floor="CAST(floor({}) AS INTEGER)",
)
# Any number; it only has to be the same in every process migrating this database.
_MIGRATION_LOCK = 0x7265_7472


class PostgresTaskStore(TaskStore):
    driver_errors = (psycopg.Error,)

    def __init__(self, dsn: str, busy_seconds: float = 10.0) -> None:
        """``busy_seconds``: how long a statement may wait for a lock or the server."""
        self.dsn = dsn
        self._busy_seconds = busy_seconds
        self._connection: psycopg.Connection[Any] | None = None
        try:
            self._migrate()
        except psycopg.Error as error:
            self.close()
            raise StoreUnavailable(str(error).strip()) from error

    def reopen(self, busy_seconds: float | None = None) -> PostgresTaskStore:
        return PostgresTaskStore(self.dsn, busy_seconds or self._busy_seconds)

    def describe(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        where = info.get("host") or "local socket"
        return f"PostgreSQL database {info.get('dbname', '')!s} on {where}"

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _dialect(self) -> Dialect:
        return DIALECT

    def _connect(self) -> psycopg.Connection[Any]:
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            if connection is not None:
                connection.close()
            timeout = max(1, round(self._busy_seconds))
            milliseconds = int(self._busy_seconds * 1000)
            connection = self._connection = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=timeout,
                options=f"-c lock_timeout={milliseconds} -c statement_timeout={milliseconds * 6}",
            )
        return connection

    def _begin(self) -> psycopg.Connection[Any]:
        """A connection in a new transaction. One that died while idle (the server
        restarted since) is replaced once: nothing was sent on it yet."""
        connection = self._connect()
        try:
            connection.execute("BEGIN")
        except psycopg.OperationalError:
            if not connection.broken:
                raise
            connection = self._connect()
            connection.execute("BEGIN")
        return connection

    @contextmanager
    def _transaction(self, durable: bool) -> Iterator[Database]:
        # Every commit waits for the WAL flush (synchronous_commit on): durable always.
        connection = self._begin()
        try:
            yield Database(connection, DIALECT)
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[Database]:
        yield Database(self._connect(), DIALECT)

    def _migrate(self) -> None:
        with self._transaction(durable=True) as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            (current,) = db.execute(
                "SELECT coalesce(max(version), 0) FROM schema_version"
            ).fetchone()
            for migration in MIGRATIONS:
                if migration.version > current:
                    for statement in migration.postgresql:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_version VALUES (?)", (migration.version,))
