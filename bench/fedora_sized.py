"""A repository the size of a Fedora release's: the testos packages among many others.

A release's all-versions repository holds every version of every package it ever
synced: Fedora's release, updates and debuginfo repositories list well over
100,000 packages between them. The crashes still need only the testos packages,
so the others exist only as metadata (NEVRA, provides, requires, a couple of dozen
files each); dnf reads them exactly as it reads real ones, and never needs their
files. Built with createrepo_c once per testos revision and size, and cached.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import createrepo_c

from retracer.sync.repodata import REPODATA, metadata_files, write_metadata
from testing.cache import cache_root
from testing.testos.steps import cached_dir

# Bump when the generated packages change.
_RECIPE = "1"
_FILES_PER_PACKAGE = 24


def fedora_sized_repository(testos_repo: Path, filler: int) -> Path:
    """The testos packages plus ``filler`` metadata-only packages, as a repository."""
    revision = metadata_files(testos_repo)["primary"].checksum
    key = hashlib.sha256(f"{_RECIPE}\n{revision}\n{filler}".encode()).hexdigest()[:16]
    target = cache_root() / "bench-repositories" / key
    return cached_dir(target, lambda work: _build(work, testos_repo, filler))


def _build(work: Path, testos_repo: Path, filler: int) -> None:
    packages = []
    for rpm in sorted(testos_repo.glob("Packages/*/*.rpm")):
        href = rpm.relative_to(testos_repo).as_posix()
        (work / href).parent.mkdir(parents=True, exist_ok=True)
        os.link(rpm, work / href)
        packages.append(createrepo_c.package_from_rpm(str(rpm), createrepo_c.SHA256, href))
    packages += [_filler_package(number) for number in range(filler)]
    staging = work / ".staging"
    staging.mkdir()
    write_metadata(staging, packages)
    os.replace(staging, work / REPODATA)


def _filler_package(number: int) -> createrepo_c.Package:
    name = f"filler{number:06d}"
    library = f"libfiller{number}.so.1"
    package = createrepo_c.Package()
    package.name, package.epoch, package.version, package.release = name, "0", "1.0", "1"
    package.arch = "x86_64"
    package.checksum_type = "sha256"
    package.pkgId = hashlib.sha256(name.encode()).hexdigest()
    package.location_href = f"Packages/f/{name}-1.0-1.x86_64.rpm"
    package.summary = f"Filler package {number}"
    package.description = "Stands in for one of a real release's packages."
    package.url = "https://example.org/"
    package.rpm_license = "MIT"
    package.rpm_sourcerpm = f"{name}-1.0-1.src.rpm"
    package.size_package, package.size_installed, package.size_archive = 50_000, 150_000, 150_000
    package.time_file = package.time_build = 1_700_000_000
    package.rpm_header_start, package.rpm_header_end = 4504, 9000
    package.provides = [
        (name, "EQ", "0", "1.0", "1", False),
        (f"{library}()(64bit)", None, None, None, None, False),
    ]
    # Depend on an earlier filler's library, so dependency chains resemble a distribution.
    package.requires = [
        ("libc.so.6()(64bit)", None, None, None, None, False),
        (f"libfiller{number // 2}.so.1()(64bit)", None, None, None, None, False),
    ]
    package.files = [
        ("dir", f"/usr/share/{name}/", ""),
        *((None, f"/usr/share/{name}/", f"data{i:02d}") for i in range(_FILES_PER_PACKAGE - 2)),
        (None, "/usr/lib64/", library),
    ]
    return package
