"""The task store's schema, as numbered steps applied once each, in order.

Each backend records the version it reached in ``schema_version`` and runs the steps
above it in one transaction, so processes starting together never apply one twice
(SQLite: the write lock; PostgreSQL: an advisory lock). A step is written for each
backend, since their types differ (REAL is 4 bytes in PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass

from retracer.builder.model import Stage


@dataclass(frozen=True)
class Migration:
    version: int
    why: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


def _tables(real: str) -> tuple[str, ...]:
    """The first schema: tasks, spent passwords, totals, heartbeats, history."""
    return (
        f"""CREATE TABLE IF NOT EXISTS tasks (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            stage TEXT NOT NULL,
            created {real} NOT NULL,
            queued {real} NOT NULL,
            finished {real},
            reason TEXT,
            password_hash TEXT NOT NULL,
            lease_until {real},
            attempts INTEGER NOT NULL DEFAULT 0,
            owner TEXT,
            core_sha256 TEXT,
            result_key TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, queued)",
        "CREATE INDEX IF NOT EXISTS tasks_by_result ON tasks (core_sha256, result_key, state)",
        """CREATE TABLE IF NOT EXISTS spent_passwords (
            task_id TEXT NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (task_id, hash)
        )""",
        "CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS worker_heartbeats (worker TEXT PRIMARY KEY,"
        f" seen {real} NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS task_history (
            task_id TEXT PRIMARY KEY,
            created {real} NOT NULL,
            finished {real},
            success INTEGER,
            reason TEXT,
            release TEXT,
            arch TEXT,
            environment_cached INTEGER
        )""",
        "CREATE INDEX IF NOT EXISTS history_by_created ON task_history (created)",
        f"""CREATE TABLE IF NOT EXISTS step_times (
            task_id TEXT NOT NULL,
            step TEXT NOT NULL,
            seconds {real} NOT NULL,
            at {real} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS step_times_by_at ON step_times (at)",
        # Figures the worker measures and the HTTP process cannot (the environment cache).
        f"CREATE TABLE IF NOT EXISTS gauges (name TEXT PRIMARY KEY, value {real} NOT NULL)",
        # No longer used (failures are counted per client, in memory).
        "DROP TABLE IF EXISTS password_failures",
    )


def _stage_names() -> str:
    """Stages were stored as their text; these are the texts of every earlier release."""
    cases = " ".join(
        f"WHEN '{stage.value}' THEN '{stage.name}'" for stage in Stage if "{" not in stage.value
    )
    return f"UPDATE tasks SET stage = CASE stage {cases} ELSE 'QUEUED' END"


_BY_NAME = (
    "ALTER TABLE tasks ADD COLUMN arch TEXT",
    "ALTER TABLE worker_heartbeats ADD COLUMN arches TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE worker_heartbeats ADD COLUMN releases TEXT NOT NULL DEFAULT ''",
    _stage_names(),
    # Totals were keyed by lower-case text ("finished_success"); now by Total's names.
    "UPDATE totals SET name = upper(name)",
    "CREATE INDEX IF NOT EXISTS tasks_by_arch ON tasks (state, arch, queued)",
)

MIGRATIONS = (
    Migration(1, "the first schema", _tables("REAL"), _tables("DOUBLE PRECISION")),
    Migration(
        2,
        "stages and totals stored by name; tasks and workers know their architecture",
        _BY_NAME,
        _BY_NAME,
    ),
    Migration(
        3,
        "tasks know their release, so workers take only those whose mirror they hold",
        ("ALTER TABLE tasks ADD COLUMN release TEXT",),
        ("ALTER TABLE tasks ADD COLUMN release TEXT",),
    ),
)
# Columns added to the first schema before it was versioned (SQLite files of earlier
# releases may lack them): added before version 1 is recorded.
UNVERSIONED_COLUMNS = {"owner": "TEXT", "core_sha256": "TEXT", "result_key": "TEXT"}
