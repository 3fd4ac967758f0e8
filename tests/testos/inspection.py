"""Reading a built testos back: its repository, its packages' build-ids, its cores.

Checks of the fixture (``test_fixture.py``, ``test_i386_twin.py``) share these.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import createrepo_c
import rpm

# What makes the ABRT client derive the release id testos-1-x86_64.
OS_INFO_LINES = (
    'NAME="TestOS"',
    "ID=testos",
    "VERSION_ID=1",
    'REDHAT_BUGZILLA_PRODUCT="testos"',
    "REDHAT_BUGZILLA_PRODUCT_VERSION=1",
)


def repo_packages(repo: Path) -> dict[str, createrepo_c.Package]:
    """The repository's packages by NVR, read from its repodata."""
    metadata = createrepo_c.Metadata()
    metadata.locate_and_load_xml(str(repo))
    packages = (metadata.get(key) for key in metadata.keys())  # noqa: SIM118 (not a dict)
    return {f"{p.name}-{p.version}-{p.release}": p for p in packages}


def build_ids_of(package_file: Path) -> dict[str, str]:
    """``{installed path: build-id}`` from a binary RPM's /usr/lib/.build-id links."""
    transaction = rpm.TransactionSet()
    transaction.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    with package_file.open("rb") as stream:
        header = transaction.hdrFromFdno(stream.fileno())
    names, targets = header[rpm.RPMTAG_FILENAMES], header[rpm.RPMTAG_FILELINKTOS]
    ids = {}
    for name, target in zip(names, targets, strict=True):
        if name.startswith("/usr/lib/.build-id/") and target:
            installed = os.path.normpath(os.path.join(os.path.dirname(name), target))
            ids[installed] = "".join(name.split("/")[-2:])
    return ids


def core_build_ids(core: Path) -> dict[str, str]:
    """``{module name: build-id}`` of the modules mapped in a core, by eu-unstrip."""
    listing = subprocess.run(
        ["eu-unstrip", "-n", f"--core={core}"], capture_output=True, text=True, check=True
    ).stdout
    modules = {}
    for line in listing.splitlines():
        fields = line.split()
        modules[fields[-1]] = fields[1].split("@")[0]
    return modules
