"""Open a SQLite file in write-ahead-log mode, safely when several processes open it first.

WAL lets readers go on while one process writes, which every shared SQLite file here
needs (the task store, the package store's index). Switching a new file to WAL takes
an exclusive lock, and SQLite reports "database is locked" at once, without waiting
on the busy timeout, when another process is switching it at the same moment: two
workers opening a fresh data folder together hit that. The mode is kept in the file,
so only the first opening has to switch it, and it retries until the timeout.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Literal


def connect_wal(
    path: Path,
    busy_seconds: float,
    isolation_level: Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"] | None = "DEFERRED",
) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, usable from any thread (callers serialise).

    Raises :class:`sqlite3.Error` if the file cannot be opened or switched to WAL
    within ``busy_seconds``.
    """
    db = sqlite3.connect(
        path, timeout=busy_seconds, isolation_level=isolation_level, check_same_thread=False
    )
    try:
        _switch_to_wal(db, busy_seconds)
    except BaseException:
        db.close()
        raise
    return db


def _switch_to_wal(db: sqlite3.Connection, busy_seconds: float) -> None:
    deadline = time.monotonic() + busy_seconds
    pause = 0.005
    while True:
        try:
            (mode,) = db.execute("PRAGMA journal_mode").fetchone()
            if mode.lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + pause > deadline:
                raise
        # Another opener holds the switch for a moment; it needs no more than that.
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
