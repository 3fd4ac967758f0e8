"""Host-side dnf installs the release's architecture, not the host's (``--forcearch``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from retracer.sync.metadata import install_into_root
from retracer.sync.repodata import publish

SPEC = """\
Name: archpick
Version: 1
Release: 1
Summary: One package built for two architectures
License: MIT
%description
One package built for two architectures.
%install
mkdir -p %{buildroot}/usr/share/archpick
echo %{_target_cpu} > %{buildroot}/usr/share/archpick/arch
%files
/usr/share/archpick/arch
"""


@pytest.fixture(scope="module")
def two_arch_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with archpick-1-1 for x86_64 and for i686, like a multilib mirror."""
    work = tmp_path_factory.mktemp("archpick")
    repository = work / "repository"
    spec = work / "archpick.spec"
    spec.write_text(SPEC)
    for target in ("x86_64", "i686"):
        subprocess.run(
            ["rpmbuild", "-bb", "--target", target, "--define", f"_topdir {work / 'rpmbuild'}",
             "--define", f"_rpmdir {repository / 'Packages'}", "--define", "debug_package %{nil}",
             "--define", "__os_install_post %{nil}", str(spec)],
            check=True, capture_output=True,
        )  # fmt: skip
    publish(repository, work)
    return repository


@pytest.mark.parametrize(("arch", "installed"), [("i686", "i686"), ("x86_64", "x86_64")])
def test_bootstrap_installs_the_given_arch(
    two_arch_repository: Path, tmp_path: Path, arch: str, installed: str
) -> None:
    packages = install_into_root([two_arch_repository], ["archpick"], tmp_path / "root", "1", arch)

    assert [p.nevra for p in packages] == [f"archpick-1-1.{installed}"]
    assert (tmp_path / "root/usr/share/archpick/arch").read_text().strip() == installed
