"""The spool: where uploads land, are checked and unpacked, and where tasks keep files.

This is the only module that touches the spool directory. Its layout::

    <data_dir>/spool/incoming/<token>/upload      the packed upload, while it arrives
    <data_dir>/spool/incoming/<token>/crash/      the problem files, while they unpack
    <data_dir>/spool/tasks/<id>/crash/            an admitted task's problem files
    <data_dir>/spool/tasks/<id>/log               what the retrace printed
    <data_dir>/spool/tasks/<id>/backtrace         the results (see RESULT_FILES)

An upload unpacks as it arrives (see :mod:`retracer.server.archive`) behind a running
cap on the unpacked bytes, so neither a 4 GiB core nor an xz bomb needs memory in
proportion. Every member is checked before a byte of it is written: a regular file
with a bare, known name, at most once, under its own size cap. Files are created with
``O_EXCL | O_NOFOLLOW`` relative to the directory's file descriptor, so nothing can
land outside it. Anything refused leaves nothing behind.

A finished task is sealed (files and directories lose their write bits) and every
writer here refuses a sealed task.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import shutil
import stat
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from retracer.builder.problem import TEXT_FILE_LIMITS
from retracer.server.archive import CORRUPT, TarStream, describe, open_tar, write_all
from retracer.server.config import ServerSettings
from retracer.server.errors import (
    ArchiveRejected,
    InsufficientStorage,
    LengthRequired,
    TaskSealed,
    TaskTypeRejected,
    UnpackFailed,
    UnsupportedMediaType,
    UploadIncomplete,
    UploadTooLarge,
)
from retracer.server.reservations import Reservation, UploadLedger

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

# The problem files a coredump task may carry, and each one's size cap in bytes
# (None: only the total unpacked cap applies).
MEMBER_LIMITS: dict[str, int | None] = {
    "coredump": None,
    **{
        name: TEXT_FILE_LIMITS[name]
        for name in (
            "executable",
            "package",
            "os_release",
            "rootdir",
            "os_release_in_rootdir",
            "packages",
        )
    },
}
REQUIRED_MEMBERS = ("coredump",)
CORE = "coredump"
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

        def consume(reader: IO[bytes]) -> tuple[tuple[str, ...], int, str | None]:
            unpacked = self.unpack(reader, folder / "crash", reservation)
            if validate is not None:
                validate(folder / "crash")
            return unpacked

        try:
            members, unpacked, core_sha256 = self._pump(upload.stream, length, consume)
            _fsync_dir(folder)
        except OSError as error:
            _remove_tree(folder)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage() from error
            raise
        except BaseException:
            _remove_tree(folder)
            raise
        return Received(token, length, unpacked, members, core_sha256)

    def admit(self, token: str, task_id: str) -> bool:
        """Move a received upload to its task's folder; False if that folder exists."""
        try:
            os.rename(self._incoming / token, self._tasks / task_id)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise
        _fsync_dir(self._tasks)
        _fsync_dir(self._incoming)
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

    def unpack(
        self, raw: IO[bytes], crash: Path, reservation: Reservation | None = None
    ) -> tuple[tuple[str, ...], int, str | None]:
        """Unpack the archive read from ``raw`` into the new folder ``crash``.

        Returns the member names, the unpacked bytes and the core's SHA-256.

        Raises:
            ArchiveRejected, UploadTooLarge, InsufficientStorage, UnpackFailed.
        """
        cap_mib = self._settings.max_unpacked_size_mib

        def require_space(size: int) -> None:
            if reservation is not None:
                reservation.resize(size)
            self._require_space(size, reservation)

        crash.mkdir(mode=0o700)
        dir_fd = os.open(crash, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            members = _Extractor(dir_fd, cap_mib << 20, self._settings, require_space)
            try:
                # Headers and padding come on top of the members' bytes.
                stream = open_tar(
                    raw, (cap_mib + 1) << 20, cap_mib, self._settings.xz_memory_limit_mib
                )
                for member in stream.members():
                    members.extract(stream, member)
                stream.drain()
            except CORRUPT as error:
                raise UnpackFailed(describe(error)) from error
            except RecursionError:
                # Without the traceback: thousands of frames help nobody.
                raise UnpackFailed("its headers nest too deeply") from None
            members.finish()
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return members.names, members.total, members.core_sha256

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
        folder = self._tasks / task_id
        temporary = folder / f".{name}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            write_all(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, folder / name)
        _fsync_dir(folder)

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
        _fsync_dir(self.problem_dir(task_id))

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


class _Extractor:
    """Checks each archive member and writes the accepted ones into one directory."""

    def __init__(
        self,
        dir_fd: int,
        cap: int,
        settings: ServerSettings,
        require_space: Callable[[int], None],
    ) -> None:
        self._dir_fd = dir_fd
        self._cap = cap
        self._settings = settings
        self._require_space = require_space
        self._seen: list[str] = []
        self.total = 0
        self.core_sha256: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._seen)

    def extract(self, stream: TarStream, member: tarfile.TarInfo) -> None:
        self._check(member)
        self._seen.append(member.name)
        self.total += member.size
        if self.total > self._cap:
            raise UploadTooLarge("unpacked", self._settings.max_unpacked_size_mib)
        self._require_space(member.size)
        # The core is read back as it is written, to hash the bytes splice moved.
        access = os.O_RDWR if member.name == CORE else os.O_WRONLY
        flags = access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(member.name, flags, 0o600, dir_fd=self._dir_fd)
        try:
            if member.name == CORE:
                # gdb reads the core as the sandbox's unprivileged user, bind-mounted
                # from here; the task's private folders keep everyone else out. (Not
                # readable, every retrace would first copy the core.)
                os.fchmod(fd, 0o644)
            digest = hashlib.sha256() if member.name == CORE else None
            if stream.copy_to(fd, member, digest) != member.size:
                raise UnpackFailed(f"the member {member.name!r} is truncated")
            if digest is not None:
                self.core_sha256 = digest.hexdigest()
            os.fsync(fd)
        finally:
            os.close(fd)

    def finish(self) -> None:
        for name in REQUIRED_MEMBERS:
            if name not in self._seen:
                raise ArchiveRejected(name, "is missing")

    def _check(self, member: tarfile.TarInfo) -> None:
        name = member.name
        if name.startswith("/"):
            raise ArchiveRejected(name, "is an absolute path")
        if "/" in name or name in ("", ".", ".."):
            raise ArchiveRejected(name, "is not a bare file name")
        kind = _kind(member)
        if kind:
            raise ArchiveRejected(name, f"is {kind}; only regular files are accepted")
        if name not in MEMBER_LIMITS:
            known = ", ".join(MEMBER_LIMITS)
            raise ArchiveRejected(name, f"is not a known problem file (known: {known})")
        if name in self._seen:
            raise ArchiveRejected(name, "appears twice")
        limit = MEMBER_LIMITS[name]
        if limit is not None and member.size > limit:
            raise ArchiveRejected(name, f"is larger than its {limit}-byte limit")


def _kind(member: tarfile.TarInfo) -> str | None:
    """What a non-regular member is, in words; None for a plain regular file."""
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
        # pax can describe a sparse file with a regular type; its data is a map, not bytes.
        return "a sparse file" if member.sparse is not None else None
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.isdir():
        return "a directory"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a fifo"
    return "not a regular file"


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    """Delete a folder, also when sealed (root ignores the mode, other users do not)."""
    if not path.exists():
        return
    for folder in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
        folder.chmod(0o700)
    shutil.rmtree(path)
