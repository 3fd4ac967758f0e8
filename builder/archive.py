"""An uploaded archive read once, front to back: compression sniffed, bytes capped.

tarfile parses the headers (in ``r:`` mode over a reader that only moves forward,
so pax and GNU headers work as tarfile knows them), and the caller copies each
member's data to a file descriptor with :meth:`TarStream.copy_to`, which bypasses
tarfile's own buffering. When the upload is a plain tar arriving through a pipe,
member data moves from the pipe to the file with splice(2) and never enters Python.

Every byte that leaves the stream (headers, padding, data) counts against the
unpacked cap, so a decompression bomb stops at the cap, whatever its headers claim.

Memory stays bounded whatever the upload declares: xz is decoded with a memory limit
(a stream declaring a huge dictionary is refused before it is allocated), deflate
needs a fixed 32 KiB window, every read returns at most one chunk, pax and GNU
extended headers are capped in size, and at most a few of them may precede a member
(tarfile reads each chain by recursion).
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from typing import IO, Protocol, cast

from retracer.builder.errors import ArchiveTooLarge, ArchiveUnreadable, MemberRejected
from retracer.sync.durable import write_all

CHUNK = 1 << 20
_WRITEBACK = 32 << 20
# pax and GNU long-name headers are read into memory by tarfile; keep them small, and
# few: a real member needs at most a global header, a pax header and a long name.
_MAX_EXTENDED_HEADER = 64 << 10
_MAX_EXTENDED_CHAIN = 8
_EXTENDED_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF = tarfile.BLOCKSIZE
# What a corrupt or truncated stream raises from the decompressors and tarfile (which
# parses numbers and sparse maps with int() and raises ValueError on garbage).
CORRUPT = (
    tarfile.TarError,
    lzma.LZMAError,
    zlib.error,
    EOFError,
    gzip.BadGzipFile,
    ValueError,
    OverflowError,
)


class Digest(Protocol):
    """What copy_to needs of a hashlib object."""

    def update(self, data: bytes, /) -> None: ...


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class TarStream:
    """The tar data of an upload, readable once, front to back, up to ``cap`` bytes."""

    def __init__(
        self, source: Readable, head: bytes, cap: int, cap_mib: int, pipe_fd: int | None
    ) -> None:
        self._source = source
        self._head = head  # bytes read to sniff the format, served again first
        self._cap = cap
        self._cap_mib = cap_mib
        self._pipe_fd = pipe_fd
        self._position = 0

    def members(self) -> Iterator[tarfile.TarInfo]:
        """Each member's header, in order; its data must be consumed before the next."""
        with tarfile.open(
            fileobj=cast(IO[bytes], self),
            mode="r:",
            tarinfo=_BoundedTarInfo,
        ) as archive:
            yield from archive

    def drain(self) -> None:
        """Read what follows the last member to the end of the stream, so that the
        compressed data is checked whole (xz and gzip verify their checksums at the
        end): an archive is accepted only if every byte of it decodes."""
        while self.read(CHUNK):
            pass

    def copy_to(self, fd: int, member: tarfile.TarInfo, digest: Digest | None = None) -> int:
        """Write ``member``'s data to ``fd``; returns the bytes written (fewer if truncated).

        ``digest`` (a hashlib object), if given, is fed the same bytes. Spliced bytes
        never enter Python, so they are read back from the page cache they were just
        written to (a memory copy; hashing costs more than that).
        """
        self.seek(member.offset_data)
        self._count(member.size)
        written = 0
        if self._head:
            head = self._take_head(member.size)
            if digest is not None:
                digest.update(head)
            written += write_all(fd, head)
        advised = previous = 0
        while written < member.size:
            wanted = min(CHUNK, member.size - written)
            if self._pipe_fd is not None:
                moved = os.splice(self._pipe_fd, fd, wanted, flags=os.SPLICE_F_MOVE)
                if digest is not None and moved:
                    digest.update(os.pread(fd, moved, written))
            else:
                data = self._source.read(wanted)
                if digest is not None:
                    digest.update(data)
                moved = write_all(fd, data)
            if not moved:
                break
            written += moved
            if written - advised >= _WRITEBACK:
                # Linux starts writing back the new window without waiting, and drops the
                # previous one, written back by now, from the page cache: the final fsync
                # has little left to do, and a 4 GiB core does not evict everything else.
                os.posix_fadvise(fd, previous, written - previous, os.POSIX_FADV_DONTNEED)
                previous, advised = advised, written
        self._position += written
        return written

    # The file-object interface tarfile uses.

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes, fewer only at the end of the stream."""
        parts = []
        wanted = self._cap + 1 if size is None or size < 0 else size
        while wanted > 0:
            part = self._take_head(wanted) if self._head else self._source.read(min(wanted, CHUNK))
            if not part:
                break
            self._count(len(part))
            self._position += len(part)
            parts.append(part)
            wanted -= len(part)
        return b"".join(parts)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset < self._position:
            raise ArchiveUnreadable("its layout needs reading backwards, which a stream cannot do")
        while self._position < offset:
            if not self.read(min(CHUNK, offset - self._position)):
                break
        return self._position

    def _take_head(self, size: int) -> bytes:
        part, self._head = self._head[:size], self._head[size:]
        return part

    def _count(self, size: int) -> None:
        if self._position + size > self._cap:
            raise ArchiveTooLarge(self._cap_mib)


def open_tar(raw: Readable, cap: int, cap_mib: int, xz_memory_mib: int) -> TarStream:
    """The tar stream inside ``raw``, whatever compression it really has.

    Raises:
        ArchiveUnreadable: the data is neither xz, gzip nor tar.
    """
    head = _read_up_to(raw, _SNIFF)
    whole = cast(IO[bytes], _Prefixed(head, raw))
    if head.startswith(_XZ_MAGIC):
        return TarStream(_XzReader(whole, xz_memory_mib), b"", cap, cap_mib, None)
    if head.startswith(_GZIP_MAGIC):
        return TarStream(gzip.GzipFile(fileobj=whole, mode="rb"), b"", cap, cap_mib, None)
    if head[257:262] == b"ustar":
        return TarStream(raw, head, cap, cap_mib, _pipe_fd(raw))
    raise ArchiveUnreadable("the upload is not xz, gzip or tar data")


def describe(error: BaseException) -> str:
    """Why a corrupt stream failed, as the end of a sentence."""
    if isinstance(error, EOFError | tarfile.ReadError) and "end" in str(error).lower():
        return "the stream is truncated"
    if isinstance(error, ValueError | OverflowError) and not isinstance(error, UnicodeError):
        return "a tar header holds an invalid number or sparse map"
    text = str(error).rstrip(".") or type(error).__name__
    return f"the data is corrupt ({text})"


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses pax and GNU long-name headers big enough to hurt (tarfile reads them whole)
    and chains of them long enough to exhaust the stack (tarfile reads them recursively)."""

    @classmethod
    def fromtarfile(cls, tarfile: tarfile.TarFile) -> _BoundedTarInfo:
        depth = getattr(tarfile, _CHAIN_DEPTH, 0)
        if depth >= _MAX_EXTENDED_CHAIN:
            raise MemberRejected(
                "(extended headers)", f"form a chain longer than {_MAX_EXTENDED_CHAIN}"
            )
        setattr(tarfile, _CHAIN_DEPTH, depth + 1)
        try:
            return cast(_BoundedTarInfo, super().fromtarfile(tarfile))
        finally:
            setattr(tarfile, _CHAIN_DEPTH, depth)

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _BoundedTarInfo:
        info = super().frombuf(buf, encoding, errors)
        if info.size < 0:  # GNU base-256 numbers can be negative; tarfile would seek back
            raise ArchiveUnreadable(f"the header of {info.name!r} declares a negative size")
        if info.type in _EXTENDED_TYPES and info.size > _MAX_EXTENDED_HEADER:
            raise MemberRejected(info.name, "has an extended header larger than 64 KiB")
        return info


_CHAIN_DEPTH = "_retracer_extended_chain_depth"


class _XzReader:
    """xz (or concatenated xz streams) decoded under a memory limit, a chunk at a time.

    lzma.LZMAFile takes no memory limit, so a stream declaring a 4 GiB dictionary
    would be honoured; here liblzma refuses it before allocating.
    """

    def __init__(self, source: IO[bytes], memory_mib: int) -> None:
        self._source = source
        self._memlimit = memory_mib << 20
        self._memory_mib = memory_mib
        self._decoder = self._new_decoder()
        self._pending = b""
        self._ended = False

    def _new_decoder(self) -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=self._memlimit)

    def read(self, size: int = -1) -> bytes:
        wanted = CHUNK if size is None or size < 0 else min(size, CHUNK)
        while not self._ended:
            if self._decoder.eof:
                # Another stream may follow (xz allows concatenation) after padding.
                rest = self._decoder.unused_data.lstrip(b"\0") or self._source.read(CHUNK)
                if not rest.lstrip(b"\0"):
                    self._ended = not rest
                    continue
                self._decoder = self._new_decoder()
                self._pending = rest.lstrip(b"\0")
            if self._decoder.needs_input and not self._pending:
                self._pending = self._source.read(CHUNK)
                if not self._pending:
                    raise EOFError("Compressed file ended before the end-of-stream marker")
            try:
                data = self._decoder.decompress(self._pending, max_length=wanted)
            except lzma.LZMAError as error:
                if "memory" in str(error).lower():
                    raise ArchiveUnreadable(
                        f"its xz stream needs more than this server's {self._memory_mib} MiB"
                        " of decoder memory (compress with xz -6 or lower)"
                    ) from None
                raise
            self._pending = b""
            if data:
                return data
        return b""


class _Prefixed:
    """A stream that yields ``head`` again, then the rest of ``source`` (pipes cannot seek)."""

    def __init__(self, head: bytes, source: Readable) -> None:
        self._head = head
        self._source = source

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._source.read(), b""
            else:
                data, self._head = self._head[:size], self._head[size:]
            return data
        return self._source.read(size)


def _pipe_fd(raw: Readable) -> int | None:
    """The descriptor splice(2) can read from: a pipe read unbuffered, so that nothing
    sits in a Python buffer ahead of the descriptor's position."""
    if not isinstance(raw, io.RawIOBase):
        return None
    fd = raw.fileno()
    return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None


def _read_up_to(source: Readable, size: int) -> bytes:
    parts = []
    while size > 0 and (part := source.read(size)):
        parts.append(part)
        size -= len(part)
    return b"".join(parts)
