"""Blocking work off gevent's event loop: the HTTP process's two helpers.

- :func:`in_threadpool` runs a function in gevent's thread pool and waits for it
  cooperatively (repository index lookups).
- :func:`pump_into_thread` streams a request body into a function running in the
  thread pool through a pipe (unpacking uploads): the event loop only copies bytes
  from the socket, while decompression and disk writes happen in the thread. Memory
  stays at one chunk plus the pipe's buffer, and the body is written to disk once.

Without gevent (the worker, a test calling the spool directly) the spool uses plain
in-thread equivalents instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
from collections.abc import Callable
from typing import IO, TypeVar

import gevent
import gevent.os

from retracer.server.errors import UploadIncomplete

T = TypeVar("T")

CHUNK = 1 << 20


def in_threadpool(function: Callable[[], T]) -> T:
    result: T = gevent.get_hub().threadpool.apply(function)
    return result


def pump_into_thread(stream: IO[bytes], length: int, consume: Callable[[IO[bytes]], T]) -> T:
    """Copy exactly ``length`` bytes of ``stream`` to ``consume(reader)`` in a thread.

    If ``consume`` stops reading early (it refused the upload, or the archive ended),
    the rest of the body is not read. If the body ends early, ``consume`` sees the
    end of its input and UploadIncomplete is raised once it has returned.
    """
    read_fd, write_fd = os.pipe()
    # A file object closes for real at once; gevent's patched os.close defers the close
    # of a pipe to the event loop, and the reading thread would wait for EOF forever.
    writer = io.FileIO(write_fd, "wb")
    with contextlib.suppress(OSError):  # a smaller pipe only means more context switches
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, CHUNK)
    gevent.os.make_nonblocking(write_fd)
    reader = os.fdopen(read_fd, "rb", buffering=CHUNK)

    def run() -> T:
        with reader:  # closing it tells the pump to stop (EPIPE)
            return consume(reader)

    job = gevent.get_hub().threadpool.spawn(run)
    sent = 0
    chunk = b"-"
    try:
        while sent < length:
            chunk = stream.read(min(CHUNK, length - sent))
            if not chunk:
                break
            if not _write_all(write_fd, chunk):
                break  # consume() finished or refused without needing the rest
            sent += len(chunk)
    finally:
        writer.close()
        job.wait()  # the thread must be done with the task folder before anyone cleans it
    if not chunk:
        raise UploadIncomplete(sent, length)
    result: T = job.get()
    return result


def _write_all(fd: int, data: bytes) -> bool:
    """Write cooperatively; False when the reader has gone away."""
    view = memoryview(data)
    try:
        while view:
            view = view[gevent.os.nb_write(fd, view) :]
    except BrokenPipeError:
        return False
    return True
