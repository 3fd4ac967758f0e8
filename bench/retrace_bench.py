"""Retrace speed, measured side by side with the plain way of doing the same work.

For each testos crash it prints:

- warm: a retrace whose environment is cached, against bare host ``gdb -batch`` on
  the same core with the same binaries and debuginfo (installed into a sysroot);
- cold: a retrace that must build its environment, against a plain ``dnf install``
  of the same packages into a fresh container plus the bare gdb.

Targets: warm <= 1.5 x bare gdb + 0.5 s; cold <= 1.2 x (plain install + gdb).

Run from the repository root: ``.venv/bin/python -m bench.retrace_bench [--rounds N]``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from podman import PodmanClient

from retracer.builder.environment import REPOSITORY_MOUNT, Environments
from retracer.builder.retrace import Analyzer
from retracer.builder.sandbox import Sandbox
from retracer.builder.settings import BuilderSettings
from retracer.sync.metadata import install_into_root
from retracer.sync.settings import BootstrapBase, ReleaseSettings
from tests.podman_service import ULIMITS, PodmanLauncher
from tests.testos import Crash, build_testos


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


def cold_retrace(analyzer: Analyzer, settings: BuilderSettings, crash: Crash, image: str) -> float:
    """Seconds of one retrace after its environment was evicted."""
    with Sandbox(settings) as sandbox:
        sandbox.remove_image(image)
    started = time.perf_counter()
    analyzer.retrace(crash.problem_dir)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    testos = build_testos()
    release = ReleaseSettings(
        **{
            **testos.release_config(),
            "repositories": (testos.repo,),
            "bootstrap": BootstrapBase(tuple(testos.release_config()["bootstrap"]["packages"])),
        }
    )
    with tempfile.TemporaryDirectory(prefix="retrace-bench-") as scratch:
        launcher = PodmanLauncher(Path(scratch))
        service = launcher.start()
        try:
            settings = BuilderSettings(podman_url=service.url, name_prefix="retracer-bench")
            analyzer = Analyzer(settings, [release], Path(scratch) / "state")
            client = PodmanClient(base_url=service.url)
            with Sandbox(settings) as sandbox:
                base = Environments(sandbox, settings, Path(scratch) / "images").base_image(release)
            print(f"{'crash':<12} {'warm':>7} {'bare gdb':>9} {'warm/gdb':>9} {'target':>7}"
                  f" {'cold':>7} {'plain':>7} {'cold/plain':>11} {'target':>7}")  # fmt: skip
            failures = 0
            for name, crash in sorted(testos.crashes.items()):
                result = analyzer.retrace(crash.problem_dir)
                nevras = [p.nevra for p in result.package_set.packages]
                sysroot = Path(scratch) / f"sysroot-{name}"
                install_into_root(release.repositories, nevras, sysroot, "1")

                warm = timed(lambda c=crash: analyzer.retrace(c.problem_dir), args.rounds)
                gdb = timed(lambda c=crash, s=sysroot: bare_gdb(s, c), args.rounds)

                cold = statistics.median(
                    cold_retrace(analyzer, settings, crash, result.environment_image)
                    for _ in range(args.rounds)
                )
                install = timed(
                    lambda n=nevras: plain_install(client, base, release, n), args.rounds
                )
                plain = install + gdb

                warm_ok = warm <= 1.5 * gdb + 0.5
                cold_ok = cold <= 1.2 * plain
                failures += (not warm_ok) + (not cold_ok)
                print(
                    f"{name:<12} {warm:>6.2f}s {gdb:>8.2f}s {warm / gdb:>8.2f}x"
                    f" {'ok' if warm_ok else 'MISS':>7} {cold:>6.2f}s {plain:>6.2f}s"
                    f" {cold / plain:>10.2f}x {'ok' if cold_ok else 'MISS':>7}"
                )
            with Sandbox(settings) as sandbox:
                for image in sandbox.images():
                    sandbox.remove_image(image)
            client.close()
        finally:
            launcher.stop()
    print("warm target: <= 1.5 x bare gdb + 0.5 s; cold target: <= 1.2 x (plain install + gdb)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
