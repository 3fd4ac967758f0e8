"""Typed values describing releases and packages, shared by every part of retracer."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_RELEASE_ID = re.compile(
    r"^(?P<distro>[a-z0-9_.]+)-(?P<version>[A-Za-z0-9_.]+)-(?P<arch>[a-z0-9_]+)$"
)
# 32-bit x86, best first. ABRT calls such a release i386 whatever its packages are
# built for, and `uname -m` says i686 on such a machine.
_X86_32 = ("i686", "i586", "i486", "i386")


def package_arches(arch: str) -> tuple[str, ...]:
    """The package arches a machine of ``arch`` runs, best first (noarch aside).

    ``arch`` is a release id's (``i386``), a core's or ``uname -m``'s name.
    """
    return _X86_32 if arch in (*_X86_32, "athlon") else (arch,)


@dataclass(frozen=True, order=True)
class Release:
    """A distribution release in ABRT's ``<name>-<version>-<arch>`` form."""

    distro: str
    version: str
    arch: str

    @property
    def id(self) -> str:
        return f"{self.distro}-{self.version}-{self.arch}"

    @classmethod
    def parse(cls, release_id: str) -> Release:
        """Split ``fedora-41-x86_64``; raise ValueError on anything else."""
        match = _RELEASE_ID.match(release_id)
        if match is None:
            raise ValueError(f"{release_id!r} is not a release id of the form name-version-arch")
        return cls(match["distro"], match["version"], match["arch"])

    @property
    def package_arch(self) -> str:
        """The arch dnf installs this release's packages for (``i686`` for ``i386``)."""
        return package_arches(self.arch)[0]

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True, order=True)
class Package:
    """One exact package build (a NEVRA)."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str

    @property
    def nevra(self) -> str:
        """The form dnf installs exactly: ``name-[epoch:]version-release.arch``."""
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"

    @property
    def nvr(self) -> str:
        return f"{self.name}-{self.version}-{self.release}"

    def __str__(self) -> str:
        return self.nevra


@dataclass(frozen=True)
class PackageSet:
    """The exact packages one retrace environment holds."""

    release: Release
    packages: tuple[Package, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "packages", tuple(sorted(set(self.packages))))

    @property
    def digest(self) -> str:
        """Content hash of the release and the sorted NEVRAs; the environment cache key."""
        text = "\n".join([self.release.id, *(p.nevra for p in self.packages)])
        return hashlib.sha256(text.encode()).hexdigest()
