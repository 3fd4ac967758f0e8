"""ABRT problem directories and the archives abrt-retrace-client uploads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from testing.testos import osrelease

# What `abrt-retrace-client` packs for a coredump task, in its order.
ARCHIVE_MEMBERS = ("coredump", "executable", "package", "os_release")
# The client reads these two locally (for the release id) but does not upload them.
PROBLEM_DIR_MEMBERS = (*ARCHIVE_MEMBERS, "architecture", "os_info")


def write_problem_dir(
    problem_dir: Path, core: Path, executable: str, package: str, machine: str
) -> None:
    """A problem directory as abrt leaves it, reduced to what retracing needs."""
    problem_dir.mkdir(parents=True)
    shutil.move(core, problem_dir / "coredump")
    (problem_dir / "coredump").chmod(0o644)
    (problem_dir / "executable").write_text(executable)
    (problem_dir / "package").write_text(package)
    (problem_dir / "os_release").write_text(osrelease.SYSTEM_RELEASE)
    (problem_dir / "architecture").write_text(machine)  # `uname -m`
    (problem_dir / "os_info").write_text(osrelease.OS_RELEASE_FILE)


def write_archive(problem_dir: Path, archive: Path) -> None:
    """``tar`` of bare member names piped through ``xz -2``, as the client does."""
    with archive.open("wb") as out:
        tar = subprocess.Popen(
            ["tar", "-C", str(problem_dir), "-cf", "-", *ARCHIVE_MEMBERS], stdout=subprocess.PIPE
        )
        xz = subprocess.run(["xz", "-2"], stdin=tar.stdout, stdout=out, check=False)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or xz.returncode != 0:
            raise RuntimeError(f"packing {problem_dir} into {archive} failed")
