"""Read one file out of an RPM's payload: the only code that reads RPM payloads.

python3-rpm reads the header (the file list, with each symlink's target) and then
streams the compressed cpio payload, member by member, without unpacking the rest
anywhere. Symlinks are followed inside the package only: a link whose target the
package does not ship, or that leaves it, finds nothing.
"""

from __future__ import annotations

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
