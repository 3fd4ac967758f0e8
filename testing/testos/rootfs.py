"""The Debian root file system that stands in for the testos base system."""

from __future__ import annotations

from pathlib import Path

from testing.cache import digest_of
from testing.testos.steps import cached_dir, run, step
from testing.testos.target import Target

SUITE = "bookworm"
# What a retrace environment needs (bash ... elfutils), plus tools the tests use.
PACKAGES = ("bash", "coreutils", "gdb", "dnf", "rpm", "elfutils", "findutils", "xz-utils", "tar")
# Documentation and translations only make the base RPM slower to build.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)


def mmdebstrap_args(target: Target, output: Path) -> list[str]:
    return [
        "mmdebstrap",
        *target.mmdebstrap_options,
        "--variant=apt",
        "--include=" + ",".join(PACKAGES),
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        "--quiet",
        SUITE,
        str(output),
    ]


def rootfs_key(target: Target) -> str:
    return digest_of(mmdebstrap_args(target, Path("rootfs.tar")))


def build_rootfs(layers: Path, target: Target) -> Path:
    """A cached ``rootfs.tar`` made by mmdebstrap (about a minute cold)."""

    def build(work: Path) -> None:
        with step(f"mmdebstrap the {target.machine} Debian root file system"):
            run(mmdebstrap_args(target, work / "rootfs.tar"))

    return cached_dir(layers / target.layer("rootfs", rootfs_key(target)), build) / "rootfs.tar"
