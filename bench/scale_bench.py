"""Scale-out benchmark: 60 fixture crashes through 1, 2 and 3 worker hosts.

Each run builds the multi-host deployment of the tests (tests/hosts.py): the front end
with PostgreSQL and Redis in one network namespace, and N worker hosts in namespaces of
their own, each with its own podman service, its own mirror synced over HTTP and one
retrace at a time (``server.workers: 1``), so a host is the unit that is added. Every
crash has a core of its own (a few bytes appended), so no result is reused.

Printed side by side per host count: retraces per minute, p50 and p99 seconds from
upload to result, the CPU seconds of each host's retracer processes, and the machine's
CPU use over the run (gdb and podman run in containers outside the hosts' namespaces,
so their CPU shows only in the machine's figure).

    .venv/bin/python -m bench.scale_bench [--crashes 60] [--hosts 1 2 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from retracer.server.tasks import TaskStore
from testing.hosts import Deployment
from testing.server.archives import abrt_archive
from testing.testos import build_testos
from testing.testos.problem import ARCHIVE_MEMBERS

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    hosts: int
    seconds: float
    per_minute: float
    p50: float
    p99: float
    failed: int
    host_cpu: tuple[float, ...]
    machine_busy: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crashes", type=int, default=60)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    testos = build_testos()
    crash = testos.crashes["crasher"]
    files = {name: (crash.problem_dir / name).read_bytes() for name in ARCHIVE_MEMBERS}
    archives = [
        abrt_archive({**files, "coredump": files["coredump"] + f"crash {n}".encode()})
        for n in range(args.crashes)
    ]
    runs = [run(testos, archives, hosts) for hosts in args.hosts]
    print_table(runs, args.crashes)


def run(testos: object, archives: list[bytes], hosts: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="retracer-scale-bench-") as folder:
        deployment = Deployment(Path(folder), testos)  # type: ignore[arg-type]
        try:
            deployment.start()
            workers = [deployment.add_worker(f"host{n + 1}") for n in range(hosts)]
            store = deployment.store()
            wait_for_workers(deployment, hosts)
            sampler = CpuSampler([worker.namespace.name for worker in workers])
            sampler.start()
            started, busy_before = time.monotonic(), machine_ticks()
            ids = [create(deployment, archive) for archive in archives]
            wait_all(store, ids)
            seconds = time.monotonic() - started
            busy_after = machine_ticks()
            sampler.stop()
            return summarise(store, ids, hosts, seconds, sampler.seconds(),
                             busy_fraction(busy_before, busy_after))  # fmt: skip
        finally:
            deployment.remove()


def create(deployment: Deployment, archive: bytes) -> str:
    response = requests.post(
        f"{deployment.url}/create",
        data=archive,
        headers={"Content-Type": "application/x-xz-compressed-tar"},
        timeout=60,
    )
    if response.status_code != 201:
        serve_log = (deployment.front_folder / "serve.log").read_text()[-3000:]
        raise SystemExit(f"/create answered {response.status_code}: {response.text}{serve_log}")
    return response.headers["X-Task-Id"]


def wait_for_workers(deployment: Deployment, hosts: int) -> None:
    deadline = time.monotonic() + 120
    while (
        f"workers_alive x86_64:{hosts}\n"
        not in requests.get(f"{deployment.url}/settings", timeout=10).text
    ):
        if time.monotonic() > deadline:
            raise SystemExit(f"the workers did not start\n{deployment.logs()}")
        time.sleep(0.2)


def wait_all(store: TaskStore, ids: list[str]) -> None:
    deadline = time.monotonic() + 3600
    while not all(store.get(task_id).state.finished for task_id in ids):
        if time.monotonic() > deadline:
            raise SystemExit("the tasks did not finish within an hour")
        time.sleep(0.5)


def summarise(store: TaskStore, ids: list[str], hosts: int, seconds: float,
              host_cpu: tuple[float, ...], busy: float) -> Run:  # fmt: skip
    tasks = [store.get(task_id) for task_id in ids]
    times = sorted((task.finished or 0) - task.created for task in tasks)
    failed = sum(1 for task in tasks if task.reason is not None)
    return Run(
        hosts=hosts,
        seconds=seconds,
        per_minute=len(ids) / seconds * 60,
        p50=statistics.median(times),
        p99=times[max(0, round(0.99 * len(times)) - 1)],
        failed=failed,
        host_cpu=host_cpu,
        machine_busy=busy,
    )


class CpuSampler:
    """CPU seconds of the processes in each namespace, sampled twice a second (a
    process's last sample counts, so one that exits between samples loses little)."""

    def __init__(self, namespaces: list[str]) -> None:
        self._namespaces = namespaces
        self._latest: list[dict[int, float]] = [{} for _ in namespaces]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def seconds(self) -> tuple[float, ...]:
        return tuple(sum(latest.values()) for latest in self._latest)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for index, name in enumerate(self._namespaces):
                for pid in namespace_pids(name):
                    used = process_seconds(pid)
                    if used is not None:
                        self._latest[index][pid] = used


def namespace_pids(name: str) -> list[int]:
    listed = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                            check=False).stdout.split()  # fmt: skip
    return [int(pid) for pid in listed]


def process_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def print_table(runs: list[Run], crashes: int) -> None:
    first = runs[0].per_minute
    print(f"{crashes} crashes, one retrace at a time per worker host, {os.cpu_count()} CPUs")
    print(f"{'hosts':>5} {'seconds':>8} {'per min':>8} {'vs 1':>6} {'p50 s':>7} {'p99 s':>7}"
          f" {'failed':>6} {'machine CPU':>11}  retracer CPU s per host")  # fmt: skip
    for one in runs:
        cpu = " ".join(f"{seconds:.1f}" for seconds in one.host_cpu)
        print(f"{one.hosts:>5} {one.seconds:>8.1f} {one.per_minute:>8.1f}"
              f" {one.per_minute / first:>5.2f}x {one.p50:>7.1f} {one.p99:>7.1f}"
              f" {one.failed:>6} {one.machine_busy:>10.0%}  {cpu}")  # fmt: skip


if __name__ == "__main__":
    main()
