"""retracer's debuginfod against elfutils' own ``debuginfod -R``, side by side.

Both index the same RPM repositories from a fresh start: testos as built (23
packages), then the same packages among ``--filler`` generated RPM files (see
:mod:`bench.rpm_filled`). For each repository and server, in one run:

- first answer: seconds from starting the server until it answers a debuginfo
  request for a testos build-id with 200 (each server indexes in its own way first);
- cold: the median latency of first requests for five other files (executables of
  other testos packages), once the server has indexed the whole repository
  (elfutils: its scan queue is empty);
- hot p50/p99 and requests/s: ``wrk`` with 50 connections on one already-fetched
  file, ``--seconds`` per round, the two servers alternating round by round
  (``--rounds``); medians are shown;
- RSS: the server's peak resident memory (VmHWM) at the end.

Targets: retracer ahead of elfutils on first answer and on every latency and
throughput line; RSS within 3x of elfutils'. retracer runs as ``retracer
debuginfod``, the command a host would run.

Run from the repository root:
``.venv/bin/python -m bench.debuginfod_bench [--rounds N] [--seconds S] [--filler N]``.
"""

from __future__ import annotations

import argparse
import http.client
import re
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.rpm_filled import rpm_filled_repository
from testing.testos import Testos, build_testos

POLL_SECONDS = 0.01
START_TIMEOUT = 600.0
CONNECTIONS = 50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def status_of(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def metrics_of(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()
    except OSError:
        return ""
    finally:
        connection.close()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


@dataclass
class Server:
    """One debuginfod implementation over one repository, started fresh."""

    name: str
    command: Callable[[Path, int], list[str]]
    indexed: Callable[[int], bool]  # True once the whole repository is indexed
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    log: Path = field(default_factory=Path)

    def start(self, work: Path) -> None:
        self.port = free_port()
        self.log = work / f"{self.name}.log"
        with self.log.open("wb") as log:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                self.command(work, self.port), stdout=log, stderr=subprocess.STDOUT
            )

    def wait_for(self, path: str) -> float:
        """Seconds since start until ``path`` answers 200."""
        deadline = self.started + START_TIMEOUT
        while status_of(self.port, path) != 200:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-2000:]}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.name} did not answer {path}")
            time.sleep(POLL_SECONDS)
        return time.perf_counter() - self.started

    def wait_indexed(self) -> None:
        deadline = time.perf_counter() + START_TIMEOUT
        while not self.indexed(self.port):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.name} did not finish indexing")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def retracer_server(testos: Testos, repository: Path) -> Server:
    def command(work: Path, port: int) -> list[str]:
        release = {**testos.release_config(), "repositories": [str(repository)]}
        config = {"data_dir": str(work / "retracer-data"), "releases": [release]}
        config_file = work / "retracer.yaml"
        config_file.write_text(yaml.safe_dump(config))
        return [".venv/bin/retracer", "--config", str(config_file), "debuginfod",
                "--port", str(port)]  # fmt: skip

    # Its index is built whole before the first answer.
    return Server("retracer", command, indexed=lambda _port: True)


def elfutils_server(repository: Path) -> Server:
    def command(work: Path, port: int) -> list[str]:
        return ["debuginfod", "-R", str(repository), "-d", str(work / "elfutils.sqlite"),
                "-p", str(port)]  # fmt: skip

    def indexed(port: int) -> bool:
        text = metrics_of(port)
        pending = re.search(r'^thread_work_pending\{role="scan"\} (\S+)$', text, re.M)
        busy = re.search(r'^thread_busy\{role="scan"\} (\S+)$', text, re.M)
        traverse = re.search(r'^thread_busy\{role="traverse"\} (\S+)$', text, re.M)
        found = [pending, busy, traverse]
        return all(m is not None and float(m[1]) == 0 for m in found)

    return Server("elfutils", command, indexed)


_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def hot_load(port: int, path: str, seconds: float) -> tuple[float, float, float]:
    """p50 ms, p99 ms and requests/s of wrk with CONNECTIONS connections."""
    done = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{round(seconds)}s", "--latency",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    latency = {m[1]: float(m[2]) * _UNIT[m[3]] for m in _WRK_LATENCY.finditer(done.stdout)}
    rate = _WRK_RATE.search(done.stdout)
    if rate is None or set(latency) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output:\n{done.stdout}")
    return latency["50"], latency["99"], float(rate[1])


@dataclass
class Figures:
    first_answer: float = 0.0
    cold_ms: float = 0.0
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    rss_mib: float = 0.0


def measure(testos: Testos, repository: Path, label: str, rounds: int, seconds: float) -> None:
    first = _build_id(testos, "crasher-1.0-1")
    first_path = f"/buildid/{first}/debuginfo"
    cold_paths = [
        f"/buildid/{_build_id(testos, nvr)}/executable"
        for nvr in ("crasher-1.1-1", "threadcrash-1.0-1", "threadcrash-1.1-1",
                    "cxxabort-1.0-1", "cxxabort-1.1-1")
    ]  # fmt: skip
    servers = [retracer_server(testos, repository), elfutils_server(repository)]
    figures = {server.name: Figures() for server in servers}
    with tempfile.TemporaryDirectory(prefix="debuginfod-bench-") as scratch:
        try:
            for server in servers:
                work = Path(scratch) / server.name
                work.mkdir()
                server.start(work)
                found = figures[server.name]
                found.first_answer = server.wait_for(first_path)
                server.wait_indexed()
                samples = []
                for cold_path in cold_paths:
                    started = time.perf_counter()
                    status = status_of(server.port, cold_path)
                    samples.append((time.perf_counter() - started) * 1000)
                    if status != 200:
                        raise RuntimeError(f"{server.name} answered {status} for {cold_path}")
                found.cold_ms = statistics.median(samples)
            for _ in range(rounds):
                for server in servers:
                    p50, p99, rate = hot_load(server.port, first_path, seconds)
                    figures[server.name].p50.append(p50)
                    figures[server.name].p99.append(p99)
                    figures[server.name].rate.append(rate)
            for server in servers:
                assert server.process is not None
                figures[server.name].rss_mib = peak_rss_mib(server.process.pid)
        finally:
            for server in servers:
                server.stop()
    report(label, figures["retracer"], figures["elfutils"])


def report(label: str, ours: Figures, theirs: Figures) -> None:
    rows = [
        ("time to first answer (s)", ours.first_answer, theirs.first_answer, "lower"),
        ("cold request, median (ms)", ours.cold_ms, theirs.cold_ms, "lower"),
        ("hot p50 (ms)", statistics.median(ours.p50), statistics.median(theirs.p50), "lower"),
        ("hot p99 (ms)", statistics.median(ours.p99), statistics.median(theirs.p99), "lower"),
        ("hot requests/s", statistics.median(ours.rate), statistics.median(theirs.rate), "higher"),
        ("peak RSS (MiB)", ours.rss_mib, theirs.rss_mib, "rss"),
    ]
    print(f"\n{label}")
    print(f"| {'measure':<26} | {'retracer':>9} | {'elfutils':>9} | {'ratio':>6} | target |")
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 11}|{'-' * 8}|--------|")
    for name, mine, other, better in rows:
        ratio = mine / other if other else float("inf")
        if better == "lower":
            met = mine < other
        elif better == "higher":
            met = mine > other
        else:
            met = ratio <= 3.0
        verdict = "met" if met else "MISSED"
        print(f"| {name:<26} | {mine:>9.2f} | {other:>9.2f} | {ratio:>6.2f} | {verdict:<6} |")


def _build_id(testos: Testos, nvr: str) -> str:
    (rpm_file,) = testos.repo.rglob(f"{nvr}.x86_64.rpm")
    listing = subprocess.run(
        ["rpm", "-qlp", "--nosignature", str(rpm_file)], capture_output=True, text=True, check=True
    ).stdout.split()
    for path in listing:
        if found := re.match(r"^/usr/lib/\.build-id/([0-9a-f]{2})/([0-9a-f]+)$", path):
            return found[1] + found[2]
    raise LookupError(f"{nvr} has no build-id link")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="hot-load rounds per server")
    parser.add_argument("--seconds", type=int, default=8, help="seconds per hot round")
    parser.add_argument("--filler", type=int, default=2000, help="generated RPM files")
    arguments = parser.parse_args()
    testos = build_testos()
    print(f"wrk: {CONNECTIONS} connections; medians of {arguments.rounds} alternating rounds")
    measure(testos, testos.repo, "testos (23 RPM files)", arguments.rounds, arguments.seconds)
    big = rpm_filled_repository(testos.repo, arguments.filler)
    count = sum(1 for _ in big.rglob("*.rpm"))
    measure(testos, big, f"testos among generated packages ({count} RPM files)",
            arguments.rounds, arguments.seconds)  # fmt: skip


if __name__ == "__main__":
    main()
