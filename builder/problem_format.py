"""The ABRT problem format: which files a crash carries, their caps, their text rules,
and how the archive ABRT uploads is unpacked safely.

One module owns these rules, so the HTTP upload, ``retracer retrace ARCHIVE`` and
:func:`retracer.builder.problem.read_problem` cannot drift apart.

Unpacking reads the archive once, front to back (see :mod:`retracer.builder.archive`
for the stream and its caps), and checks every member before a byte of it is
written: a regular file with a bare, known name, at most once, under its own size
cap. Files are created with ``O_EXCL | O_NOFOLLOW`` relative to the directory's file
descriptor, so nothing can land outside it. What refuses an archive is an
:class:`~retracer.builder.errors.ArchiveError`; the caller removes the directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retracer.builder.archive import CORRUPT, Readable, TarStream, describe, open_tar
from retracer.builder.errors import (
    ArchiveTooLarge,
    ArchiveUnreadable,
    MemberRejected,
    ProblemRejected,
)

CORE = "coredump"
# The caps the original retrace server put on ABRT's small text files, in bytes.
TEXT_FILE_LIMITS = {
    "executable": 512,
    "package": 128,
    "os_release": 128,
    "rootdir": 256,
    "os_release_in_rootdir": 128,
    "os_info": 8192,
    "os_info_in_rootdir": 8192,
    "packages": 65536,
}
# What abrt-retrace-client packs: these always, the next ones when the crash has them.
PACKED_MEMBERS = (CORE, "executable", "package", "os_release")
PACKED_IF_PRESENT = ("rootdir", "os_release_in_rootdir")
# The files an uploaded archive may carry, each with its size cap in bytes (None: only
# the cap on the whole unpacked archive applies).
ARCHIVE_MEMBER_LIMITS: dict[str, int | None] = {
    CORE: None,
    **{name: TEXT_FILE_LIMITS[name] for name in (*PACKED_MEMBERS[1:], *PACKED_IF_PRESENT)},
    "packages": TEXT_FILE_LIMITS["packages"],
}
REQUIRED_ARCHIVE_MEMBERS = (CORE,)

# Printable characters only: no C0 or C1 controls (terminal escapes start with ESC or
# CSI), no line or paragraph separators, no bidirectional overrides.
_PRINTABLE_LINE = re.compile(r"^[\x20-\x7e\u00a0-\u2027\u202f-\u2065\u206a-\ufffd]*$")


# The text rules


def read_line(directory: Path, member: str) -> str:
    """A text file that must hold one line of printable text, stripped.

    Raises:
        ProblemRejected: the file is missing, over its cap, not UTF-8, or not one line.
    """
    text = _read_text(directory, member)
    if not text or "\n" in text or not _PRINTABLE_LINE.match(text):
        raise ProblemRejected(member, "must hold one line of printable text")
    return text


def read_lines(directory: Path, member: str) -> list[str]:
    """A text file of printable lines (``packages``); raises ProblemRejected otherwise."""
    lines = _read_text(directory, member).splitlines()
    if not all(_PRINTABLE_LINE.match(line) for line in lines):
        raise ProblemRejected(member, "must hold lines of printable text")
    return lines


def read_os_info(directory: Path, member: str) -> dict[str, str]:
    """An os-release file's fields; empty when it is missing or over its cap (optional)."""
    path = directory / member
    if not path.is_file() or path.stat().st_size > TEXT_FILE_LIMITS[member]:
        return {}
    fields = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def _read_text(directory: Path, member: str) -> str:
    """A small text file, stripped; read no further than its cap."""
    path = directory / member
    if not path.is_file():
        raise ProblemRejected(member, "is missing")
    limit = TEXT_FILE_LIMITS[member]
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ProblemRejected(member, f"is longer than {limit} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as error:
        raise ProblemRejected(member, "is not UTF-8 text") from error


# Unpacking


@dataclass(frozen=True)
class UnpackLimits:
    """The caps on one archive: its unpacked bytes, and the xz decoder's memory."""

    max_unpacked_mib: int
    xz_memory_limit_mib: int


@dataclass(frozen=True)
class Unpacked:
    """What :func:`unpack_problem` wrote."""

    members: tuple[str, ...]
    total_bytes: int
    # SHA-256 of the core, hashed as it was written: identical cores share a result.
    core_sha256: str | None


def unpack_problem(
    raw: Readable,
    target: Path,
    limits: UnpackLimits,
    require_space: Callable[[int], None] = lambda size: None,
) -> Unpacked:
    """Unpack the archive read from ``raw`` into the new directory ``target``.

    ``require_space(size)`` runs before each member of ``size`` bytes is written, and
    raises to refuse the archive (the server's check for free disk space).

    Raises:
        MemberRejected, ArchiveTooLarge, ArchiveUnreadable, or what ``require_space``
        raises.
    """
    cap_mib = limits.max_unpacked_mib
    target.mkdir(mode=0o700)
    dir_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        extractor = _Extractor(dir_fd, cap_mib, require_space)
        try:
            # Headers and padding come on top of the members' bytes.
            stream = open_tar(raw, (cap_mib + 1) << 20, cap_mib, limits.xz_memory_limit_mib)
            for member in stream.members():
                extractor.extract(stream, member)
            stream.drain()
        except CORRUPT as error:
            raise ArchiveUnreadable(describe(error)) from error
        except RecursionError:
            # Without the traceback: thousands of frames help nobody.
            raise ArchiveUnreadable("its headers nest too deeply") from None
        extractor.finish()
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return Unpacked(extractor.names, extractor.total, extractor.core_sha256)


class _Extractor:
    """Checks each archive member and writes the accepted ones into one directory."""

    def __init__(self, dir_fd: int, cap_mib: int, require_space: Callable[[int], None]) -> None:
        self._dir_fd = dir_fd
        self._cap_mib = cap_mib
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
        if self.total > self._cap_mib << 20:
            raise ArchiveTooLarge(self._cap_mib)
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
                raise ArchiveUnreadable(f"the member {member.name!r} is truncated")
            if digest is not None:
                self.core_sha256 = digest.hexdigest()
            os.fsync(fd)
        finally:
            os.close(fd)

    def finish(self) -> None:
        for name in REQUIRED_ARCHIVE_MEMBERS:
            if name not in self._seen:
                raise MemberRejected(name, "is missing")

    def _check(self, member: tarfile.TarInfo) -> None:
        name = member.name
        if name.startswith("/"):
            raise MemberRejected(name, "is an absolute path")
        if "/" in name or name in ("", ".", ".."):
            raise MemberRejected(name, "is not a bare file name")
        kind = _kind(member)
        if kind:
            raise MemberRejected(name, f"is {kind}; only regular files are accepted")
        if name not in ARCHIVE_MEMBER_LIMITS:
            known = ", ".join(ARCHIVE_MEMBER_LIMITS)
            raise MemberRejected(name, f"is not a known problem file (known: {known})")
        if name in self._seen:
            raise MemberRejected(name, "appears twice")
        limit = ARCHIVE_MEMBER_LIMITS[name]
        if limit is not None and member.size > limit:
            raise MemberRejected(name, f"is larger than its {limit}-byte limit")


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
