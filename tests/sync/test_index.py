"""The build-id index over the testos repository, checked against rpm's own file lists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from retracer.sync.errors import RepositoryUnavailable
from retracer.sync.index import RepositoryIndex
from retracer.sync.model import Package
from retracer.sync.repodata import publish
from retracer.sync.settings import BootstrapBase, ReleaseSettings
from testing.testos import Testos


def release(*repositories: Path) -> ReleaseSettings:
    return ReleaseSettings(
        id="testos-1-x86_64",
        os_release="TestOS release 1 (Demo)",
        repositories=repositories,
        bootstrap=BootstrapBase(("bash",)),
    )


def build_id_links(rpm: Path, prefix: str) -> set[str]:
    """The build-ids an RPM links under ``prefix``, as ``rpm -qlp`` lists them."""
    listed = subprocess.run(["rpm", "-qlp", str(rpm)], capture_output=True, text=True, check=True)
    return {
        "".join(path.removeprefix(prefix).removesuffix(".debug").split("/"))
        for path in listed.stdout.split()
        if path.startswith(prefix) and path.count("/") == prefix.count("/") + 1
    }


def rpm_file(testos: Testos, nevra: str) -> Path:
    return next(testos.repo.glob(f"Packages/*/{nevra}.rpm"))


def test_build_ids_map_to_the_exact_binary_and_debuginfo_packages(
    testos: Testos, tmp_path: Path
) -> None:
    index = RepositoryIndex(release(testos.repo), tmp_path)
    for version in ("2.0", "2.1"):
        binary = rpm_file(testos, f"libcrash-{version}-1.x86_64")
        debuginfo = rpm_file(testos, f"libcrash-debuginfo-{version}-1.x86_64")
        build_ids = build_id_links(binary, "/usr/lib/.build-id/")
        assert build_ids, "the fixture's library has a build-id link"
        assert build_ids <= build_id_links(debuginfo, "/usr/lib/debug/.build-id/")
        for match in index.match_build_ids(build_ids).values():
            assert match.binary == Package("libcrash", 0, version, "1", "x86_64")
            assert match.debuginfo == Package("libcrash-debuginfo", 0, version, "1", "x86_64")


def test_withheld_debuginfo_and_unknown_build_ids_are_none(testos: Testos, tmp_path: Path) -> None:
    index = RepositoryIndex(release(testos.repo), tmp_path)
    (quiet,) = build_id_links(rpm_file(testos, "libquiet-1.0-1.x86_64"), "/usr/lib/.build-id/")
    matches = index.match_build_ids([quiet.upper(), "0123456789abcdef" * 2])
    assert matches[quiet].binary == Package("libquiet", 0, "1.0", "1", "x86_64")
    assert matches[quiet].debuginfo is None
    unknown = matches["0123456789abcdef" * 2]
    assert (unknown.binary, unknown.debuginfo) == (None, None)


@pytest.mark.parametrize(
    ("debuginfo", "companions"),
    [
        # The multifile's package and the sources, both named by no module.
        ("shapes-libs-debuginfo-1.0-1", {"shapes-debuginfo-1.0-1", "shapes-debugsource-1.0-1"}),
        ("shapes-tools-debuginfo-1.1-1", {"shapes-debuginfo-1.1-1", "shapes-debugsource-1.1-1"}),
        ("crasher-debuginfo-1.0-1", {"crasher-debugsource-1.0-1"}),
        ("crasher-1.0-1", set()),  # not a debuginfo package
    ],
)
def test_debug_companions_come_from_the_same_source_rpm(
    testos: Testos, tmp_path: Path, debuginfo: str, companions: set[str]
) -> None:
    index = RepositoryIndex(release(testos.repo), tmp_path)
    package = index.find(debuginfo, "x86_64")
    assert package is not None
    found = index.debug_companions([package])
    assert {f"{p.name}-{p.version}-{p.release}" for p in found} == companions
    assert {p.arch for p in found} <= {"x86_64"}


@pytest.mark.parametrize(
    ("nvr", "arch", "found"),
    [
        ("crasher-1.0-1", "x86_64", "crasher-1.0-1.x86_64"),
        ("crasher-0:1.1-1", "x86_64", "crasher-1.1-1.x86_64"),
        ("crasher-1:1.0-1", "x86_64", None),  # no such epoch
        ("crasher-1.0-1", "aarch64", None),
        ("crasher-9.9-1", "x86_64", None),
        ("not an nvr", "x86_64", None),
    ],
)
def test_find_by_nvr(testos: Testos, tmp_path: Path, nvr: str, arch: str, found: str) -> None:
    package = RepositoryIndex(release(testos.repo), tmp_path).find(nvr, arch)
    assert (package.nevra if package else None) == found


def test_new_metadata_is_indexed_at_the_next_lookup(testos: Testos, tmp_path: Path) -> None:
    """A sync that publishes new packages changes the revision; the old index goes."""
    repository = tmp_path / "repository"
    for rpm in testos.repo.glob("Packages/*/crasher-1.0-1*.rpm"):
        (repository / "Packages").mkdir(parents=True, exist_ok=True)
        shutil.copy(rpm, repository / "Packages" / rpm.name)
    publish(repository, tmp_path)
    index = RepositoryIndex(release(repository), tmp_path / "index")
    assert index.find("crasher-1.1-1", "x86_64") is None

    shutil.copy(rpm_file(testos, "crasher-1.1-1.x86_64"), repository / "Packages")
    publish(repository, tmp_path)
    assert index.find("crasher-1.1-1", "x86_64") == Package("crasher", 0, "1.1", "1", "x86_64")
    assert index.find("crasher-1.0-1", "x86_64") is not None
    assert len(list((tmp_path / "index").glob("*.sqlite"))) == 1


def test_a_repository_without_metadata_is_one_clear_sentence(tmp_path: Path) -> None:
    index = RepositoryIndex(release(tmp_path / "empty"), tmp_path / "index")
    with pytest.raises(RepositoryUnavailable) as caught:
        index.find("crasher-1.0-1", "x86_64")
    assert caught.value.reason == (
        f"Repository {tmp_path / 'empty'} cannot be read: it has no repodata/repomd.xml."
    )


@pytest.mark.parametrize(
    ("arch", "found"),
    [
        ("i386", "crasher-1.0-1.i686"),  # an i386 release's crash (the core's EM_386)
        ("i686", "crasher-1.0-1.i686"),  # /checkpackage from an i686 machine
        ("i586", "crasher-1.0-1.i686"),
        ("x86_64", "crasher-1.0-1.x86_64"),
        ("aarch64", None),
    ],
)
def test_find_maps_32_bit_x86_to_the_i686_build(
    testos: Testos, testos_i386: Testos, tmp_path: Path, arch: str, found: str | None
) -> None:
    """One repository holding the x86_64 and the i686 build of the same NVR."""
    repository = tmp_path / "repository"
    (repository / "Packages").mkdir(parents=True)
    for source in (testos, testos_i386):
        for rpm in source.repo.glob("Packages/c/crasher-1.0-1.*.rpm"):
            shutil.copy(rpm, repository / "Packages" / rpm.name)
    publish(repository, tmp_path)

    package = RepositoryIndex(release(repository), tmp_path / "index").find("crasher-1.0-1", arch)

    assert (package.nevra if package else None) == found
