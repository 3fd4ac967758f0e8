"""gevent's WSGI handler, taught to send files with sendfile(2) and to skip the app
for files it already knows.

pywsgi sends every response body through Python, chunk by chunk. Two ways around:

- A view that returns a :class:`FileBody` with a ``Content-Length`` gets its bytes
  copied from the file to the socket by the kernel: the handler writes the headers,
  then calls ``os.sendfile`` until the file is sent, waiting cooperatively whenever
  the socket is full.
- An app may register a :data:`FAST_PATH` in its ``extensions``: a function from
  (method, raw path, headers) to a :class:`FastFile` or None. When it answers, the
  request never reaches the WSGI app (no environ, no routing): the handler writes
  the file's status line and headers and sendfiles the body. debuginfod uses it for
  files already in its cache, which is most of its traffic.

The socket is corked (TCP_CORK) from the headers to the end of the body: sent
apart, the short header segment would hold the body back under Nagle's algorithm
until the client's delayed ACK, about 40 ms per response.

Under any other server a FileBody is an ordinary iterable of chunks, and the fast
path is simply not used.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import IO, Any

import gevent
from gevent.pywsgi import MAX_REQUEST_LINE, OldMessage, WSGIHandler, format_date_time
from gevent.socket import wait_write
from werkzeug.wsgi import FileWrapper

_CHUNK = 1 << 20
FAST_PATH = "retracer.fast_path"


class FileBody(FileWrapper):
    """An open file to send whole, ``size`` bytes from its start."""

    def __init__(self, file: IO[bytes], size: int) -> None:
        super().__init__(file, _CHUNK)
        self.size = size


@dataclass(frozen=True)
class FastFile:
    """A whole file to answer with, and its headers besides Content-Length."""

    path: str
    headers: tuple[tuple[str, str], ...]
    send_body: bool  # False for HEAD


FastPath = Callable[[str, str, Message], FastFile | None]

# As http.client allows; more is a malformed request.
_MAX_HEADERS = 100


def read_headers(rfile: IO[bytes]) -> Message:
    """The request's header block as the message pywsgi expects.

    pywsgi parses headers with the email package's feed parser, which took about
    40% of the time of a cached debuginfod answer; splitting the lines here gives
    the same message (names and values as sent, folded lines joined).
    """
    message = OldMessage()
    fields: list[list[str]] = []
    while True:
        line = rfile.readline(MAX_REQUEST_LINE + 1)
        if len(line) > MAX_REQUEST_LINE:
            message.status = "Line too long"
            return message
        if line in (b"\r\n", b"\n", b""):
            break
        text = line.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and fields:
            fields[-1][1] += " " + text.strip()
            continue
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip():
            message.status = "Malformed header line"
            return message
        fields.append([name, value.strip()])
        if len(fields) > _MAX_HEADERS:
            message.status = "Too many headers"
            return message
    for name, value in fields:
        message[name] = value
    return message


class SendfileHandler(WSGIHandler):
    """Use as ``WSGIServer(..., handler_class=SendfileHandler)``."""

    _fast: FastFile | None = None
    _fast_fd: int = -1

    def MessageClass(self, rfile: IO[bytes], *_args: Any) -> Message:
        return read_headers(rfile)

    def get_environ(self) -> Any:
        # Called once the request line and headers are parsed, before the app runs.
        fast_path: FastPath | None = getattr(self.server.application, "extensions", {}).get(
            FAST_PATH
        )
        self._fast = None
        # Only bodiless requests: a body left unread would be taken for the next request.
        has_body = bool(self.content_length) or "transfer-encoding" in self.headers
        if fast_path is not None and not has_body:
            found = fast_path(self.command, self.path, self.headers)
            if found is not None:
                try:
                    self._fast_fd = os.open(found.path, os.O_RDONLY | os.O_CLOEXEC)
                    self._fast = found
                    return {}
                except OSError:  # evicted meanwhile: the app answers
                    pass
        return super().get_environ()

    def handle_one_response(self) -> None:
        if self._fast is None:
            super().handle_one_response()
            return
        found, fd = self._fast, self._fast_fd
        self._fast, self._fast_fd = None, -1
        try:
            size = os.fstat(fd).st_size
            self._send_fast(found, fd, size)
        finally:
            os.close(fd)
        # A fast client's next request is often there already, and reading it would
        # not yield: without this, one connection is served while the others wait.
        gevent.sleep(0)

    def _send_fast(self, found: FastFile, fd: int, size: int) -> None:
        self.status = "200 OK"
        self.code = 200
        self.response_length = 0
        date = format_date_time(self.time_start)
        if isinstance(date, bytes):  # gevent returns bytes
            date = date.decode("latin-1")
        head = ["HTTP/1.1 200 OK", f"Date: {date}"]
        head += [f"{name}: {value}" for name, value in found.headers]
        head.append(f"Content-Length: {size}")
        if self.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            self.socket.sendall(data)
            if found.send_body:
                self._sendfile(fd, size)
        finally:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        self.headers_sent = True

    def process_result(self) -> None:
        body = self.result
        if (
            isinstance(body, FileBody)
            and self.provided_content_length is not None
            and int(self.provided_content_length) == body.size
        ):
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            try:
                self.write(b"")  # the status line and headers
                self._sendfile(body.file.fileno(), body.size)
            finally:
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            return
        super().process_result()

    def _sendfile(self, source: int, size: int) -> None:
        target = self.socket.fileno()
        offset = 0
        while offset < size:
            try:
                sent = os.sendfile(target, source, offset, size - offset)
            except BlockingIOError:
                wait_write(target)
                continue
            if sent == 0:  # the file shrank under us; the client sees a short body
                break
            offset += sent
        self.response_length += offset
