"""A repository holding one tiny package built for x86_64 and for i686, as multilib
mirrors hold many: what makes dnf's choice of architecture visible."""

from __future__ import annotations

import subprocess
from pathlib import Path

from retracer.sync.repodata import publish

SPEC = """\
Name: %{pkgname}
Version: 99
Release: 1
Summary: One package built for two architectures
License: MIT
%description
One package built for two architectures.
%install
mkdir -p %{buildroot}/usr/share/two-arch-%{pkgname}
echo %{_target_cpu} > %{buildroot}/usr/share/two-arch-%{pkgname}/arch
%files
/usr/share/two-arch-%{pkgname}/arch
"""


def two_arch_repository(work: Path, name: str) -> Path:
    """``work/repository`` with ``<name>-99-1`` for x86_64 and for i686 (about a second)."""
    repository = work / "repository"
    spec = work / "two-arch.spec"
    spec.write_text(SPEC)
    for target in ("x86_64", "i686"):
        subprocess.run(
            ["rpmbuild", "-bb", "--target", target, "--define", f"pkgname {name}",
             "--define", f"_topdir {work / 'rpmbuild'}",
             "--define", f"_rpmdir {repository / 'Packages'}", "--define", "debug_package %{nil}",
             "--define", "__os_install_post %{nil}", str(spec)],
            check=True, capture_output=True,
        )  # fmt: skip
    publish(repository, work)
    return repository
