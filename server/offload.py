"""Blocking work off gevent's event loop: the HTTP process's two helpers.

- :func:`in_threadpool` runs a function in gevent's thread pool and waits for it
  cooperatively (repository index lookups).
- :class:`UploadPump` streams a request body into a function running in a thread
  through a pipe (unpacking uploads): the event loop only moves bytes from the
  socket to the pipe (with splice(2) on a plain socket, so they never enter Python),
  while decompression and disk writes happen in the thread. Memory stays at one
  chunk plus the pipe's buffer, and the body is written to disk once.

Uploads have a thread pool of their own, ``max_concurrent_uploads`` threads, so
lookups never wait behind them; and an upload takes its thread only once the first
bytes of its body have arrived, so a client that sends headers and then nothing
costs a socket and a greenlet, not a thread. Every wait for the client's bytes ends
after ``body_timeout_seconds`` with UploadStalled (408).
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
from contextlib import AbstractContextManager
from typing import IO, Any, TypeVar, cast

import gevent
import gevent.os
import gevent.socket
import gevent.ssl
from gevent import monkey, pywsgi
from gevent.lock import BoundedSemaphore
from gevent.threadpool import ThreadPool

from retracer.server.config import ServerSettings
from retracer.server.errors import ServerError, UploadIncomplete, UploadSlotsBusy, UploadStalled
from retracer.server.tasks.store import Database, Dialect, TaskStore

T = TypeVar("T")

CHUNK = 1 << 20


def in_threadpool(function: Callable[[], T]) -> T:
    result: T = gevent.get_hub().threadpool.apply(function)
    return result


class UploadPump:
    """``pump(stream, length, consume)``: the Spool's way to feed a body to its unpacker."""

    def __init__(self, settings: ServerSettings) -> None:
        self._slots = settings.max_concurrent_uploads
        self._slot_wait = settings.upload_slot_wait_seconds
        self._timeout = settings.body_timeout_seconds
        # Made on first use, in the thread that runs the event loop (gevent's pools
        # and locks belong to the hub of the thread that creates them).
        self._pool: ThreadPool | None = None
        self._free: BoundedSemaphore | None = None

    def __call__(self, stream: IO[bytes], length: int, consume: Callable[[IO[bytes]], T]) -> T:
        """Copy exactly ``length`` bytes of ``stream`` to ``consume(reader)`` in a thread.

        If ``consume`` stops reading early (it refused the upload, or the archive ended),
        the rest of the body is not read. If the body ends early, ``consume`` sees the
        end of its input and UploadIncomplete is raised once it has returned.

        Raises:
            UploadStalled: the client sent nothing for ``body_timeout_seconds``.
            UploadSlotsBusy: no upload thread came free in ``upload_slot_wait_seconds``.
        """
        if self._pool is None or self._free is None:
            self._pool = ThreadPool(self._slots)
            self._free = BoundedSemaphore(self._slots)
        body = _Body(stream, length, self._timeout)
        first = body.first()  # waits for the client without holding a thread
        if not self._free.acquire(timeout=self._slot_wait):
            body.abandon()
            raise UploadSlotsBusy(self._slots, self._slot_wait)
        try:
            return self._pump(body, first, consume, self._pool)
        finally:
            self._free.release()

    def _pump(
        self, body: _Body, first: bytes, consume: Callable[[IO[bytes]], T], pool: ThreadPool
    ) -> T:
        read_fd, write_fd = os.pipe()
        # A file object closes for real at once; gevent's patched os.close defers the
        # close of a pipe to the event loop, and the reading thread would wait for EOF
        # forever.
        writer = io.FileIO(write_fd, "wb")
        with contextlib.suppress(OSError):  # a smaller pipe only means more context switches
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, CHUNK)
        gevent.os.make_nonblocking(write_fd)
        # Unbuffered: the consumer may splice(2) from the descriptor itself.
        reader = io.FileIO(read_fd, "rb")

        def run() -> tuple[T | None, ServerError | OSError | None]:
            # A refusal comes back as a value and is raised here in the greenlet: the
            # pool would log each refused upload as a crash of its worker thread.
            with reader:  # closing it tells the pump to stop (EPIPE)
                try:
                    return consume(reader), None
                except (ServerError, OSError) as error:
                    return None, error

        job = pool.spawn(run)
        try:
            ended = body.copy(first, write_fd)
        except TimeoutError:
            body.abandon()
            raise UploadStalled(body.sent, body.length, self._timeout) from None
        finally:
            writer.close()
            job.wait()  # the thread must be done with the task folder before anyone cleans it
        result, error = job.get()
        if ended:
            raise UploadIncomplete(body.sent, body.length)
        if error is not None:
            raise error
        return cast(T, result)


class _Body:
    """A request body read once: the first bytes, then the rest into a pipe."""

    def __init__(self, stream: IO[bytes], length: int, timeout: float) -> None:
        self.stream = stream
        self.length = length
        self.sent = 0
        self._timeout = timeout
        self._socket_fd = _spliceable_socket(stream)

    def first(self) -> bytes:
        """The first bytes of the body, as soon as there are any (b"" if none will come)."""
        try:
            if self._socket_fd is None:
                return self.stream.read(min(CHUNK, self.length)) if self.length else b""
            stream = self.stream
            assert isinstance(stream, pywsgi.Input)
            stream.read(0)  # answers "Expect: 100-continue", reads nothing
            if not self.length:
                return b""
            # One read1 takes what gevent's reader already holds (or does one socket
            # read); after it that buffer is empty, so the socket's own position is the
            # body's.
            data: bytes = stream.rfile.read1(self.length)
            stream.position += len(data)
            return data
        except TimeoutError:
            self.abandon()
            raise UploadStalled(0, self.length, self._timeout) from None

    def copy(self, first: bytes, pipe_fd: int) -> bool:
        """Move the body into the pipe; True if it ended before ``length`` bytes."""
        if not first:
            return self.length > 0
        if not _write_all(pipe_fd, first):
            self.sent = len(first)
            return False
        self.sent = len(first)
        if self._socket_fd is None:
            return self._copy_through_python(pipe_fd)
        return self._splice(self._socket_fd, pipe_fd)

    def abandon(self) -> None:
        """Give up on the rest of the body: gevent must not try to read it after the
        answer (the connection closes instead)."""
        if isinstance(self.stream, pywsgi.Input):
            self.stream.position = self.length

    def _splice(self, socket_fd: int, pipe_fd: int) -> bool:
        stream = self.stream
        assert isinstance(stream, pywsgi.Input)
        while self.sent < self.length:
            try:
                moved = os.splice(
                    socket_fd,
                    pipe_fd,
                    min(CHUNK, self.length - self.sent),
                    flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK,
                )
            except BlockingIOError:  # no data yet, or the pipe is full: wait for both
                gevent.socket.wait_write(pipe_fd)
                gevent.socket.wait_read(socket_fd, timeout=self._timeout)
                continue
            except BrokenPipeError:
                return False  # consume() finished or refused without the rest
            if not moved:
                return True
            # gevent's Input must know what was read, or it would wait for it again.
            stream.position += moved
            self.sent += moved
        return False

    def _copy_through_python(self, pipe_fd: int) -> bool:
        while self.sent < self.length:
            chunk = self.stream.read(min(CHUNK, self.length - self.sent))
            if not chunk:
                return True
            if not _write_all(pipe_fd, chunk):
                return False  # consume() finished or refused without needing the rest
            self.sent += len(chunk)
        return False


def _write_all(fd: int, data: bytes) -> bool:
    """Write cooperatively; False when the reader has gone away."""
    view = memoryview(data)
    try:
        while view:
            view = view[gevent.os.nb_write(fd, view) :]
    except BrokenPipeError:
        return False
    return True


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


# TaskStore methods that only read: they run on a connection of their own, which
# SQLite's WAL mode never makes wait for a writer.
_READS = frozenset(
    {
        "get", "exists", "ids", "active_count", "count_by_state", "queue_position",
        "totals", "password_hash", "is_spent", "expired", "queued_ids", "queued",
        "running_owners", "workers_seen_since", "live_workers", "statistics",
        "core_sha256", "find_result",
    }
)  # fmt: skip


class _Lane:
    """One connection and the thread that uses it (one per event loop, serialised)."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._lock = monkey.get_original("threading", "Lock")()
        self._pools: dict[Any, ThreadPool] = {}

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        hub = gevent.get_hub()
        pool = self._pools.get(hub)
        if pool is None:
            pool = self._pools[hub] = ThreadPool(1, hub=hub)

        def run() -> Any:
            with self._lock:
                return getattr(self.store, name)(*args, **kwargs)

        return pool.apply(run)

    def close(self) -> None:
        with self._lock:
            self.store.close()
        for pool in self._pools.values():
            pool.kill()


class OffloadedTaskStore(TaskStore):
    """A TaskStore for the HTTP process, around any backend's: writes on one thread and
    connection, reads on another, each waited for cooperatively."""

    def __init__(self, store: TaskStore) -> None:
        self._inner = store
        self._writes = _Lane(store)
        self._reads = _Lane(store.reopen())

    def reopen(self, busy_seconds: float | None = None) -> TaskStore:
        return self._inner.reopen(busy_seconds)

    def describe(self) -> str:
        return self._inner.describe()

    def close(self) -> None:
        self._reads.close()
        self._writes.close()

    # Never reached: every public method is sent to a lane's store.
    def _transaction(self, durable: bool) -> AbstractContextManager[Database]:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Database]:
        raise NotImplementedError

    def _dialect(self) -> Dialect:
        raise NotImplementedError


def _offloaded(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: OffloadedTaskStore, *args: Any, **kwargs: Any) -> Any:
        lane = self._reads if name in _READS else self._writes
        return lane.call(name, *args, **kwargs)

    return call


for _name, _method in list(vars(TaskStore).items()):
    if (
        inspect.isfunction(_method)
        and not _name.startswith("_")
        and _name not in vars(OffloadedTaskStore)
    ):
        setattr(OffloadedTaskStore, _name, _offloaded(_name, _method))
