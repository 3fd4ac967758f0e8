"""Blocking work off gevent's event loop: the HTTP process's two helpers.

- :func:`in_threadpool` runs a function in gevent's thread pool and waits for it
  cooperatively (repository index lookups).
- :func:`pump_into_thread` streams a request body into a function running in the
  thread pool through a pipe (unpacking uploads): the event loop only moves bytes
  from the socket to the pipe (with splice(2) on a plain socket, so they never enter
  Python), while decompression and disk writes happen in the thread. Memory stays at
  one chunk plus the pipe's buffer, and the body is written to disk once.
- :class:`OffloadedTaskStore` runs every TaskStore call on a thread of its own, so
  a statement waiting for a worker's write lock (up to the busy timeout) never
  freezes the event loop, and reads go on beside a waiting write.

Without gevent (the worker, a test calling the spool directly) the spool uses plain
in-thread equivalents instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import gevent
import gevent.os
import gevent.socket
import gevent.ssl
from gevent import monkey, pywsgi
from gevent.threadpool import ThreadPool

from retracer.server.errors import UploadIncomplete
from retracer.server.tasks import TaskStore

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
    # Unbuffered: the consumer may splice(2) from the descriptor itself.
    reader = io.FileIO(read_fd, "rb")

    def run() -> T:
        with reader:  # closing it tells the pump to stop (EPIPE)
            return consume(reader)

    job = gevent.get_hub().threadpool.spawn(run)
    try:
        sent, ended = _copy(stream, length, write_fd)
    finally:
        writer.close()
        job.wait()  # the thread must be done with the task folder before anyone cleans it
    if ended:
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


def _copy(stream: IO[bytes], length: int, pipe_fd: int) -> tuple[int, bool]:
    """Move the body into the pipe; returns (bytes sent, whether the body ended early)."""
    socket_fd = _spliceable_socket(stream)
    if socket_fd is None:
        return _copy_through_python(stream, length, pipe_fd)
    assert isinstance(stream, pywsgi.Input)
    stream.read(0)  # answers "Expect: 100-continue", reads nothing
    # One read1 takes what gevent's reader already holds (or does one socket read);
    # after it that buffer is empty, so the socket's own position is the body's.
    first = stream.rfile.read1(length)
    stream.position += len(first)
    if not first:
        return 0, True
    if not _write_all(pipe_fd, first):
        return len(first), False
    sent = len(first)
    while sent < length:
        try:
            moved = os.splice(
                socket_fd,
                pipe_fd,
                min(CHUNK, length - sent),
                flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK,
            )
        except BlockingIOError:  # no data yet, or the pipe is full: wait for both
            gevent.socket.wait_write(pipe_fd)
            gevent.socket.wait_read(socket_fd)
            continue
        except BrokenPipeError:
            return sent, False  # consume() finished or refused without the rest
        if not moved:
            return sent, True
        # gevent's Input must know what was read, or it would wait for it again.
        stream.position += moved
        sent += moved
    return sent, False


def _copy_through_python(stream: IO[bytes], length: int, pipe_fd: int) -> tuple[int, bool]:
    sent = 0
    while sent < length:
        chunk = stream.read(min(CHUNK, length - sent))
        if not chunk:
            return sent, True
        if not _write_all(pipe_fd, chunk):
            return sent, False  # consume() finished or refused without needing the rest
        sent += len(chunk)
    return sent, False


def _spliceable_socket(stream: IO[bytes]) -> int | None:
    """The descriptor of the plain TCP socket under a gevent request body, if it has one.

    A chunked body or an encrypted socket must go through Python; so must anything
    that is not gevent's own Input (a test client's stream, say).
    """
    if not isinstance(stream, pywsgi.Input) or stream.chunked_input:
        return None
    sock = getattr(getattr(stream.rfile, "raw", None), "_sock", None)
    if not isinstance(sock, gevent.socket.socket) or isinstance(sock, gevent.ssl.SSLSocket):
        return None
    return sock.fileno()


# TaskStore methods that only read: they run on a connection of their own, which WAL
# mode never makes wait for a writer.
_READS = frozenset(
    {
        "get", "exists", "ids", "active_count", "count_by_state", "queue_position",
        "totals", "password_hash", "is_spent", "failures_since", "expired",
        "queued_ids", "running_owners", "workers_seen_since",
    }
)  # fmt: skip


class _Lane:
    """One connection and the thread that uses it (one per event loop, serialised)."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._lock = monkey.get_original("threading", "Lock")()
        self._pools: dict[Any, ThreadPool] = {}

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        hub = gevent.get_hub()
        pool = self._pools.get(hub)
        if pool is None:
            pool = self._pools[hub] = ThreadPool(1, hub=hub)

        def run() -> T:
            with self._lock:
                return function(self.store, *args, **kwargs)

        result: T = pool.apply(run)
        return result

    def close(self) -> None:
        with self._lock:
            TaskStore.close(self.store)
        for pool in self._pools.values():
            pool.kill()


class OffloadedTaskStore(TaskStore):
    """A TaskStore for the HTTP process: writes on one thread and connection, reads on
    another, each waited for cooperatively."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._writes = _Lane(self)
        self._reads = _Lane(TaskStore(path))

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> OffloadedTaskStore:
        return cls(data_dir / "tasks.db")

    def close(self) -> None:
        self._reads.close()
        self._writes.close()


def _offloaded(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: OffloadedTaskStore, *args: Any, **kwargs: Any) -> Any:
        lane = self._reads if name in _READS else self._writes
        return lane.call(method, *args, **kwargs)

    return call


for _name, _method in list(vars(TaskStore).items()):
    if inspect.isfunction(_method) and not _name.startswith("_") and _name != "close":
        setattr(OffloadedTaskStore, _name, _offloaded(_name, _method))
