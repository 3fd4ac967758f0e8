"""Retraces at real size through the package store, side by side with the plain way.

The release is :mod:`bench.realistic_release`: one program mapping 110 libraries
from 110 packages, over 1 GiB of installed debuginfo per crash, and 20 crashes
whose libraries change by 2-5 versions from one to the next. The crashes are
retraced in order by one analyzer whose store starts empty, as a server's would
after an update stream. For each crash it prints:

- cold: the retrace's time (packages new to the store unpacked, the rest reused),
  against plain: a fresh container of the same base image where ``dnf install``
  installs the same NEVRAs from the same repositories and bare gdb then prints the
  backtrace from the same core;
- the store's disk use, against the sum of the installed sizes of the unique NEVRAs
  seen so far, and against what one image per package set would have taken.

Targets: first crash <= 1.0 x plain; every later one <= 0.25 x plain;
store <= 1.1 x unique NEVRAs.

Run from the repository root: ``.venv/bin/python -m bench.store_bench``.
The release is built and cached on the first run (several minutes).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import rpm
from podman import PodmanClient

from bench.realistic_release import PROGRAM, BenchCrash, build_release, load
from retracer.builder.environment import REPOSITORY_MOUNT
from retracer.builder.retrace import Analyzer
from retracer.builder.sandbox import Sandbox
from retracer.builder.settings import BuilderSettings, SandboxLimits
from retracer.sync.settings import BootstrapBase, ReleaseSettings
from testing.podman_service import ULIMITS, PodmanLauncher
from testing.testos import Testos, build_testos

CORE_MOUNT = "/srv/bench/core"


def release_settings(testos: Testos, repositories: tuple[Path, ...]) -> ReleaseSettings:
    config = testos.release_config()
    return ReleaseSettings(
        **{
            **config,
            "repositories": repositories,
            "bootstrap": BootstrapBase(tuple(config["bootstrap"]["packages"])),
        }
    )


def plain(client: PodmanClient, base: str, release: ReleaseSettings, nevras: list[str],
          crash: BenchCrash) -> float:  # fmt: skip
    """Seconds of a fresh container that dnf-installs ``nevras`` and runs bare gdb."""
    repos = []
    mounts = [{"type": "bind", "source": str(crash.core), "target": CORE_MOUNT,
               "read_only": True}]  # fmt: skip
    for number, path in enumerate(release.repositories):
        repos += [
            f"--repofrompath=r{number},{REPOSITORY_MOUNT}/{number}",
            f"--enablerepo=r{number}",
        ]
        mounts.append({"type": "bind", "source": str(path),
                       "target": f"{REPOSITORY_MOUNT}/{number}", "read_only": True})  # fmt: skip
    install = [
        "dnf", "install", "-y", "--nogpgcheck", "--quiet", "--setopt=reposdir=/dev/null",
        "--setopt=install_weak_deps=False", "--disablerepo=*", *repos, *nevras,
    ]  # fmt: skip
    gdb = [
        "gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off",
        "-ex", f"file /usr/bin/{PROGRAM}", "-ex", f"core-file {CORE_MOUNT}",
        "-ex", "thread apply all -ascending backtrace full", "-ex", "info sharedlibrary",
    ]  # fmt: skip
    started = time.perf_counter()
    container = client.containers.create(
        base,
        command=["sh", "-c", f"{shlex.join(install)} && {shlex.join(gdb)} > /dev/null"],
        network_mode="none",
        ulimits=ULIMITS,
        mounts=mounts,
    )
    try:
        container.start()
        if container.wait(interval="10ms") != 0:
            logs = b"".join(container.logs()).decode(errors="replace")
            raise RuntimeError(f"plain install failed:\n{logs[-2000:]}")
    finally:
        container.remove(force=True)
    return time.perf_counter() - started


class Sizes:
    """Installed sizes of NEVRAs, read from their RPM headers once."""

    def __init__(self) -> None:
        self._sizes: dict[str, int] = {}
        self._ts = rpm.TransactionSet()
        self._ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)

    def of(self, nevra: str, path: Path) -> int:
        if nevra not in self._sizes:
            with open(path, "rb") as file:
                self._sizes[nevra] = int(self._ts.hdrFromFdno(file.fileno())["size"])
        return self._sizes[nevra]


def disk_use(folder: Path) -> int:
    """Bytes of blocks the folder's files take, each inode once."""
    seen: set[int] = set()
    total = 0
    for directory, folders, names in os.walk(folder):
        for name in [*folders, *names]:
            info = os.lstat(os.path.join(directory, name))
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
    return total


def mib(size: int) -> str:
    return f"{size / (1 << 20):.0f}M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crashes", type=int, default=20)
    args = parser.parse_args()
    testos = build_testos()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="store-bench-") as scratch:
        launcher = PodmanLauncher(Path(scratch))
        service = launcher.start()
        limits = SandboxLimits(memory_mib=4096, gdb_timeout_seconds=900)
        settings = BuilderSettings(
            podman_url=service.url, name_prefix="retracer-storebench", limits=limits
        )
        client = PodmanClient(base_url=service.url)
        try:
            crash_base = Analyzer(
                settings, [release_settings(testos, (testos.repo,))], Path(scratch) / "base"
            ).base_image(release_settings(testos, (testos.repo,)))
            started = time.perf_counter()
            root = build_release(crash_base, lambda *a: _podman(service, *a))
            print(f"release ready at {root} ({time.perf_counter() - started:.0f} s)")
            bench = load(root)
            release = release_settings(testos, (bench.repo, testos.repo))
            analyzer = Analyzer(settings, [release], Path(scratch) / "state")
            started = time.perf_counter()
            base = analyzer.base_image(release)
            print(f"base image ready ({time.perf_counter() - started:.0f} s)")
            failures = run(analyzer, client, base, release, bench.crashes[: args.crashes])
        finally:
            with Sandbox(settings) as sandbox:
                for image in sandbox.images():
                    sandbox.remove_image(image)
            client.close()
            launcher.stop()
    print("\ntargets: first <= 1.0 x plain; later <= 0.25 x plain; store <= 1.1 x unique")
    sys.exit(1 if failures else 0)


def _podman(service: object, *args: str) -> object:
    return service.cli(*args)  # type: ignore[attr-defined]


def run(analyzer: Analyzer, client: PodmanClient, base: str, release: ReleaseSettings,
        crashes: list[BenchCrash]) -> int:  # fmt: skip
    sizes = Sizes()
    index = analyzer.index(release)
    unique: dict[str, int] = {}
    per_set_images = 0
    failures = 0
    print(
        f"{'crash':<9} {'pkgs':>5} {'new':>4} {'debuginfo':>10} {'cold':>7} {'plain':>7}"
        f" {'ratio':>6} {'target':>6}   {'store':>6} {'unique':>7} {'ratio':>6}"
        f" {'per-set':>8}   slowest steps"
    )
    for number, crash in enumerate(crashes):
        started = time.perf_counter()
        result = analyzer.retrace(crash.problem_dir)
        cold = time.perf_counter() - started
        if crash.crash_library not in result.backtrace:
            raise RuntimeError(f"{crash.name}: the backtrace misses {crash.crash_library}")
        packages = result.package_set.packages
        files = index.package_files(packages)
        nevras = [p.nevra for p in packages]
        set_size = sum(sizes.of(p.nevra, files[p]) for p in packages)
        debuginfo = sum(sizes.of(p.nevra, files[p]) for p in packages if "debug" in p.name)
        new = [n for n in nevras if n not in unique]
        for p in packages:
            unique[p.nevra] = sizes.of(p.nevra, files[p])
        per_set_images += set_size
        plain_seconds = plain(client, base, release, nevras, crash)
        store = disk_use(analyzer.store.packages_dir)
        ratio = cold / plain_seconds
        target = 1.0 if number == 0 else 0.25
        store_ratio = store / sum(unique.values())
        ok = ratio <= target and store_ratio <= 1.1
        failures += not ok
        steps = sorted(result.steps, key=lambda s: -s.seconds)[:3]
        print(
            f"{crash.name:<9} {len(nevras):>5} {len(new):>4} {mib(debuginfo):>10}"
            f" {cold:>6.1f}s {plain_seconds:>6.1f}s {ratio:>5.2f}x {'ok' if ok else 'MISS':>6}"
            f"   {mib(store):>6} {mib(sum(unique.values())):>7} {store_ratio:>5.2f}x"
            f" {mib(per_set_images):>8}   "
            + ", ".join(f"{s.name} {s.seconds:.1f}s" for s in steps),
            flush=True,
        )
    return failures


if __name__ == "__main__":
    main()
