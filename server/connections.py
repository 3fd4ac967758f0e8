"""gevent's WSGI server with the limits a server facing the internet needs.

- At most ``max_connections`` connections are served at once (a greenlet pool);
  further ones wait in the kernel's accept queue.
- A client must send its request line and headers within ``header_timeout_seconds``
  (408, then the connection closes). That deadline also ends a kept-alive
  connection left idle between requests.
- Every read from the socket gives up after ``body_timeout_seconds`` without data,
  so a request body that stalls ends the request (the upload path turns that into
  408, see :mod:`retracer.server.offload`).
"""

from __future__ import annotations

from typing import Any

import gevent
from flask import Flask
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from retracer.server.config import ServerSettings
from retracer.server.sendfile import SendfileHandler

_TIMEOUT_BODY = b"The request line and headers did not arrive in time.\n"
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class _HeadersTooSlow(gevent.Timeout):
    """The header deadline passed (a BaseException, like every gevent.Timeout)."""


class HeadersTimedOut(ValueError):
    """What the handler reports instead: gevent treats ValueError as bad client input."""


class GuardedHandler(WSGIHandler):
    header_timeout = 10.0
    body_timeout = 30.0

    def handle(self) -> None:
        self.socket.settimeout(self.body_timeout)
        super().handle()

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        finally:
            # Paths that never reach read_request (a closed connection, a request line
            # too long) must not leave the deadline armed.
            deadline = self.__dict__.pop("_deadline", None)
            if deadline is not None:
                deadline.cancel()

    def read_requestline(self) -> str:
        self._deadline = _HeadersTooSlow.start_new(self.header_timeout)
        try:
            line: str = super().read_requestline()
        except _HeadersTooSlow as timeout:
            if timeout is not self._deadline:
                raise
            return ""  # nothing usable arrived: close the connection quietly
        except BaseException:
            self._deadline.cancel()
            raise
        return line

    def read_request(self, raw_requestline: str) -> Any:
        try:
            return super().read_request(raw_requestline)
        except _HeadersTooSlow as timeout:
            if timeout is not self._deadline:
                raise
            raise HeadersTimedOut("the request headers did not arrive in time") from timeout
        finally:
            self._deadline.cancel()

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, HeadersTimedOut | TimeoutError):
            self.close_connection = True
            return ("408", _REQUEST_TIMEOUT)
        return super()._handle_client_error(ex)


def make_server(app: Flask, settings: ServerSettings, **options: Any) -> WSGIServer:
    """A WSGIServer on ``settings.host:port`` (or ``options["listener"]``) with the limits;
    its handler also answers cached debuginfod files with sendfile(2)."""
    handler = type(
        "Handler",
        (GuardedHandler, SendfileHandler),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
        },
    )
    listener = options.pop("listener", (settings.host, settings.port))
    return WSGIServer(
        listener,
        app,
        spawn=Pool(settings.max_connections),
        handler_class=handler,
        **options,
    )
