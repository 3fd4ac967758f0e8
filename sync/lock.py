"""One sync per release at a time: an advisory lock on a file in its local repository."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retracer.sync.errors import SyncLocked

LOCK_FILE = ".retracer-sync.lock"


@contextmanager
def release_lock(repository: Path, release_id: str) -> Iterator[None]:
    """Hold the release's sync lock for the ``with`` block; the kernel drops it if we die.

    Raises:
        SyncLocked: another process holds it.
    """
    with (repository / LOCK_FILE).open("a") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise SyncLocked(release_id) from error
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
