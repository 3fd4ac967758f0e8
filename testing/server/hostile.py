"""A corpus of hostile uploads, one per trick, each with the answer it must get.

Every case is small (the whole corpus is a few MiB), so the answer must come within
a second; together with the tricks of ``HOSTILE`` below it covers archive
structure (paths, links, duplicates), headers that tarfile reads recursively or
into memory, numbers and sparse maps tarfile cannot parse, compression (bombs,
corruption, a huge xz dictionary, truncation) and the crash itself (the core's
header, the architecture, the release and the text files).
"""

from __future__ import annotations

import gzip
import lzma
import random
import struct
import tarfile
import zlib
from dataclasses import dataclass

from testing.server.archives import (
    PROBLEM,
    Member,
    abrt_archive,
    elf_core,
    regular,
    tar,
    xz,
    xz_bomb,
)

BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class Case:
    body: bytes
    status: int
    text: str


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n"
    length = len(body) + 1
    while len(f"{length}{body}") != length:
        length += 1
    return f"{length}{body}".encode()


def _chain(kind: bytes, payload: bytes, count: int) -> bytes:
    """``count`` extended headers of one kind in a row, then the usual members."""
    one = _header("././@Chain", kind, len(payload)) + _padded(payload)
    return one * count + tar(regular())


def pax_global_chain(count: int = 2000) -> bytes:
    return _chain(tarfile.XGLTYPE, _pax_record("comment", "x"), count)


def gnu_longname_chain(count: int = 2000) -> bytes:
    return _chain(tarfile.GNUTYPE_LONGNAME, b"coredump\0", count)


def bad_sparse_map() -> bytes:
    """A pax 1.0 sparse file whose map (at the start of its data) is not numbers."""
    info = tarfile.TarInfo("coredump")
    data = _padded(b"1\nnot-a-number\n4\n") + _padded(b"core")
    info.size = len(data)
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "coredump",
        "GNU.sparse.realsize": "4",
    }
    return info.tobuf(tarfile.PAX_FORMAT) + data + bytes(2 * BLOCK)


def negative_size() -> bytes:
    """A GNU base-256 size field holding -4096: tarfile would step backwards."""
    header = bytearray(_header("coredump", tarfile.REGTYPE, 4))
    header[124:136] = b"\xff" * 10 + b"\xf0\x00"
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + _padded(b"core") + tar(regular())


def garbled_size_field() -> bytes:
    """A ustar header whose size field is not octal, with a correct checksum."""
    header = bytearray(_header("coredump", tarfile.REGTYPE, 4))
    header[124:136] = b"zzzzzzzzzzz\0"
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + _padded(b"core") + bytes(2 * BLOCK)


def huge_xz_dictionary(zeros_mib: int = 0) -> bytes:
    """An xz stream whose block header declares a 4 GiB dictionary (LZMA2 property 40).

    A decoder without a memory limit keeps up to 4 GiB of output in that dictionary:
    with ``zeros_mib`` MiB of zeros in the core, it touches that much memory for an
    upload of a few KiB per 64 MiB.
    """
    members = regular({**PROBLEM, "coredump": elf_core(size=max(4096, zeros_mib << 20))})
    data = bytearray(lzma.compress(tar(members), preset=2))
    # Stream header (12 bytes), then the block header: size, flags, filter id 0x21,
    # property size 1, the property byte, padding, CRC32.
    size = (data[12] + 1) * 4
    block = data[12 : 12 + size]
    assert block[2:4] == b"\x21\x01"
    block[4] = 40
    block[-4:] = struct.pack("<I", zlib.crc32(bytes(block[:-4])))
    data[12 : 12 + size] = block
    return bytes(data)


def gzip_bomb(unpacked_mib: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    info = tarfile.TarInfo("coredump")
    info.size = unpacked_mib << 20
    parts = [compressor.compress(info.tobuf(tarfile.GNU_FORMAT))]
    zeros = bytes(1 << 20)
    parts += [compressor.compress(zeros) for _ in range(unpacked_mib)]
    parts.append(compressor.flush())
    return b"".join(parts)


def corrupt_gzip() -> bytes:
    data = bytearray(gzip.compress(tar(regular()), compresslevel=1))
    data[-8:-4] = bytes(4)  # the CRC32 of the content
    return bytes(data)


def crash(**files: bytes) -> bytes:
    return abrt_archive({**PROBLEM, **files})


def member(reason: str) -> str:
    return f"The archive member {reason}.\n"


SUPPORTED = "this server supports: testos-1-x86_64"

CORPUS: dict[str, Case] = {
    "pax global header chain": Case(
        xz(pax_global_chain()), 403, member("'(extended headers)' form a chain longer than 8")
    ),
    "GNU long-name chain": Case(
        xz(gnu_longname_chain()), 403, member("'(extended headers)' form a chain longer than 8")
    ),
    "plain tar long-name chain": Case(
        gnu_longname_chain(), 403, member("'(extended headers)' form a chain longer than 8")
    ),
    "bad sparse map": Case(
        xz(bad_sparse_map()),
        400,
        "The archive cannot be unpacked: a tar header holds an invalid number or sparse map.\n",
    ),
    "negative size": Case(
        xz(negative_size()),
        400,
        "The archive cannot be unpacked: the header of 'coredump' declares a negative size.\n",
    ),
    "garbled size field": Case(
        garbled_size_field(),
        400,
        "The archive cannot be unpacked: the data is corrupt (invalid header).\n",
    ),
    "huge xz dictionary": Case(
        huge_xz_dictionary(),
        400,
        "The archive cannot be unpacked: its xz stream needs more than this server's 80 MiB"
        " of decoder memory (compress with xz -6 or lower).\n",
    ),
    "gzip bomb": Case(
        gzip_bomb(64), 413, "The unpacked archive is larger than this server's 8 MiB limit.\n"
    ),
    "corrupt gzip": Case(
        corrupt_gzip(),
        400,
        "The archive cannot be unpacked: the data is corrupt (CRC check failed 0x0 != 0x",
    ),
    "core not ELF": Case(
        crash(coredump=b"MZ" + bytes(4094)),
        403,
        "The core cannot be used: it is not an ELF file.\n",
    ),
    "ELF but not a core": Case(
        crash(coredump=elf_core(e_type=2)),
        403,
        "The core cannot be used: it is an ELF file but not a core dump.\n",
    ),
    "huge program header table": Case(
        crash(coredump=elf_core(phentsize=0xFFFF, phnum=0xFFFF)),
        403,
        "The core cannot be used: its program headers are 65535 bytes each, not the standard 56.\n",
    ),
    "program headers past the end": Case(
        crash(coredump=elf_core(phnum=0xFFFE)),
        403,
        "The core cannot be used: it is truncated: its program headers run past the end"
        " of the file.\n",
    ),
    "unsupported machine": Case(
        crash(coredump=elf_core(machine=2)),
        403,
        "The core cannot be used: its machine type 2 is not supported.\n",
    ),
    "32-bit core, no i386 release": Case(
        crash(coredump=elf_core(machine=3, elf_class=1)),
        403,
        f"Unknown release 'testos-1-i386'; {SUPPORTED}.\n",
    ),
    "unknown release": Case(
        crash(os_release=b"Fedora release 41 (Forty One)"),
        403,
        f"Unknown release 'fedora-41-x86_64'; {SUPPORTED}.\n",
    ),
    "relative executable": Case(
        crash(executable=b"usr/bin/crasher"),
        403,
        "The problem file 'executable' must hold an absolute path.\n",
    ),
    "terminal escape in os_release": Case(
        crash(os_release=b"TestOS release 1 \x1b]0;owned\x07(Demo)"),
        403,
        "The problem file 'os_release' must hold one line of printable text.\n",
    ),
    "two lines in package": Case(
        crash(package=b"crasher-1.0-1\ncrasher-2.0-1"),
        403,
        "The problem file 'package' must hold one line of printable text.\n",
    ),
    "C1 control in executable": Case(
        crash(executable="/usr/bin/\x9b31mcrasher".encode()),
        403,
        "The problem file 'executable' must hold one line of printable text.\n",
    ),
    "missing executable": Case(
        abrt_archive({k: v for k, v in PROBLEM.items() if k != "executable"}),
        403,
        "The problem file 'executable' is missing.\n",
    ),
    "escape in packages": Case(
        crash(packages=b"crasher-1.0-1.x86_64\n\x1b[2Jgone\n"),
        403,
        "The problem file 'packages' must hold lines of printable text.\n",
    ),
    "directory then file": Case(
        xz(tar([Member("coredump", kind=tarfile.DIRTYPE), *regular()])),
        403,
        member("'coredump' is a directory; only regular files are accepted"),
    ),
}


# Archive-structure tricks, each with its status and reply (test_uploads and
# test_hostile send them).
ESCAPED = "/tmp/retracer-test-escaped"
# Incompressible, so that cutting the archive in half cuts the coredump.
NOISY = abrt_archive({**PROBLEM, "coredump": random.Random(4).randbytes(1 << 16)})
KNOWN = "coredump, executable, package, os_release, rootdir, os_release_in_rootdir, packages"


def sparse_member() -> bytes:
    """A pax sparse file: a regular type whose data is a map of holes, not the bytes."""
    info = tarfile.TarInfo("coredump")
    data = b"1\n0\n4\n".ljust(512, b"\0") + b"core".ljust(512, b"\0")
    info.size = len(data)
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "coredump",
        "GNU.sparse.realsize": "4",
    }
    return info.tobuf(tarfile.PAX_FORMAT) + data + bytes(1024)


HOSTILE: dict[str, tuple[bytes, int, str]] = {
    "absolute path": (
        xz(tar([*regular(), Member(ESCAPED, b"owned")])),
        403,
        member(f"'{ESCAPED}' is an absolute path"),
    ),
    "parent traversal": (
        xz(tar([*regular(), Member("../../../../escaped", b"owned")])),
        403,
        member("'../../../../escaped' is not a bare file name"),
    ),
    "subdirectory path": (
        xz(tar([Member("./coredump", b"core")])),
        403,
        member("'./coredump' is not a bare file name"),
    ),
    "symbolic link": (
        xz(tar([Member("coredump", kind=tarfile.SYMTYPE, link="/etc/shadow")])),
        403,
        member("'coredump' is a symbolic link; only regular files are accepted"),
    ),
    "hard link": (
        xz(tar([*regular(), Member("packages", kind=tarfile.LNKTYPE, link="/etc/shadow")])),
        403,
        member("'packages' is a hard link; only regular files are accepted"),
    ),
    "character device": (
        xz(tar([Member("coredump", kind=tarfile.CHRTYPE)])),
        403,
        member("'coredump' is a device; only regular files are accepted"),
    ),
    "fifo": (
        xz(tar([Member("rootdir", kind=tarfile.FIFOTYPE), *regular()])),
        403,
        member("'rootdir' is a fifo; only regular files are accepted"),
    ),
    "directory": (
        xz(tar([Member("crash", kind=tarfile.DIRTYPE), *regular()])),
        403,
        member("'crash' is a directory; only regular files are accepted"),
    ),
    "duplicate name": (
        xz(tar([*regular(), Member("coredump", b"second core")])),
        403,
        member("'coredump' appears twice"),
    ),
    "unknown member": (
        xz(tar([*regular(), Member("evil.sh", b"rm -rf /")])),
        403,
        member(f"'evil.sh' is not a known problem file (known: {KNOWN})"),
    ),
    "oversize member": (
        abrt_archive({**PROBLEM, "package": b"p" * 129}),
        403,
        member("'package' is larger than its 128-byte limit"),
    ),
    "missing coredump": (
        abrt_archive({k: v for k, v in PROBLEM.items() if k != "coredump"}),
        403,
        member("'coredump' is missing"),
    ),
    "xz bomb": (
        xz_bomb(64),
        413,
        "The unpacked archive is larger than this server's 8 MiB limit.\n",
    ),
    "truncated stream": (
        NOISY[: len(NOISY) // 2],
        400,
        "The archive cannot be unpacked: the stream is truncated.\n",
    ),
    "not an archive": (
        b"just some text, long enough to be sniffed" * 20,
        400,
        "The archive cannot be unpacked: the upload is not xz, gzip or tar data.\n",
    ),
    # Plain tars take another path: member data is spliced from the socket to the file.
    "truncated plain tar": (
        tar(regular({**PROBLEM, "coredump": random.Random(5).randbytes(1 << 16)}))[:40000],
        400,
        "The archive cannot be unpacked: the member 'coredump' is truncated.\n",
    ),
    "oversize plain tar": (
        tar(regular({**PROBLEM, "coredump": bytes(9 << 20)})),
        413,
        "The unpacked archive is larger than this server's 8 MiB limit.\n",
    ),
    "sparse member": (
        sparse_member(),
        403,
        member("'coredump' is a sparse file; only regular files are accepted"),
    ),
    "corrupt xz": (
        NOISY[:2000] + bytes(2000) + NOISY[4000:],
        400,
        "The archive cannot be unpacked: the data is corrupt (Corrupt input data).\n",
    ),
}
