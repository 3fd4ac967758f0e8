"""Several processes opening a new SQLite file at once all get a WAL connection.

Two workers starting on a fresh data folder open the package store's index together;
switching a new file to WAL fails at once for all but one of them unless it retries.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from retracer.sync.wal import connect_wal

OPENERS = 8
ROUNDS = 40


def _open(
    path: Path, start: multiprocessing.synchronize.Barrier, errors: multiprocessing.Queue
) -> None:
    start.wait()
    try:
        db = connect_wal(path, busy_seconds=30)
        db.execute("CREATE TABLE IF NOT EXISTS package (nevra TEXT PRIMARY KEY)")
        db.commit()
        errors.put(None)
    except Exception as error:  # reported to the test, which names it
        errors.put(f"{type(error).__name__}: {error}")


def test_processes_opening_a_new_file_together_all_get_wal(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    failures = []
    for round_number in range(ROUNDS):
        path = tmp_path / f"index-{round_number}.db"
        start, errors = context.Barrier(OPENERS), context.Queue()
        openers = [
            context.Process(target=_open, args=(path, start, errors)) for _ in range(OPENERS)
        ]
        for opener in openers:
            opener.start()
        failures += [error for error in (errors.get(timeout=60) for _ in openers) if error]
        for opener in openers:
            opener.join()
        assert connect_wal(path, busy_seconds=1).execute("PRAGMA journal_mode").fetchone() == (
            "wal",
        )
    assert failures == []
