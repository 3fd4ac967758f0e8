"""Build upload archives for the tests: ABRT-shaped ones and hostile ones."""

from __future__ import annotations

import gzip
import io
import lzma
import struct
import tarfile
from dataclasses import dataclass


def elf_core(machine: int = 62, elf_class: int = 2, size: int = 4096, **fields: int) -> bytes:
    """The head of an ELF core: a header and one PT_NOTE segment, padded to ``size``.

    Enough for the upload check (which reads no further); ``fields`` override
    ``e_type``, ``phentsize``, ``phnum`` and ``phoff`` to build hostile ones.
    """
    e_type = fields.get("e_type", 4)
    if elf_class == 2:
        header_size, entry = 64, struct.pack("<IIQQQQQQ", 4, 0, 0x200, 0, 0, 0x100, 0, 4)
        layout = "<HHIQQQIHHHHHH"
    else:
        header_size, entry = 52, struct.pack("<IIIIIIII", 4, 0x200, 0, 0, 0x100, 0, 0, 4)
        layout = "<HHIIIIIHHHHHH"
    phentsize = fields.get("phentsize", len(entry))
    phnum = fields.get("phnum", 1)
    phoff = fields.get("phoff", header_size)
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        layout, e_type, machine, 1, 0, phoff, 0, 0, header_size, phentsize, phnum, 0, 0, 0
    )
    return (header + entry).ljust(size, b"\0")


PROBLEM = {
    "coredump": elf_core(),
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
