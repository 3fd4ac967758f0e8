"""Tasks and their one store, with two backends behind the one interface.

- :mod:`.model`: Task, TaskState, Total (the typed values);
- :mod:`.store`: TaskStore, every query, written once;
- :mod:`.sqlite`: the embedded default, a file under the data directory;
- :mod:`.postgresql`: for front ends and worker hosts that share no disk;
- :mod:`.migrations`: the versioned schema.

Every state change is one transaction, so "which tasks are active", "where is this
task in the queue" and "which tasks did a dead worker leave behind" are queries.
Stages are :class:`retracer.builder.model.Stage` members, stored by name.
"""

from __future__ import annotations

from pathlib import Path

from retracer.builder.model import Stage
from retracer.server.config import StoreSettings
from retracer.server.tasks.model import LiveWorker, Task, TaskState, Total
from retracer.server.tasks.sqlite import SqliteTaskStore
from retracer.server.tasks.store import TaskStore

__all__ = [
    "LiveWorker",
    "SqliteTaskStore",
    "Stage",
    "Task",
    "TaskState",
    "TaskStore",
    "Total",
    "open_store",
]


def open_store(settings: StoreSettings, data_dir: Path, busy_seconds: float = 10.0) -> TaskStore:
    """This process's connection to the configured store (one per process or thread).

    Raises:
        StoreUnavailable: the database cannot be reached or opened.
    """
    if settings.backend == "postgresql":
        # Imported here: the embedded default needs no PostgreSQL driver installed.
        from retracer.server.tasks.postgresql import PostgresTaskStore

        return PostgresTaskStore(settings.dsn or "", busy_seconds)
    return SqliteTaskStore(data_dir / "tasks.db", busy_seconds)
