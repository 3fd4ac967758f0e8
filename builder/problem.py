"""Read an ABRT problem directory and recognise the release it came from.

:func:`read_problem` is the one check of a crash: the HTTP side runs it on every
upload before a task exists, and ``retracer retrace`` and the worker run it before
anything else. It reads only small, capped files and the core's header (see
:mod:`retracer.builder.core`), so it costs milliseconds; the rules for each file are
those of :mod:`retracer.builder.problem_format`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retracer.builder.core import read_core_header
from retracer.builder.errors import ProblemRejected
from retracer.builder.problem_format import CORE, read_line, read_lines, read_os_info
from retracer.sync.errors import UnknownRelease
from retracer.sync.settings import ReleaseSettings

# "Fedora release 41 (Forty One)" -> ("Fedora", "41")
_RELEASE_LINE = re.compile(r"^(?P<name>.+?) release (?P<version>\S+)")


@dataclass(frozen=True)
class Problem:
    """What the analyzer needs from a problem directory, validated."""

    directory: Path
    core: Path
    executable: str
    package: str
    os_release: str
    arch: str
    release: ReleaseSettings

    @property
    def program(self) -> str:
        """The crashed program's build: its crashes tend to need the same environment."""
        return f"{self.release.id} {self.package} {self.executable}"


def read_problem(directory: Path, releases: Sequence[ReleaseSettings]) -> Problem:
    """Validate a problem directory and find which configured release it belongs to.

    Raises:
        ProblemRejected: a required file is missing or malformed.
        CoreRejected: the core is not a usable ELF core.
        UnknownRelease: no configured release matches the crash.
    """
    core = directory / CORE
    if not core.is_file():
        raise ProblemRejected(CORE, "is missing")
    header = read_core_header(core)
    executable = read_line(directory, "executable")
    if not executable.startswith("/") or "/../" in executable or executable.endswith("/.."):
        raise ProblemRejected("executable", "must hold an absolute path")
    package = read_line(directory, "package")
    # ABRT uploads the release of the chroot, not of the host, when there is one.
    in_rootdir = (directory / "rootdir").is_file()
    if in_rootdir and not read_line(directory, "rootdir").startswith("/"):
        raise ProblemRejected("rootdir", "must hold an absolute path")
    if (directory / "packages").is_file():
        read_lines(directory, "packages")
    release_member = "os_release_in_rootdir" if in_rootdir else "os_release"
    os_release = read_line(directory, release_member)
    os_info = read_os_info(directory, "os_info_in_rootdir" if in_rootdir else "os_info")
    release = _match_release(os_release, os_info, header.arch, releases)
    return Problem(directory, core, executable, package, os_release, header.arch, release)


def _match_release(
    os_release: str, os_info: dict[str, str], arch: str, releases: Sequence[ReleaseSettings]
) -> ReleaseSettings:
    candidates = [r for r in releases if r.parsed_id.arch == arch]
    for release in candidates:
        if release.os_release and release.os_release == os_release:
            return release
    for name, version in _name_and_version(os_release, os_info):
        for release in candidates:
            if (release.os_id or release.parsed_id.distro) == name and (
                release.version_id or release.parsed_id.version
            ) == version:
                return release
    claimed = next(iter(_name_and_version(os_release, os_info)), None)
    shown = f"{claimed[0]}-{claimed[1]}-{arch}" if claimed else f"{os_release} ({arch})"
    raise UnknownRelease(shown, (r.id for r in releases))


def _name_and_version(os_release: str, os_info: dict[str, str]) -> list[tuple[str, str]]:
    """The (id, version) pairs a crash claims, most specific first, normalised like ABRT."""
    pairs = []
    for name_key, version_key in (
        ("REDHAT_BUGZILLA_PRODUCT", "REDHAT_BUGZILLA_PRODUCT_VERSION"),
        ("ID", "VERSION_ID"),
    ):
        if os_info.get(name_key) and os_info.get(version_key):
            pairs.append((os_info[name_key], os_info[version_key]))
    if found := _RELEASE_LINE.match(os_release):
        pairs.append((found["name"], found["version"]))
    return [
        (name.lower().replace(" ", ""), version.split(" ")[0].lower()) for name, version in pairs
    ]
