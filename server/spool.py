"""The spool: where uploads land and are unpacked, and where tasks keep their files.

This is the only module that touches the spool directory. Its layout::

    <data_dir>/spool/incoming/<token>/upload      the packed upload, while it arrives
    <data_dir>/spool/incoming/<token>/crash/      the problem files, while they unpack
    <data_dir>/spool/tasks/<id>/crash/            an admitted task's problem files
    <data_dir>/spool/tasks/<id>/log               what the retrace printed
    <data_dir>/spool/tasks/<id>/backtrace         the results (see RESULT_FILES in
                                                  :mod:`retracer.server.worker`)

An upload unpacks as it arrives, by the rules of
:mod:`retracer.builder.problem_format` (which members, their caps, how they are
written), behind a running cap on the unpacked bytes, so neither a 4 GiB core nor an
xz bomb needs memory in proportion. The spool adds what only a server knows: the
free disk space, shared with the other uploads in flight. Anything refused leaves
nothing behind.

A finished task is sealed (files and directories lose their write bits) and every
writer here refuses a sealed task.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from retracer.builder.errors import ArchiveError
from retracer.builder.problem_format import CORE, Unpacked, UnpackLimits, unpack_problem
from retracer.server.config import ServerSettings
from retracer.server.errors import (
    InsufficientStorage,
    LengthRequired,
    TaskSealed,
    TaskTypeRejected,
    UnsupportedMediaType,
    UploadIncomplete,
    UploadTooLarge,
    upload_refusal,
)
from retracer.server.reservations import Reservation, UploadLedger
from retracer.sync.durable import fsync_path, write_all, write_durably

log = logging.getLogger(__name__)

T = TypeVar("T")
# Feeds ``length`` bytes of a stream to a consumer and returns what it returns.
Pump = Callable[[IO[bytes], int, Callable[[IO[bytes]], Any]], Any]
# Checks an unpacked problem directory; raises to refuse it.
Validate = Callable[[Path], None]

SUPPORTED_FORMATS = (
    "application/x-xz-compressed-tar",
    "application/x-xz",
    "application/x-gzip",
    "application/gzip",
    "application/x-tar",
)

COREDUMP_TASK_TYPE = "0"


@dataclass(frozen=True)
class Upload:
    """What /create received, before anything was read from the body."""

    stream: IO[bytes]
    content_type: str
    content_length: int | None
    task_type: str | None


@dataclass(frozen=True)
class Received:
    """An upload unpacked and stored durably in ``incoming``, waiting for its task id."""

    token: str
    packed_bytes: int
    unpacked_bytes: int
    members: tuple[str, ...]
    # SHA-256 of the core, hashed as it arrived: identical cores share a result.
    core_sha256: str | None = None


class Spool:
    """Upload storage and task files under ``root``.

    ``pump(stream, length, consume)`` feeds exactly ``length`` bytes of ``stream`` to
    ``consume(reader)`` and returns its result; the HTTP process passes one that runs
    ``consume`` in gevent's thread pool (see :mod:`retracer.server.offload`).
    """

    def __init__(
        self,
        root: Path,
        settings: ServerSettings,
        pump: Pump | None = None,
    ) -> None:
        self.root = root
        self._incoming = root / "incoming"
        self._tasks = root / "tasks"
        self._settings = settings
        self._pump = pump or read_in_place
        self._ledger = UploadLedger()
        for folder in (self._incoming, self._tasks):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    @classmethod
    def in_data_dir(
        cls,
        data_dir: Path,
        settings: ServerSettings,
        pump: Pump | None = None,
    ) -> Spool:
        return cls(data_dir / "spool", settings, pump)

    # Receiving

    @property
    def uploads_in_flight(self) -> int:
        return self._ledger.in_flight

    def receive(self, upload: Upload, validate: Validate | None = None) -> Received:
        """Check, store and unpack one upload (415, 411, 413, 507, 403, 400 in that order).

        ``validate(crash_dir)`` runs on the unpacked files before anything is kept;
        whatever it raises refuses the upload.

        Raises:
            UnsupportedMediaType, LengthRequired, UploadTooLarge, InsufficientStorage,
            ArchiveRejected, TaskTypeRejected, UploadIncomplete, UnpackFailed, or what
            ``validate`` raises.
        """
        max_packed = self._settings.max_packed_size_mib << 20
        if upload.content_type not in SUPPORTED_FORMATS:
            raise UnsupportedMediaType(upload.content_type, SUPPORTED_FORMATS)
        if upload.content_length is None:
            raise LengthRequired()
        if upload.content_length > max_packed:
            raise UploadTooLarge("packed", self._settings.max_packed_size_mib)
        with self._ledger.reserve(upload.content_length) as reservation:
            self._require_space(upload.content_length, reservation)
            if upload.task_type not in (None, "", COREDUMP_TASK_TYPE):
                raise TaskTypeRejected(upload.task_type)
            return self._receive(upload, upload.content_length, reservation, validate)

    def _receive(
        self,
        upload: Upload,
        length: int,
        reservation: Reservation,
        validate: Validate | None,
    ) -> Received:
        token = secrets.token_hex(16)
        folder = self._incoming / token
        folder.mkdir(mode=0o700)

        def consume(reader: IO[bytes]) -> Unpacked:
            unpacked = self._unpack(reader, folder / "crash", reservation)
            if validate is not None:
                validate(folder / "crash")
            return unpacked

        try:
            unpacked = self._pump(upload.stream, length, consume)
            fsync_path(folder)
        except OSError as error:
            _remove_tree(folder)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage() from error
            raise
        except BaseException:
            _remove_tree(folder)
            raise
        return Received(token, length, unpacked.total_bytes, unpacked.members, unpacked.core_sha256)

    def admit(self, token: str, task_id: str) -> bool:
        """Move a received upload to its task's folder; False if that folder exists."""
        try:
            os.rename(self._incoming / token, self._tasks / task_id)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise
        fsync_path(self._tasks)
        fsync_path(self._incoming)
        return True

    def discard(self, token: str) -> None:
        _remove_tree(self._incoming / token)

    def sweep_incoming(self, older_than_seconds: float, now: float | None = None) -> int:
        """Remove uploads abandoned by a crash mid-way; returns how many.

        An upload counts as abandoned when nothing in its folder changed for
        ``older_than_seconds``: a slow upload that is still arriving keeps writing its
        files, so only the top folder's age would sweep it mid-flight.
        """
        cutoff = (time.time() if now is None else now) - older_than_seconds
        removed = 0
        for folder in self._incoming.iterdir():
            try:
                if _last_change(folder) < cutoff:
                    _remove_tree(folder)
                    removed += 1
            except FileNotFoundError:
                continue  # admitted or discarded meanwhile
        return removed

    def _require_space(self, incoming_bytes: int, reservation: Reservation | None) -> None:
        """507 unless ``incoming_bytes`` more, on top of what other uploads in flight
        have reserved, leave ``min_free_space_mib`` free."""
        usage = os.statvfs(self.root)
        free = usage.f_bavail * usage.f_frsize
        if reservation is not None:
            free -= reservation.reserved_by_others()
        if free - incoming_bytes < self._settings.min_free_space_mib << 20:
            raise InsufficientStorage()

    def _unpack(self, raw: IO[bytes], crash: Path, reservation: Reservation) -> Unpacked:
        """Unpack into ``crash``, each member first reserving its bytes on the disk.

        Raises:
            ArchiveRejected, UploadTooLarge, UnpackFailed (the format's refusals, as
            the server reports them), InsufficientStorage.
        """
        limits = UnpackLimits(
            self._settings.max_unpacked_size_mib, self._settings.xz_memory_limit_mib
        )

        def require_space(size: int) -> None:
            reservation.resize(size)
            self._require_space(size, reservation)

        try:
            return unpack_problem(raw, crash, limits, require_space)
        except ArchiveError as error:
            raise upload_refusal(error) from error

    # Task files

    def problem_dir(self, task_id: str) -> Path:
        return self._tasks / task_id / "crash"

    def task_ids(self) -> set[str]:
        return {folder.name for folder in self._tasks.iterdir()}

    def append_log(self, task_id: str, line: str) -> None:
        self._require_writable(task_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
        fd = os.open(self._tasks / task_id / "log", flags, 0o600)
        try:
            write_all(fd, (line.rstrip("\n") + "\n").encode())
        finally:
            os.close(fd)

    def write_result(self, task_id: str, name: str, text: str) -> None:
        """Write one result file atomically and durably (temporary file, fsync, rename)."""
        self._require_writable(task_id)
        write_durably(self._tasks / task_id / name, text.encode())

    def read(self, task_id: str, name: str) -> str | None:
        """A task file's text (``log``, ``backtrace``...), or None if it does not exist."""
        try:
            fd = os.open(self._tasks / task_id / name, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as file:
            return file.read().decode(errors="replace")

    def remove_core(self, task_id: str) -> None:
        self._require_writable(task_id)
        (self.problem_dir(task_id) / CORE).unlink(missing_ok=True)
        fsync_path(self.problem_dir(task_id))

    def seal(self, task_id: str) -> None:
        """Make a finished task's files read-only; writers here refuse it from now on."""
        folder = self._tasks / task_id
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_file() and not path.is_symlink():
                path.chmod(0o400)
            elif path.is_dir():
                path.chmod(0o500)
        folder.chmod(0o500)

    def is_sealed(self, task_id: str) -> bool:
        return not (self._tasks / task_id).stat().st_mode & stat.S_IWUSR

    def remove(self, task_id: str) -> None:
        """Delete a task's folder (expiry); sealed folders are unsealed first."""
        _remove_tree(self._tasks / task_id)

    def _require_writable(self, task_id: str) -> None:
        if self.is_sealed(task_id):
            raise TaskSealed(task_id)


def read_in_place(stream: IO[bytes], length: int, consume: Callable[[IO[bytes]], T]) -> T:
    """The simplest pump: ``consume`` reads the stream itself, in this thread."""
    return consume(cast(IO[bytes], _Exactly(stream, length)))


class _Exactly:
    """``length`` bytes of ``source``; UploadIncomplete if it ends sooner."""

    def __init__(self, source: IO[bytes], length: int) -> None:
        self._source = source
        self._left = length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        data = self._source.read(wanted)
        if not data:
            raise UploadIncomplete(0, self._left)
        self._left -= len(data)
        return data


def _last_change(folder: Path) -> float:
    """The newest modification time of a folder and everything in it."""
    newest = folder.lstat().st_mtime
    for entry in folder.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            newest = max(newest, entry.lstat().st_mtime)
    return newest


def _remove_tree(path: Path) -> None:
    """Delete a folder, also when sealed (root ignores the mode, other users do not)."""
    if not path.exists():
        return
    for folder in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
        folder.chmod(0o700)
    shutil.rmtree(path)
