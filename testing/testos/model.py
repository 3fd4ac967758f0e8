"""What a built testos release gives its users: paths, ids and crash facts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testing.testos import osrelease
from testing.testos.base import BOOTSTRAP_PACKAGES


@dataclass(frozen=True)
class Crash:
    """One real crash of an old program version, as ABRT would report it."""

    name: str  # the crash's name, e.g. "crasher", "quietcrash" or "shapes"
    problem_dir: Path  # coredump executable package os_release architecture os_info
    archive: Path  # what abrt-retrace-client uploads: tar.xz of the first four
    executable: str  # e.g. /usr/bin/crasher
    package: str  # NVR, e.g. crasher-1.0-1
    installed: tuple[str, ...]  # NAME-VERSION-RELEASE.ARCH of all packages on the machine
    # Where it fails, for checking backtraces: a function and "file:line" of the old
    # version, and the same for the newer version, which must NOT show up.
    crash_function: str
    crash_site: str
    newer_function: str
    newer_crash_site: str

    @property
    def core(self) -> Path:
        return self.problem_dir / "coredump"


@dataclass(frozen=True)
class Testos:
    __test__ = False  # not a test class, despite its name

    root: Path  # the cached release directory
    repo: Path  # binary and debuginfo packages, with repodata/
    release_id: str  # "testos-1-x86_64" or "testos-1-i386"
    os_release: str  # "TestOS release 1 (Demo)"
    crashes: dict[str, Crash]

    def release_config(self) -> dict[str, Any]:
        """A ``releases:`` entry of retracer's YAML configuration for this release."""
        return {
            "id": self.release_id,
            "os_release": self.os_release,
            "os_id": osrelease.OS_ID,
            "version_id": osrelease.VERSION_ID,
            "repositories": [str(self.repo)],
            "bootstrap": {"packages": list(BOOTSTRAP_PACKAGES)},
        }


MANIFEST = "manifest.json"


def save(testos: Testos) -> None:
    """Write the facts about the crashes beside them; paths are stored relative."""
    crashes = {
        name: {
            **{key: value for key, value in vars(crash).items() if not isinstance(value, Path)},
            "problem_dir": str(crash.problem_dir.relative_to(testos.root)),
            "archive": str(crash.archive.relative_to(testos.root)),
        }
        for name, crash in testos.crashes.items()
    }
    (testos.root / MANIFEST).write_text(json.dumps({"crashes": crashes}, indent=2) + "\n")


def load(root: Path, release_id: str) -> Testos:
    """The release cached at ``root`` (which may be reached through a symlink)."""
    data = json.loads((root / MANIFEST).read_text())
    crashes = {
        name: Crash(
            **{
                **fields,
                "problem_dir": root / fields["problem_dir"],
                "archive": root / fields["archive"],
                "installed": tuple(fields["installed"]),
            }
        )
        for name, fields in data["crashes"].items()
    }
    return Testos(
        root=root,
        repo=root / "repo",
        release_id=release_id,
        os_release=osrelease.SYSTEM_RELEASE,
        crashes=crashes,
    )
