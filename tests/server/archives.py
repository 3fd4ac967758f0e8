"""Build upload archives for the tests: ABRT-shaped ones and hostile ones."""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from dataclasses import dataclass

PROBLEM = {
    "coredump": b"\x7fELF" + b"\0" * 4092,
    "executable": b"/usr/bin/crasher",
    "package": b"crasher-1.0-1",
    "os_release": b"TestOS release 1 (Demo)",
}


@dataclass(frozen=True)
class Member:
    """One tar entry; ``kind`` is a tarfile type (REGTYPE, SYMTYPE, ...)."""

    name: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    link: str = ""


def regular(files: dict[str, bytes] | None = None) -> list[Member]:
    return [Member(name, data) for name, data in (files or PROBLEM).items()]


def tar(members: list[Member], format: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.kind
            info.linkname = member.link
            info.mode = 0o644
            if member.kind == tarfile.REGTYPE:
                info.size = len(member.data)
                archive.addfile(info, io.BytesIO(member.data))
            else:
                archive.addfile(info)
    return buffer.getvalue()


def xz(data: bytes) -> bytes:
    """What abrt-retrace-client sends: ``xz -2``."""
    return lzma.compress(data, preset=2)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


def abrt_archive(files: dict[str, bytes] | None = None) -> bytes:
    return xz(tar(regular(files)))


def xz_bomb(unpacked_mib: int) -> bytes:
    """A small xz archive whose coredump unpacks to ``unpacked_mib`` MiB of zeros, streamed."""
    compressor = lzma.LZMACompressor(preset=2)
    parts = []
    header = tarfile.TarInfo("coredump")
    header.size = unpacked_mib << 20
    parts.append(compressor.compress(header.tobuf(tarfile.GNU_FORMAT)))
    zeros = bytes(1 << 20)
    for _ in range(unpacked_mib):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.compress(bytes(1024)))
    parts.append(compressor.flush())
    return b"".join(parts)
