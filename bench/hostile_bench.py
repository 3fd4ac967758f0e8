"""Hostile clients, measured side by side (not a test).

1. Memory of decoding an upload whose xz header declares a 4 GiB dictionary (with
   ZEROS MiB of zeros inside, a few hundred KiB compressed): a process reading it
   with ``lzma.LZMAFile`` (no memory limit, what the server did) against one reading
   it with the server's archive reader (a memory limit), peak RSS of each. Target:
   the server's reader stays under 1/4 of the unlimited one.
2. ``retracer serve --no-worker`` answering /checkpackage, status polls and a small
   upload, first alone, then beside IDLE connections that sent ``POST /create``
   headers and no body (each would have held an upload thread before). Target: p50
   latency with them within 2x of without, and no errors.
3. The server's peak RSS (VmHWM) after the hostile corpus of the tests, each case
   answered with its 4xx. Target: < 150 MB.

Run from the repository root:
``.venv/bin/python -m bench.hostile_bench [--idle 50] [--zeros-mib 512]``.
"""

from __future__ import annotations

import argparse
import http.client
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from testing.server.archives import abrt_archive
from testing.server.hostile import CORPUS, huge_xz_dictionary
from testing.server.live import ServeProcess, settings_mapping, write_config

XZ_TAR = "application/x-xz-compressed-tar"

UNLIMITED = """
import lzma, re, sys
with lzma.LZMAFile(sys.argv[1]) as stream:
    while stream.read(1 << 20):
        pass
print(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1], "decoded")
"""
LIMITED = """
import re, sys
from retracer.builder.archive import open_tar
from retracer.builder.errors import BuilderError
with open(sys.argv[1], "rb") as raw:
    try:
        stream = open_tar(raw, 1 << 40, 1 << 20, 80)
        stream.drain()
        said = "decoded"
    except BuilderError as error:
        said = error.reason
print(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1], said)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=50, help="idle POST /create connections")
    parser.add_argument("--requests", type=int, default=40, help="requests of each kind")
    parser.add_argument("--zeros-mib", type=int, default=512, help="size of the xz payload")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retracer-bench-") as scratch:
        root = Path(scratch)
        xz_memory(root, args.zeros_mib)
        server = Server(root / "serve")
        try:
            idle_clients(server, args.idle, args.requests)
            hostile_corpus(server)
        finally:
            server.stop()


def row(label: str, *cells: object) -> None:
    shown = [f"{c:12.2f}" if isinstance(c, float) else f"{c!s:>12}" for c in cells]
    print(f"{label:44}", *shown, flush=True)


def xz_memory(root: Path, zeros_mib: int) -> None:
    upload = root / "huge-dictionary.xz"
    print(f"compressing {zeros_mib} MiB of zeros ...", flush=True)
    upload.write_bytes(huge_xz_dictionary(zeros_mib))
    unlimited, said = peak_rss_of(UNLIMITED, upload)
    limited, refusal = peak_rss_of(LIMITED, upload)
    size = upload.stat().st_size // 1024
    row(f"xz upload of {size} KiB declaring a 4 GiB dict", "limited", "unlimited", "ratio")
    row("peak RSS of the decoding process (MB)", limited, unlimited, limited / unlimited,
        "target <= 0.25")  # fmt: skip
    print(f"  unlimited: {said}\n  limited: {refusal}\n", flush=True)


def peak_rss_of(code: str, path: Path) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter; its own peak RSS (VmHWM, which unlike
    ru_maxrss starts afresh at exec) and what it said."""
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(run.stderr)
    kib, said = run.stdout.strip().split(" ", 1)
    return int(kib) * 1024 / 1e6, said


def idle_clients(server: Server, idle: int, requests: int) -> None:
    task_id, password = server.create()
    measure(server, task_id, password, requests)  # warm-up: imports, caches, page cache
    quiet = measure(server, task_id, password, requests)
    holders = [server.idle_upload() for _ in range(idle)]
    try:
        busy = measure(server, task_id, password, requests)
    finally:
        for holder in holders:
            holder.close()
    row(f"with {idle} idle POST /create connections", "idle", "alone", "ratio")
    for name in quiet:
        if name == "errors":
            continue
        ratio = busy[name] / quiet[name]
        row(f"p50 {name} (ms)", busy[name], quiet[name], ratio, "target <= 2")
    row("errors", busy["errors"], quiet["errors"], "", "target 0")
    print(flush=True)


def measure(server: Server, task_id: str, password: str, requests: int) -> dict[str, float]:
    errors = 0

    def timed(call: Callable[[], int], expected: tuple[int, ...]) -> float:
        nonlocal errors
        started = time.perf_counter()
        if call() not in expected:
            errors += 1
        return (time.perf_counter() - started) * 1000

    headers = {"X-Package-NVR": "crasher-1.0-1", "X-Package-Arch": "x86_64"}
    results = {
        "checkpackage": [
            timed(lambda: server.get("/checkpackage", headers), (302, 404, 503))
            for _ in range(requests)
        ],
        "status": [
            timed(lambda: server.get(f"/{task_id}", {"X-Task-Password": password}), (200,))
            for _ in range(requests)
        ],
        "upload": [timed(lambda: server.post(abrt_archive()), (201,)) for _ in range(requests)],
    }
    summary = {name: statistics.median(times) for name, times in results.items()}
    summary["errors"] = float(errors)
    return summary


def hostile_corpus(server: Server) -> None:
    wrong = [name for name, case in CORPUS.items() if server.post(case.body) != case.status]
    row("hostile corpus", "value", "target", "ratio")
    row("cases", len(CORPUS))
    row("answered with another status", len(wrong), 0)
    rss = server.peak_rss_mb()
    row("server peak RSS (MB)", rss, 150, rss / 150)


class Server:
    """``retracer serve --no-worker`` on a free port, with its own data directory."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        data = settings_mapping(
            root,
            protocol_profile="abrt",
            max_unpacked_size_mib=8,
            min_free_space_mib=64,
            max_queued_tasks=100000,
            # Every client here is this one address.
            creates_per_client=1_000_000,
            uploads_per_client=1_000_000,
        )
        self._serve = ServeProcess(write_config(root / "retracer.yaml", data), root / "serve.log")
        self.port = urlsplit(self._serve.start("--no-worker")).port or 0
        assert self._serve.process is not None
        self.process = self._serve.process

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    def get(self, path: str, headers: dict[str, str]) -> int:
        return self.request("GET", path, None, headers).status

    def post(self, body: bytes) -> int:
        return self.request("POST", "/create", body, {"Content-Type": XZ_TAR}).status

    def create(self) -> tuple[str, str]:
        response = self.request("POST", "/create", abrt_archive(), {"Content-Type": XZ_TAR})
        return response.getheader("X-Task-Id") or "", response.getheader("X-Task-Password") or ""

    def idle_upload(self) -> socket.socket:
        holder = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        holder.sendall(
            f"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: {XZ_TAR}\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
        )
        return holder

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) * 1024 / 1e6  # type: ignore[index]

    def stop(self) -> None:
        self._serve.stop()


if __name__ == "__main__":
    main()
