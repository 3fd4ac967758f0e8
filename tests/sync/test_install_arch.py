"""Host-side dnf installs the release's architecture, not the host's (``--forcearch``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from retracer.sync.bootstrap import install_into_root
from tests.sync.two_arch import two_arch_repository


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_arch_repository(tmp_path_factory.mktemp("two-arch"), "archpick")


@pytest.mark.parametrize(("arch", "installed"), [("i686", "i686"), ("x86_64", "x86_64")])
def test_bootstrap_installs_the_given_arch(
    repository: Path, tmp_path: Path, arch: str, installed: str
) -> None:
    packages = install_into_root([repository], ["archpick"], tmp_path / "root", "1", arch)

    assert [p.nevra for p in packages] == [f"archpick-99-1.{installed}"]
    marker = tmp_path / "root/usr/share/two-arch-archpick/arch"
    assert marker.read_text().strip() == installed
