"""``retracer debuginfod``: the debuginfod requests alone, on gevent's WSGI server.

For hosts that want debuginfod apart from the retrace service: it reads the same
configuration, repositories and index, and keeps its cache in the same place.

The command replaces its process with ``python -m retracer.server.debuginfod.serve``
(exec): the server then holds only what it uses, and not the modules the rest of
the ``retracer`` command imports (podman, dnf, rich...), about 25 MB of memory.
"""

from __future__ import annotations

if __name__ == "__main__":  # before anything imports socket or threading
    from gevent import monkey

    monkey.patch_all(ssl=False)

import argparse
import logging
import os
import signal
import sys

import gevent
from gevent.pywsgi import LoggingLogAdapter, WSGIServer

from retracer.server.config import Config, load_config
from retracer.server.debuginfod.views import create_debuginfod_app
from retracer.server.errors import ConfigError
from retracer.server.sendfile import SendfileHandler


def exec_server(config_file: str, host: str, port: int) -> None:
    """Replace this process with the lean server (never returns)."""
    command = [sys.executable, "-m", __name__, "--config", config_file, "--host", host]
    os.execv(sys.executable, [*command, "--port", str(port)])


def serve_debuginfod(config: Config, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM; the caller has monkey-patched."""
    server = WSGIServer(
        (host, port),
        create_debuginfod_app(config),
        handler_class=SendfileHandler,
        log=LoggingLogAdapter(logging.getLogger("retracer.access"), logging.DEBUG),
        error_log=LoggingLogAdapter(logging.getLogger("retracer.http"), logging.ERROR),
    )
    server.start()
    # Tests and scripts read the port from this line (port 0 picks a free one).
    print(f"retracer: debuginfod serving on http://{host}:{server.server_port}", flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="retracer debuginfod")
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        print(f"retracer: {error.reason}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve_debuginfod(config, arguments.host, arguments.port)


if __name__ == "__main__":
    main()
