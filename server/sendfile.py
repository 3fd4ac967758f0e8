"""gevent's WSGI handler, taught to send a file body with sendfile(2).

pywsgi sends every response body through Python, chunk by chunk. A view that
returns a :class:`FileBody` with a ``Content-Length`` gets its bytes copied from the
file to the socket by the kernel instead: the handler writes the headers, then calls
``os.sendfile`` until the file is sent, waiting cooperatively whenever the socket is
full. Under any other server a FileBody is an ordinary iterable of chunks.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from gevent.pywsgi import WSGIHandler
from gevent.socket import wait_write
from werkzeug.wsgi import FileWrapper

_CHUNK = 1 << 20


class FileBody(FileWrapper):
    """An open file to send whole, ``size`` bytes from its start."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        super().__init__(file, _CHUNK)
        self.size = size


class SendfileHandler(WSGIHandler):
    """Use as ``WSGIServer(..., handler_class=SendfileHandler)``."""

    def process_result(self) -> None:
        body = self.result
        if (
            isinstance(body, FileBody)
            and self.provided_content_length is not None
            and int(self.provided_content_length) == body.size
        ):
            self.write(b"")  # the status line and headers
            self._sendfile(body.file.fileno(), body.size)
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
