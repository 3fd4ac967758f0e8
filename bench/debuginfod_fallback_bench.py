"""What a stalled debuginfod server costs a retrace's fallback fetch (not a test).

    .venv/bin/python -m bench.debuginfod_fallback_bench [--build-ids 5] [--timeout 1.0]

The fallback client asks a server that accepts connections and never answers
(listed first) and then a plain HTTP server that answers 404 to everything, for
BUILD_IDS build-ids. The stalled server should cost its timeout once, not once per
build-id. Target: seconds / timeout below 2. The test
``tests/builder/test_debuginfod_fallback.py`` checks the outcome (one connection, one
log line); this prints the time.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from retracer.builder.debuginfod import DebuginfodClient


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-ids", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1.0)
    arguments = parser.parse_args()
    build_ids = [secrets.token_hex(20) for _ in range(arguments.build_ids)]
    with (
        socket.socket() as stalled,
        ThreadingHTTPServer(("127.0.0.1", 0), _NotFound) as upstream,
        tempfile.TemporaryDirectory(prefix="retracer-bench-") as cache,
    ):
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(16)
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        urls = [
            f"http://127.0.0.1:{stalled.getsockname()[1]}",
            f"http://127.0.0.1:{upstream.server_address[1]}",
        ]
        lines: list[str] = []
        client = DebuginfodClient(urls, Path(cache), arguments.timeout, 1 << 20, lines.append)
        started = time.monotonic()
        client.fetch(build_ids)
        seconds = time.monotonic() - started
        upstream.shutdown()
    ratio = seconds / arguments.timeout
    print(f"| {'measure':<44} | {'seconds':>7} | {'timeout':>7} | {'ratio':>5} | target |")
    print(f"|{'-' * 46}|{'-' * 9}|{'-' * 9}|{'-' * 7}|--------|")
    verdict = "ok" if ratio < 2 else "MISSED"
    name = f"fetch of {len(build_ids)} build-ids, first server stalled"
    timeout = arguments.timeout
    print(f"| {name:<44} | {seconds:>7.2f} | {timeout:>7.2f} | {ratio:>5.2f} | {verdict:<6} |")
    print(f"client log: {lines}")


if __name__ == "__main__":
    main()
