"""Read an ABRT problem directory and recognise the release it came from.

:func:`read_problem` is the one check of a crash: the HTTP side runs it on every
upload before a task exists, and ``retracer retrace`` and the worker run it before
anything else. It reads only small, capped files and the core's header (see
:mod:`retracer.builder.core`), so it costs milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retracer.builder.core import read_core_header
from retracer.builder.errors import ProblemRejected
from retracer.sync.errors import UnknownRelease
from retracer.sync.settings import ReleaseSettings

# The caps the original retrace server put on ABRT's small text files, in bytes;
# the HTTP side applies the same caps to uploaded archives.
TEXT_FILE_LIMITS = {
    "executable": 512,
    "package": 128,
    "os_release": 128,
    "rootdir": 256,
    "os_release_in_rootdir": 128,
    "os_info": 8192,
    "os_info_in_rootdir": 8192,
    "packages": 65536,
}
# Printable characters only: no C0 or C1 controls (terminal escapes start with ESC or
# CSI), no line or paragraph separators, no bidirectional overrides.
_PRINTABLE_LINE = re.compile(r"^[\x20-\x7e\u00a0-\u2027\u202f-\u2065\u206a-\ufffd]*$")
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
    core = directory / "coredump"
    if not core.is_file():
        raise ProblemRejected("coredump", "is missing")
    header = read_core_header(core)
    executable = _read_line(directory, "executable")
    if not executable.startswith("/") or "/../" in executable or executable.endswith("/.."):
        raise ProblemRejected("executable", "must hold an absolute path")
    package = _read_line(directory, "package")
    # ABRT uploads the release of the chroot, not of the host, when there is one.
    in_rootdir = (directory / "rootdir").is_file()
    if in_rootdir and not _read_line(directory, "rootdir").startswith("/"):
        raise ProblemRejected("rootdir", "must hold an absolute path")
    if (directory / "packages").is_file():
        _read_lines(directory, "packages")
    release_member = "os_release_in_rootdir" if in_rootdir else "os_release"
    os_release = _read_line(directory, release_member)
    os_info = _read_os_info(directory, "os_info_in_rootdir" if in_rootdir else "os_info")
    release = _match_release(os_release, os_info, header.arch, releases)
    return Problem(directory, core, executable, package, os_release, header.arch, release)


def _read_line(directory: Path, member: str) -> str:
    text = _read_text(directory, member)
    if not text or "\n" in text or not _PRINTABLE_LINE.match(text):
        raise ProblemRejected(member, "must hold one line of printable text")
    return text


def _read_lines(directory: Path, member: str) -> list[str]:
    lines = _read_text(directory, member).splitlines()
    if not all(_PRINTABLE_LINE.match(line) for line in lines):
        raise ProblemRejected(member, "must hold lines of printable text")
    return lines


def _read_text(directory: Path, member: str) -> str:
    """A small text file, stripped; read no further than its cap."""
    path = directory / member
    if not path.is_file():
        raise ProblemRejected(member, "is missing")
    limit = TEXT_FILE_LIMITS[member]
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ProblemRejected(member, f"is longer than {limit} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as error:
        raise ProblemRejected(member, "is not UTF-8 text") from error


def _read_os_info(directory: Path, member: str) -> dict[str, str]:
    path = directory / member
    if not path.is_file() or path.stat().st_size > TEXT_FILE_LIMITS[member]:
        return {}
    fields = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def _match_release(
    os_release: str, os_info: dict[str, str], arch: str, releases: Sequence[ReleaseSettings]
) -> ReleaseSettings:
    candidates = [r for r in releases if r.release.arch == arch]
    for release in candidates:
        if release.os_release and release.os_release == os_release:
            return release
    for name, version in _name_and_version(os_release, os_info):
        for release in candidates:
            if (release.os_id or release.release.distro) == name and (
                release.version_id or release.release.version
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
