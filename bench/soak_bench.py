"""Soak benchmark (not a test): many tasks through ``retracer serve``, nothing lost.

    .venv/bin/python -m bench.soak_bench [--count 100] [--workers 2] [--clients 8]

Sends COUNT uploads of the testos fixture crashes to ``retracer serve`` (HTTP plus
its worker, WORKERS retraces at once, a private podman service), a tenth of them
hostile (a core that is not ELF, a truncated core, an unknown release, a relative
executable, an archive cut in half), from CLIENTS concurrent clients that each
upload, then poll until the task has finished. Each fixture upload carries a core made
unique by a tag after its last segment, so every one is really retraced (--reuse sends
the cores unchanged, and repeats reuse the first result). It prints:

- completed / failed / lost tasks (lost: accepted, never finished) and refused
  uploads, for fixture and hostile uploads apart;
- p50 / p99 time from the start of an upload until the task is seen finished;
- peak RSS of every process role (serve, the worker, huey's processes), and the
  median RSS of the first and the last tenth of the run (flat: last <= first + 10%);
- after housekeeping: leaked containers, images, task folders, uploads and temp files.

Targets: 0 lost, 0 leaked, RSS flat. Environment images get a name prefix of their
own (the first retrace builds the base image, about a minute) and are removed at the
end unless --keep-images.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from retracer.builder.layout import builder_dir
from retracer.server.config import load_config
from retracer.server.spool import Spool
from retracer.server.tasks import SqliteTaskStore
from retracer.server.worker import Worker
from testing.podman_service import PodmanLauncher, PodmanService
from testing.server.archives import abrt_archive
from testing.server.live import ServeProcess
from testing.testos import Testos, build_testos

XZ_TAR = "application/x-xz-compressed-tar"
PREFIX = "retracer-soak"
PROBLEM_FILES = ("coredump", "executable", "package", "os_release")


@dataclass(frozen=True)
class Upload:
    kind: str  # "fixture" or "hostile"
    label: str  # crash name or hostile trick
    body: bytes


@dataclass
class Result:
    upload: Upload
    status: int = 0  # HTTP status of /create; 0: no answer
    outcome: str = ""  # FINISHED_SUCCESS, FINISHED_FAILURE, "lost" or ""
    seconds: float = 0.0


def fixture_uploads(testos: Testos) -> list[Upload]:
    return [
        Upload("fixture", name, crash.archive.read_bytes())
        for name, crash in sorted(testos.crashes.items())
    ]


def fresh_core(testos: Testos, name: str, number: int) -> Upload:
    """The fixture crash ``name`` with bytes after its core's last segment that make the
    core unique: the server retraces it instead of reusing an earlier result."""
    crash = testos.crashes[name]
    files = {f: (crash.problem_dir / f).read_bytes() for f in PROBLEM_FILES}
    files["coredump"] += f"soak upload {number}\n".encode()
    return Upload("fixture", name, abrt_archive(files))


def hostile_uploads(testos: Testos) -> list[Upload]:
    crash = testos.crashes["crasher"]
    files = {name: (crash.problem_dir / name).read_bytes() for name in PROBLEM_FILES}
    whole = crash.archive.read_bytes()
    tricks = {
        "not ELF": {"coredump": b"not a core\n" * 64},
        "truncated core": {"coredump": files["coredump"][:4096]},
        "unknown release": {"os_release": b"Nope release 9\n"},
        "relative executable": {"executable": b"crasher\n"},
    }
    return [
        *(
            Upload("hostile", label, abrt_archive({**files, **trick}))
            for label, trick in tricks.items()
        ),
        Upload("hostile", "truncated archive", whole[: len(whole) // 2]),
    ]


def ready(upload: Upload) -> Callable[[], Upload]:
    return lambda: upload


def run_one(url: str, make_upload: Callable[[], Upload], timeout: float) -> Result:
    upload = make_upload()
    result = Result(upload)
    started = time.monotonic()
    try:
        answer = requests.post(
            f"{url}/create", data=upload.body, headers={"Content-Type": XZ_TAR}, timeout=120
        )
    except requests.RequestException:
        return result
    result.status = answer.status_code
    if answer.status_code != 201:
        return result
    task_id = answer.headers["X-Task-Id"]
    password = answer.headers["X-Task-Password"]
    while time.monotonic() - started < timeout:
        try:
            status = requests.get(
                f"{url}/{task_id}", headers={"X-Task-Password": password}, timeout=30
            ).headers.get("X-Task-Status", "")
        except requests.RequestException:
            status = ""
        if status.startswith("FINISHED"):
            result.outcome = status
            result.seconds = time.monotonic() - started
            return result
        time.sleep(0.25)  # a client's polling interval
    result.outcome = "lost"
    return result


class RssSampler:
    """Samples VmRSS of the server and all its descendants, by role, from a thread."""

    def __init__(self, root_pid: int, interval: float = 0.5) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.samples: dict[str, list[int]] = defaultdict(list)  # role -> summed RSS per tick
        self.peaks: dict[str, int] = defaultdict(int)  # role -> largest single process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            totals: dict[str, int] = defaultdict(int)
            for pid, role in self._roles().items():
                rss = _rss(pid)
                if rss:
                    totals[role] += rss
                    self.peaks[role] = max(self.peaks[role], rss)
            for role, total in totals.items():
                self.samples[role].append(total)

    def _roles(self) -> dict[int, str]:
        roles = {self.root_pid: "serve (HTTP)"}
        parents = _parents()
        for pid, parent in parents.items():
            if parent == self.root_pid:
                roles[pid] = "worker (consumer)"
        for pid, parent in parents.items():
            if roles.get(parent) == "worker (consumer)":
                roles[pid] = "huey processes"
        return roles


def _parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = int(
                    (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def our_images(podman: PodmanService) -> set[str]:
    images = podman.cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    return {i for i in images if i.startswith(f"localhost/{PREFIX}-")}


def leaks(
    config_file: Path, podman: PodmanService, tmpdir: Path, earlier: set[str]
) -> dict[str, int]:
    """Run housekeeping once, then count what is left that nothing owns (images of an
    earlier, interrupted run, ``earlier``, are not this run's leaks)."""
    config = load_config(config_file)
    Worker(config).housekeeping()
    store = SqliteTaskStore.in_data_dir(config.data_dir)
    spool = Spool.in_data_dir(config.data_dir, config.server)
    folders = spool.task_ids()
    ids = store.ids()
    unfinished = sum(n for state, n in store.count_by_state().items() if not state.finished)
    names = podman.cli("ps", "--all", "--format", "{{.Names}}").stdout.split()
    ours = our_images(podman) - earlier
    state = builder_dir(config.data_dir)
    scratch = [state / "tmp", state / "store" / "staging"]
    temp_files = sum(1 for folder in scratch if folder.is_dir() for _ in folder.iterdir())
    temp_files += sum(1 for _ in tmpdir.iterdir())
    return {
        "containers": sum(1 for n in names if n.startswith(f"{PREFIX}-")),
        "images (not base)": sum(1 for i in ours if f"{PREFIX}-base:" not in i),
        "task folders without a task": len(folders - ids),
        "tasks without a folder": len(ids - folders),
        "tasks not finished": unfinished,
        "uploads left in incoming": sum(1 for _ in (spool.root / "incoming").iterdir()),
        "temp files": temp_files,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--hostile-share", type=float, default=0.1)
    parser.add_argument("--task-timeout", type=float, default=1800.0)
    parser.add_argument("--keep-images", action="store_true")
    parser.add_argument(
        "--reuse", action="store_true",
        help="send the fixture cores unchanged, so that repeats reuse the first result",
    )  # fmt: skip
    args = parser.parse_args()

    testos = build_testos()
    fixtures, hostile = fixture_uploads(testos), hostile_uploads(testos)
    rng = random.Random(1)
    plan: list[Callable[[], Upload]] = []
    for number in range(args.count):
        if rng.random() < args.hostile_share:
            plan.append(ready(rng.choice(hostile)))
        elif args.reuse:
            plan.append(ready(fixtures[number % len(fixtures)]))
        else:
            name = sorted(testos.crashes)[number % len(testos.crashes)]
            plan.append(functools.partial(fresh_core, testos, name, number))
    with tempfile.TemporaryDirectory(prefix="retracer-soak-", dir=Path.home()) as scratch:
        root = Path(scratch)
        launcher = PodmanLauncher(root)
        podman = launcher.start()
        tmpdir = root / "tmp"
        tmpdir.mkdir()
        config_file = root / "retracer.yaml"
        config_file.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(root / "data"),
                    "server": {
                        "port": 0,
                        "workers": args.workers,
                        "max_queued_tasks": args.count + 100,
                        "min_free_space_mib": 1,
                        "protocol_profile": "abrt",
                        # The clients all come from 127.0.0.1 and stand for many users.
                        "creates_per_client": args.count + 100,
                        "uploads_per_client": args.clients,
                    },
                    "builder": {"podman_url": podman.url, "name_prefix": PREFIX},
                    "releases": [testos.release_config()],
                }
            )
        )
        os.environ["TMPDIR"] = str(tmpdir)  # the server's temp files, to count leftovers
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")  # as deployed (see the README)
        server = ServeProcess(config_file, root / "serve.log")
        earlier = our_images(podman)
        try:
            url = server.start()
            assert server.process is not None
            sampler = RssSampler(server.process.pid)
            sampler.start()
            started = time.monotonic()
            results: list[Result] = []
            with ThreadPoolExecutor(args.clients) as pool:
                futures = [pool.submit(run_one, url, u, args.task_timeout) for u in plan]
                for number, future in enumerate(futures, 1):
                    results.append(future.result())
                    if number % max(1, args.count // 20) == 0:
                        print(f"  {number}/{args.count} done, {time.monotonic() - started:.0f} s",
                              flush=True)  # fmt: skip
            sampler.stop()
            wall = time.monotonic() - started
            server.stop()
            report(results, sampler, wall, leaks(config_file, podman, tmpdir, earlier))
        finally:
            server.stop()
            if not args.keep_images:
                for image in our_images(podman):
                    podman.cli("rmi", "--force", image, check=False)
            launcher.stop()


def report(results: list[Result], sampler: RssSampler, wall: float, leaked: dict[str, int]) -> None:
    print(f"\n{len(results)} uploads in {wall:.0f} s")
    print(f"{'uploads':10} {'sent':>6} {'refused':>8} {'completed':>10} {'failed':>7} "
          f"{'lost':>5} {'5xx/none':>9}")  # fmt: skip
    for kind in ("fixture", "hostile"):
        mine = [r for r in results if r.upload.kind == kind]
        outcomes = Counter(r.outcome for r in mine)
        refused = sum(1 for r in mine if 400 <= r.status < 500)
        broken = sum(1 for r in mine if r.status == 0 or r.status >= 500)
        print(f"{kind:10} {len(mine):>6} {refused:>8} {outcomes['FINISHED_SUCCESS']:>10} "
              f"{outcomes['FINISHED_FAILURE']:>7} {outcomes['lost']:>5} {broken:>9}")  # fmt: skip
    hostile = Counter(
        (r.upload.label, r.status if r.status != 201 else r.outcome)
        for r in results
        if r.upload.kind == "hostile"
    )
    for (label, answer), n in sorted(hostile.items(), key=str):
        print(f"  hostile {label!r}: {answer} x{n}")
    times = [r.seconds for r in results if r.outcome.startswith("FINISHED")]
    print(
        f"time to finish: p50 {percentile(times, 0.5):.1f} s, p99 {percentile(times, 0.99):.1f} s"
    )
    # Peak: the largest single process of the role; first/last: the role's total.
    print(f"\n{'process role':20} {'peak MiB':>9} {'first 10%':>10} {'last 10%':>9}  flat")
    for role, samples in sorted(sampler.samples.items()):
        tenth = max(1, len(samples) // 10)
        first = statistics.median(samples[:tenth]) / 2**20
        last = statistics.median(samples[-tenth:]) / 2**20
        flat = "met" if last <= first * 1.1 + 1 else "MISSED"
        print(f"{role:20} {sampler.peaks[role] / 2**20:>9.0f} {first:>10.0f} {last:>9.0f}  {flat}")
    print("\nafter housekeeping:")
    for what, n in leaked.items():
        print(f"  {what}: {n}{'' if n == 0 else '  (target 0: MISSED)'}")
    lost = sum(1 for r in results if r.outcome == "lost")
    print(f"\nlost: {lost} (target 0: {'met' if lost == 0 else 'MISSED'})")


if __name__ == "__main__":
    main()
