"""``retracer debuginfod``: the debuginfod requests alone, on gevent's WSGI server.

For hosts that want debuginfod apart from the retrace service: it reads the same
configuration, repositories and index, and keeps its cache in the same place. The
``retracer`` command imports the analyzer and the mirror only for the subcommands
that use them, so this server holds none of podman, dnf or rich (about 25 MB).
"""

from __future__ import annotations

import logging
import signal

import gevent
from gevent.pywsgi import LoggingLogAdapter

from retracer.server.config import Config
from retracer.server.connections import make_server
from retracer.server.debuginfod.views import create_debuginfod_app


def serve_debuginfod(config: Config, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM; the caller has monkey-patched."""
    # The same connection limits and timeouts as the retrace service.
    server = make_server(
        create_debuginfod_app(config),
        config.server,
        listener=(host, port),
        log=LoggingLogAdapter(logging.getLogger("retracer.access"), logging.DEBUG),
        error_log=LoggingLogAdapter(logging.getLogger("retracer.http"), logging.ERROR),
    )
    server.start()
    # Tests and scripts read the port from this line (port 0 picks a free one).
    print(f"retracer: debuginfod serving on http://{host}:{server.server_port}", flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    server.serve_forever()
