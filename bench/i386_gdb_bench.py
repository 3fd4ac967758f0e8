"""Which gdb should read 32-bit cores: the i386 release's own, or the host's x86_64 one?

For the testos-1-i386 crash it installs the crash-time packages and their debuginfo
into one root (host dnf, forced to i686, as the base image bootstrap does), then runs
the same gdb commands, interleaved round by round:

- i686 gdb: the release's own gdb, chrooted into that root (what a retrace runs);
- x86_64 gdb: the host's gdb on the same files through ``set sysroot``.

It prints the median time, the peak memory, whether each output has the old
library version's frame (function and file:line) and the text of that source line.
This is a measurement behind a choice, with no target.

Run from the repository root, as root (chroot): ``.venv/bin/python -m bench.i386_gdb_bench``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from retracer.sync.bootstrap import install_into_root
from testing.testos import Crash, build_testos
from testing.testos.target import I686

COMMANDS = ("thread apply all -ascending backtrace full", "info sharedlibrary", "info registers")


def i686_gdb(root: Path, crash: Crash) -> list[str]:
    commands = [arg for command in COMMANDS for arg in ("-ex", command)]
    return ["chroot", str(root), "gdb", "-nx", "-batch", *commands, crash.executable, "/core"]


def x86_64_gdb(root: Path, crash: Crash) -> list[str]:
    return [
        "gdb", "-nx", "-batch",
        "-iex", "set debuginfod enabled off",
        "-ex", f"set sysroot {root}",
        "-ex", f"set debug-file-directory {root}/usr/lib/debug",
        "-ex", f"file {root}{crash.executable}",
        "-ex", f"core-file {root}/core",
        *(arg for command in COMMANDS for arg in ("-ex", command)),
    ]  # fmt: skip


def run(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - started, output


def peak_rss_mib(command: list[str]) -> float:
    """The child's peak resident memory, from a fresh process that runs only it."""
    probe = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True);"
    probe += "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    kib = subprocess.run(
        ["python3", "-c", probe, *command], capture_output=True, text=True, check=True
    ).stdout
    return int(kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    testos = build_testos(target=I686)
    crash = testos.crashes["crasher"]
    debuginfo = [
        nevra.replace("-", "-debuginfo-", 1)
        for nevra in crash.installed
        if not nevra.startswith("testos-base")
    ]
    with tempfile.TemporaryDirectory(prefix="i386-gdb-bench-") as scratch:
        root = Path(scratch) / "root"
        install_into_root([testos.repo], [*crash.installed, *debuginfo], root, "1", I686.machine)
        shutil.copy(crash.core, root / "core")
        variants = {"i686 gdb (the release's)": i686_gdb, "x86_64 gdb (the host's)": x86_64_gdb}
        samples: dict[str, list[float]] = {name: [] for name in variants}
        outputs: dict[str, str] = {}
        for _ in range(args.rounds):
            for name, command in variants.items():
                seconds, outputs[name] = run(command(root, crash))
                samples[name].append(seconds)
        memory = {name: peak_rss_mib(command(root, crash)) for name, command in variants.items()}
    medians = {name: statistics.median(times) for name, times in samples.items()}
    baseline = medians["x86_64 gdb (the host's)"]
    print(f"testos-1-i386 crasher, median of {args.rounds} rounds, interleaved")
    print(f"{'gdb':<28}{'seconds':>9}{'ratio':>8}{'peak MiB':>10}  old frame  source text")
    for name, seconds in medians.items():
        frame = f"{crash.crash_function} (" in outputs[name] and crash.crash_site in outputs[name]
        # The source text needs the debuginfo's /usr/src/debug at its own path.
        source = "CRASH HERE" in outputs[name]
        print(
            f"{name:<28}{seconds:>9.3f}{seconds / baseline:>8.2f}{memory[name]:>10.1f}  "
            f"{'yes' if frame else 'no':<9}  {'yes' if source else 'no'}"
        )


if __name__ == "__main__":
    main()
