"""Read an RPM's payload: the only code that reads RPM payloads.

python3-rpm reads the header (the file list, with each symlink's target) and then
streams the compressed cpio payload, member by member. :func:`extract_member`
copies out one file without unpacking the rest anywhere; symlinks are followed
inside the package only: a link whose target the package does not ship, or that
leaves it, finds nothing. :func:`unpack_payload` writes every member into an empty
folder, the way ``rpm -i --noscripts`` would lay them out under a root, and nothing
outside it: no scriptlet runs, and no member is written through a link.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import rpm

from retracer.sync.errors import PayloadUnreadable

_CHUNK = 1 << 20
# Fedora's build-id links take two hops (.build-id/xx/yy.debug -> ../../usr/bin/x.debug).
_MAX_LINK_HOPS = 8


# Every file of an unpacked package is readable by the sandbox's unprivileged user,
# and nobody writes to it again.
_FILE_MODE = 0o444
_EXECUTABLE_MODE = 0o555
_DIRECTORY_MODE = 0o755


@dataclass(frozen=True)
class UnpackedPayload:
    """What :func:`unpack_payload` wrote: members and bytes of regular files."""

    files: int
    bytes: int


@dataclass(frozen=True)
class ExtractedMember:
    """What was copied: the regular file's path inside the package and its size."""

    path: str
    size: int


def extract_member(package: Path, member: str, target: IO[bytes]) -> ExtractedMember | None:
    """Copy the regular file ``member`` names (following links) into ``target``.

    Returns None when the package ships no such file, or a link leads out of it.

    Raises:
        PayloadUnreadable: the file is not a readable RPM, or its payload is corrupt.
    """
    try:
        fd = rpm.fd.open(str(package), "r")
    except (rpm.error, OSError) as error:
        raise PayloadUnreadable(str(package), str(error).strip() or type(error).__name__) from error
    try:
        return _extract(fd, member, target)
    except (rpm.error, OSError) as error:
        raise PayloadUnreadable(str(package), str(error).strip() or type(error).__name__) from error
    finally:
        fd.close()


def _extract(fd: rpm.fd, member: str, target: IO[bytes]) -> ExtractedMember | None:
    header = _transaction().hdrFromFdno(fd)
    files = rpm.files(header)
    entries = {entry.name: entry for entry in files}
    resolved = _resolve(entries, member)
    if resolved is None:
        return None
    payload = rpm.fd(fd, "r", header["payloadcompressor"] or "gzip")
    archive = files.archive(payload, write=False)
    for entry in archive:
        if entry.name != resolved:
            continue
        if not archive.hascontent():
            # A hard link's data travel with the last of its names.
            return _copy_hardlinked(archive, entries, entry, target)
        return ExtractedMember(resolved, _copy(archive, target))
    return None


def _transaction() -> rpm.TransactionSet:
    ts = rpm.TransactionSet()
    # Signatures are the sync's business (sync/signatures.py); this only reads files.
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    return ts


def _resolve(entries: dict[str, rpm.file], member: str) -> str | None:
    path = member
    for _ in range(_MAX_LINK_HOPS):
        entry = entries.get(path)
        if entry is None:
            return None
        if stat.S_ISREG(entry.mode):
            return path
        if not stat.S_ISLNK(entry.mode):
            return None
        target = entry.linkto
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return None


def _copy(archive: rpm.archive, target: IO[bytes]) -> int:
    copied = 0
    while chunk := archive.read(_CHUNK):
        target.write(chunk)
        copied += len(chunk)
    return copied


def _copy_hardlinked(
    archive: rpm.archive, entries: dict[str, rpm.file], wanted: rpm.file, target: IO[bytes]
) -> ExtractedMember | None:
    names = {
        name for name, e in entries.items() if (e.inode, e.fflags) == (wanted.inode, wanted.fflags)
    }
    for entry in archive:
        if entry.name in names and archive.hascontent():
            return ExtractedMember(wanted.name, _copy(archive, target))
    return None


def unpack_payload(package: Path, root: Path) -> UnpackedPayload:
    """Write every member of ``package`` under the empty folder ``root``.

    Regular files become read-only, hard links stay hard links, symlinks are written
    as they are (relative ones resolve inside ``root``). A member whose path climbs
    out of ``root`` or passes through one of the package's own symlinks is refused.

    Raises:
        PayloadUnreadable: the file is not a readable RPM, its payload is corrupt, or
            a member would land outside ``root``.
    """
    try:
        fd = rpm.fd.open(str(package), "r")
    except (rpm.error, OSError) as error:
        raise PayloadUnreadable(str(package), str(error).strip() or type(error).__name__) from error
    try:
        return _Unpacker(root).unpack(fd)
    except _Escape as error:
        why = f"member {error} would land outside its tree"
        raise PayloadUnreadable(str(package), why) from None
    except (rpm.error, OSError) as error:
        raise PayloadUnreadable(str(package), str(error).strip() or type(error).__name__) from error
    finally:
        fd.close()


class _Escape(Exception):
    pass


class _Unpacker:
    def __init__(self, root: Path) -> None:
        self.root = str(root)
        # Folders this unpack made (relative paths): only through these may a member go.
        self._folders = {""}
        self._files = 0
        self._bytes = 0

    def unpack(self, fd: rpm.fd) -> UnpackedPayload:
        header = _transaction().hdrFromFdno(fd)
        files = rpm.files(header)
        # Hard-linked names: the cpio data travel with the last of them.
        links: dict[tuple[int, int], list[str]] = {}
        for entry in files:
            if stat.S_ISREG(entry.mode) and entry.nlink > 1:
                links.setdefault((entry.inode, entry.fflags), []).append(entry.name)
        payload = rpm.fd(fd, "r", header["payloadcompressor"] or "gzip")
        archive = files.archive(payload, write=False)
        for entry in archive:
            try:
                self._member(archive, entry, links)
            except _Escape:
                raise _Escape(entry.name) from None
        return UnpackedPayload(self._files, self._bytes)

    def _member(
        self, archive: rpm.archive, entry: rpm.file, links: dict[tuple[int, int], list[str]]
    ) -> None:
        relative = self._relative(entry.name)
        mode = entry.mode
        if stat.S_ISDIR(mode):
            self._folder(relative)
        elif stat.S_ISLNK(mode):
            self._parent(relative)
            os.symlink(entry.linkto, self._path(relative))
        elif stat.S_ISREG(mode):
            self._parent(relative)
            if archive.hascontent():
                self._write(archive, relative, mode)
                self._link_siblings(links.get((entry.inode, entry.fflags), []), relative)
        # Devices, fifos and sockets are of no use to gdb, and are not made.

    def _relative(self, name: str) -> str:
        relative = posixpath.normpath("/" + name).lstrip("/")
        if relative in ("", ".") or relative.startswith("..") or name != "/" + relative:
            raise _Escape(name)
        return relative

    def _path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def _parent(self, relative: str) -> None:
        self._folder(posixpath.dirname(relative))

    def _folder(self, relative: str) -> None:
        if relative in self._folders:
            return
        self._parent(relative)
        path = self._path(relative)
        try:
            os.mkdir(path, _DIRECTORY_MODE)
        except FileExistsError:
            # Only a folder this unpack made will do; a symlink there would lead out.
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise _Escape("/" + relative) from None
        self._folders.add(relative)

    def _write(self, archive: rpm.archive, relative: str, mode: int) -> None:
        final = _EXECUTABLE_MODE if mode & 0o111 else _FILE_MODE
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(self._path(relative), flags, 0o600)
        with os.fdopen(descriptor, "wb") as target:
            self._bytes += _copy(archive, target)
            os.fchmod(target.fileno(), final)
        self._files += 1

    def _link_siblings(self, names: list[str], written: str) -> None:
        for name in names:
            relative = self._relative(name)
            if relative == written:
                continue
            self._parent(relative)
            os.link(self._path(written), self._path(relative), follow_symlinks=False)
            self._files += 1
