"""The few facts read from a core's ELF header on the host.

Cores are untrusted, so the host reads only the fixed-size ELF header and the
program header table: enough to reject what is not a core, to learn the
architecture (which picks the release; ABRT does not upload its `architecture`
file) and to check that every segment lies inside the file. Every read is bounded:
the table must use the standard entry size of its class and hold at most
``MAX_PROGRAM_HEADERS`` entries, and it is read in chunks, so no field of the file
decides how much the host reads at once. Everything deeper (notes, mapped modules,
build-ids) is read inside the sandbox.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from retracer.builder.errors import CoreRejected

_ELF_MAGIC = b"\x7fELF"
_ET_CORE = 4
_PT_NOTE = 4
# Real cores carry a few MiB of notes at most; more is a hostile or broken file.
_MAX_NOTES = 64 * 1024 * 1024
# One entry per mapping; 0xffff (PN_XNUM) would move the count elsewhere, which no
# core ABRT sends needs, so the largest plain count is the cap.
MAX_PROGRAM_HEADERS = 0xFFFE
_HEADER_SIZE = {1: 52, 2: 64}  # by EI_CLASS: 32-bit, 64-bit
_ENTRY_SIZE = {1: 32, 2: 56}  # Elf32_Phdr, Elf64_Phdr
_ENTRIES_PER_READ = 4096
# e_machine values and the rpm arch names of the releases retracer serves.
_ARCHES = {3: "i386", 62: "x86_64", 183: "aarch64", 21: "ppc64le", 22: "s390x", 243: "riscv64"}


@dataclass(frozen=True)
class CoreHeader:
    arch: str
    size: int
    program_headers: int


def read_core_header(path: Path) -> CoreHeader:
    """Check that ``path`` looks like an ELF core and return its architecture.

    Raises:
        CoreRejected: the file is empty, not ELF, not a core, of an unknown
            architecture, has a non-standard or oversized program header table, or
            is shorter than its segments.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            return _read(file, size)
    except OSError as error:
        raise CoreRejected(f"it cannot be read ({error.strerror})") from error


def _read(file: BinaryIO, size: int) -> CoreHeader:
    head = file.read(64)
    if not head:
        raise CoreRejected("it is empty")
    if head[:4] != _ELF_MAGIC:
        raise CoreRejected("it is not an ELF file")
    if len(head) < 20:
        raise CoreRejected("it is truncated inside the ELF header")
    elf_class, data = head[4], head[5]
    if elf_class not in _HEADER_SIZE or data not in (1, 2):
        raise CoreRejected("its ELF header is malformed")
    if len(head) < _HEADER_SIZE[elf_class]:
        raise CoreRejected("it is truncated inside the ELF header")
    order = "<" if data == 1 else ">"
    e_type, e_machine = struct.unpack_from(order + "HH", head, 16)
    if e_type != _ET_CORE:
        raise CoreRejected("it is an ELF file but not a core dump")
    if e_machine not in _ARCHES:
        raise CoreRejected(f"its machine type {e_machine} is not supported")
    arch = _ARCHES[e_machine]
    if elf_class == 1 and arch == "x86_64":
        arch = "i386"  # x32 cores: treat like ABRT does, as i386
    if elf_class == 2:
        (phoff,) = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    else:
        (phoff,) = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    if phnum == 0:
        raise CoreRejected("it has no program headers")
    if phentsize != _ENTRY_SIZE[elf_class]:
        raise CoreRejected(
            f"its program headers are {phentsize} bytes each, not the standard"
            f" {_ENTRY_SIZE[elf_class]}"
        )
    if phnum > MAX_PROGRAM_HEADERS:
        raise CoreRejected(f"it has more than {MAX_PROGRAM_HEADERS} program headers")
    if phoff + phentsize * phnum > size:
        raise CoreRejected("it is truncated: its program headers run past the end of the file")
    _check_segments(file, phoff, phnum, order, elf_class, size)
    return CoreHeader(arch=arch, size=size, program_headers=phnum)


def _check_segments(
    file: BinaryIO, offset: int, count: int, order: str, elf_class: int, size: int
) -> None:
    """Every segment's bytes must lie inside the file, and the notes must be of sane size."""
    # (p_type, p_offset, p_filesz) positions differ between 32- and 64-bit headers.
    layout = struct.Struct((order + "I4xQ8x8xQ16x") if elf_class == 2 else (order + "II8xI12x"))
    assert layout.size == _ENTRY_SIZE[elf_class]
    file.seek(offset)
    notes = 0
    for first in range(0, count, _ENTRIES_PER_READ):
        entries = min(_ENTRIES_PER_READ, count - first)
        chunk = file.read(entries * layout.size)
        if len(chunk) < entries * layout.size:
            raise CoreRejected("it is truncated: its program headers run past the end of the file")
        for index, (p_type, p_offset, filesz) in enumerate(layout.iter_unpack(chunk), first):
            if p_offset + filesz > size:
                raise CoreRejected(
                    f"it is truncated: segment {index} runs past the end of the file"
                )
            if p_type == _PT_NOTE:
                notes += filesz
    if notes > _MAX_NOTES:
        raise CoreRejected(f"its notes are implausibly large ({notes} bytes)")
