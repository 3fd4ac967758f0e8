"""The few facts read from a core's ELF header on the host.

Cores are untrusted, so the host reads only the fixed-size ELF header: enough to
reject what is not a core and to learn the architecture, which picks the release
(ABRT does not upload its `architecture` file). Everything deeper (notes, mapped
modules, build-ids) is read inside the sandbox.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from retracer.builder.errors import CoreRejected

_ELF_MAGIC = b"\x7fELF"
_ET_CORE = 4
_PT_NOTE = 4
# Real cores carry a few MiB of notes at most; more is a hostile or broken file.
_MAX_NOTES = 64 * 1024 * 1024
_HEADER_SIZE = {1: 52, 2: 64}  # by EI_CLASS: 32-bit, 64-bit
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
            architecture, or shorter than its program header table.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(64)
    except OSError as error:
        raise CoreRejected(f"it cannot be read ({error.strerror})") from error
    if not head:
        raise CoreRejected("it is empty")
    if head[:4] != _ELF_MAGIC:
        raise CoreRejected("it is not an ELF file")
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
        phoff, phentsize, phnum = (
            struct.unpack_from(order + "Q", head, 32)[0],
            *struct.unpack_from(order + "HH", head, 54),
        )
    else:
        phoff, phentsize, phnum = (
            struct.unpack_from(order + "I", head, 28)[0],
            *struct.unpack_from(order + "HH", head, 42),
        )
    if phnum == 0:
        raise CoreRejected("it has no program headers")
    if phoff + phentsize * phnum > size:
        raise CoreRejected("it is truncated: its program headers run past the end of the file")
    with path.open("rb") as file:
        file.seek(phoff)
        table = file.read(phentsize * phnum)
    _check_segments(table, phentsize, phnum, order, elf_class, size)
    return CoreHeader(arch=arch, size=size, program_headers=phnum)


def _check_segments(
    table: bytes, entry_size: int, count: int, order: str, elf_class: int, size: int
) -> None:
    """Every segment's bytes must lie inside the file, and the notes must be of sane size."""
    # (p_type, p_offset, p_filesz) positions differ between 32- and 64-bit headers.
    layout = (order + "I4xQ8x8xQ") if elf_class == 2 else (order + "II8xI")
    needed = struct.calcsize(layout)
    if entry_size < needed:
        raise CoreRejected("its program headers are malformed")
    notes = 0
    for index in range(count):
        p_type, offset, filesz = struct.unpack_from(layout, table, index * entry_size)
        if offset + filesz > size:
            raise CoreRejected(f"it is truncated: segment {index} runs past the end of the file")
        if p_type == _PT_NOTE:
            notes += filesz
    if notes > _MAX_NOTES:
        raise CoreRejected(f"its notes are implausibly large ({notes} bytes)")
