"""Files that survive a crash: fsync a path, and put a whole file in place by rename.

A reader sees either the old file or the new one, never half of it, and once these
return the new one is on disk (its data and the directory entry that names it). The
lowest layer that writes state owns this; the builder and the server import it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(scratch: Path | str, target: Path) -> None:
    """Move a finished ``scratch`` file over ``target`` in one rename, on disk when done.

    ``scratch`` must be in ``target``'s directory (a rename does not cross filesystems).
    """
    fsync_path(Path(scratch))
    os.replace(scratch, target)
    fsync_path(target.parent)


def write_durably(target: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``target`` whole (temporary file, fsync, rename, fsync of the directory).

    The temporary file is created with ``O_EXCL | O_NOFOLLOW``, so a link planted
    under its name is not followed.
    """
    scratch = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        scratch.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(scratch, target)
    fsync_path(target.parent)


def write_all(fd: int, data: bytes) -> int:
    """Write all of ``data`` to a blocking descriptor; returns its length."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)
