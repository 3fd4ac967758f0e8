"""Retrace speed, measured side by side with the plain way of doing the same work.

For each testos crash it prints:

- warm: a retrace whose packages are in the store, against bare host ``gdb -batch``
  on the same core with the same binaries and debuginfo (installed into a sysroot);
- cold: a retrace with an empty package store (every package unpacked, the view
  built), against a plain ``dnf install`` of the same packages into a fresh
  container plus the bare gdb.

Targets: warm <= 1.5 x bare gdb + 0.5 s; cold <= 1.2 x (plain install + gdb).

It measures twice: in the testos repository as built (23 packages, where fixed
container costs dominate), and with the same packages among ``--filler`` others in a
repository the size of a Fedora release's (see :mod:`bench.fedora_sized`), where a
plain install must read the whole metadata and retracer reads its cached copy. The
first table's header also shows the build-id index: its build time and a lookup.

Run from the repository root:
``.venv/bin/python -m bench.retrace_bench [--rounds N] [--filler N]``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from podman import PodmanClient

from bench.fedora_sized import fedora_sized_repository
from retracer.builder.environment import REPOSITORY_MOUNT
from retracer.builder.retrace import Analyzer
from retracer.builder.sandbox import Sandbox
from retracer.builder.settings import BuilderSettings
from retracer.sync.bootstrap import install_into_root
from retracer.sync.settings import BootstrapBase, ReleaseSettings
from testing.podman_service import ULIMITS, PodmanLauncher
from testing.testos import Crash, Testos, build_testos


def timed(action: Callable[[], object], rounds: int) -> float:
    """Median wall-clock seconds of ``rounds`` runs."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def bare_gdb(sysroot: Path, crash: Crash) -> None:
    subprocess.run(
        [
            "gdb", "-nx", "-batch",
            "-iex", "set debuginfod enabled off",
            "-ex", f"set sysroot {sysroot}",
            "-ex", f"set debug-file-directory {sysroot}/usr/lib/debug",
            "-ex", f"file {sysroot}{crash.executable}",
            "-ex", f"core-file {crash.core}",
            "-ex", "thread apply all -ascending backtrace full",
            "-ex", "info sharedlibrary",
            "-ex", "info registers",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


def plain_install(
    client: PodmanClient, base: str, release: ReleaseSettings, nevras: list[str]
) -> None:
    """What anyone would do by hand: a fresh container, dnf install, throw it away."""
    command = [
        "dnf", "install", "-y", "--nogpgcheck", "--quiet", "--setopt=reposdir=/dev/null",
        "--disablerepo=*", f"--repofrompath=plain,{REPOSITORY_MOUNT}/0", "--enablerepo=plain",
        *nevras,
    ]  # fmt: skip
    container = client.containers.create(
        base,
        command=["sh", "-c", shlex.join(command)],
        network_mode="none",
        ulimits=ULIMITS,
        mounts=[
            {
                "type": "bind",
                "source": str(release.repositories[0]),
                "target": f"{REPOSITORY_MOUNT}/0",
                "read_only": True,
            }
        ],
    )
    try:
        container.start()
        if container.wait(interval="10ms") != 0:  # the same polling retracer uses
            raise RuntimeError("plain dnf install failed")
    finally:
        container.remove(force=True)


def empty_store(analyzer: Analyzer) -> None:
    """Evict every package and drop every view: the next retrace starts cold."""
    store = analyzer.store
    cap, store.max_bytes = store.max_bytes, 0
    try:
        store.evict()
    finally:
        store.max_bytes = cap
    views = analyzer.state_dir / "views"
    for view in views.iterdir() if views.is_dir() else ():
        shutil.rmtree(view)


def cold_retrace(analyzer: Analyzer, crash: Crash) -> float:
    """Seconds of one retrace with an empty store."""
    empty_store(analyzer)
    started = time.perf_counter()
    analyzer.retrace(crash.problem_dir)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--filler", type=int, default=100_000,
        help="metadata-only packages around testos in the Fedora-sized repository; 0 skips it",
    )  # fmt: skip
    args = parser.parse_args()

    testos = build_testos()
    repositories = {"testos repository": testos.repo}
    if args.filler:
        started = time.perf_counter()
        repository = fedora_sized_repository(testos.repo, args.filler)
        print(f"Fedora-sized repository ready ({time.perf_counter() - started:.1f} s)")
        repositories[f"testos among {args.filler} packages"] = repository
    failures = 0
    with tempfile.TemporaryDirectory(prefix="retrace-bench-") as scratch:
        launcher = PodmanLauncher(Path(scratch))
        service = launcher.start()
        settings = BuilderSettings(podman_url=service.url, name_prefix="retracer-bench")
        client = PodmanClient(base_url=service.url)
        try:
            sysroots = Path(scratch) / "sysroots"
            for number, (label, repository) in enumerate(repositories.items()):
                release = testos_release(testos, repository)
                state = Path(scratch) / f"state-{number}"
                bench = Bench(settings, client, release, state, sysroots, args.rounds)
                failures += bench.run(label, testos)
        finally:
            with Sandbox(settings) as sandbox:
                for image in sandbox.images():
                    sandbox.remove_image(image)
            client.close()
            launcher.stop()
    print("\nwarm target: <= 1.5 x bare gdb + 0.5 s; cold target: <= 1.2 x (plain install + gdb)")
    sys.exit(1 if failures else 0)


def testos_release(testos: Testos, repository: Path) -> ReleaseSettings:
    config = testos.release_config()
    return ReleaseSettings(
        **{
            **config,
            "repositories": (repository,),
            "bootstrap": BootstrapBase(tuple(config["bootstrap"]["packages"])),
        }
    )


class Bench:
    """Every crash of one repository, measured against its plain counterpart."""

    def __init__(
        self,
        settings: BuilderSettings,
        client: PodmanClient,
        release: ReleaseSettings,
        state: Path,
        sysroots: Path,
        rounds: int,
    ) -> None:
        self.settings = settings
        self.client = client
        self.release = release
        self.analyzer = Analyzer(settings, [release], state)
        self.sysroots = sysroots
        self.rounds = rounds
        self.base = self.analyzer.base_image(release)

    def run(self, label: str, testos: Testos) -> int:
        """Print one table; returns how many targets were missed."""
        crashes = sorted(testos.crashes.items())
        index = self.analyzer.index(self.release)
        indexing = timed(lambda: index.find(crashes[0][1].package, "x86_64"), 1)
        lookup = timed(lambda: index.match_build_ids(["0" * 40, "f" * 40]), 100)
        # The first cold retrace after new metadata also builds the index, once per sync.
        empty_store(self.analyzer)
        first = timed(lambda: self.analyzer.retrace(crashes[0][1].problem_dir), 1)
        print(
            f"\n{label}: index built in {indexing:.2f} s, a build-id lookup takes"
            f" {lookup * 1000:.2f} ms; the first cold retrace after new metadata {first:.1f} s"
        )
        print(f"{'crash':<12} {'warm':>7} {'bare gdb':>9} {'warm/gdb':>9} {'target':>7}"
              f" {'cold':>7} {'plain':>7} {'cold/plain':>11} {'target':>7}")  # fmt: skip
        return sum(self.row(name, crash, testos) for name, crash in crashes)

    def row(self, name: str, crash: Crash, testos: Testos) -> int:
        result = self.analyzer.retrace(crash.problem_dir)
        nevras = [p.nevra for p in result.package_set.packages]
        sysroot = self.sysroots / name
        if not sysroot.exists():  # the same packages whatever the repository around them
            install_into_root((testos.repo,), nevras, sysroot, "1")

        # Interleaved, round by round, so that a slow spell of the machine hits both
        # sides of a comparison alike. A cold retrace leaves its packages in the store
        # again for the next warm one.
        samples: dict[str, list[float]] = {"warm": [], "gdb": [], "cold": [], "install": []}
        for _ in range(self.rounds):
            samples["warm"].append(timed(lambda: self.analyzer.retrace(crash.problem_dir), 1))
            samples["gdb"].append(timed(lambda: bare_gdb(sysroot, crash), 1))
            samples["cold"].append(cold_retrace(self.analyzer, crash))
            samples["install"].append(
                timed(lambda: plain_install(self.client, self.base, self.release, nevras), 1)
            )
        warm, gdb, cold, install = (statistics.median(samples[k]) for k in samples)
        plain = install + gdb

        warm_ok = warm <= 1.5 * gdb + 0.5
        cold_ok = cold <= 1.2 * plain
        print(
            f"{name:<12} {warm:>6.2f}s {gdb:>8.2f}s {warm / gdb:>8.2f}x"
            f" {'ok' if warm_ok else 'MISS':>7} {cold:>6.2f}s {plain:>6.2f}s"
            f" {cold / plain:>10.2f}x {'ok' if cold_ok else 'MISS':>7}",
            flush=True,
        )
        return (not warm_ok) + (not cold_ok)


if __name__ == "__main__":
    main()
