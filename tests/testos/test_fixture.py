"""The testos fixture itself: its repository, its cores and its problem directories."""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from podman import PodmanClient

from testing.podman_service import ULIMITS, PodmanService
from testing.testos import Crash, Testos
from testing.testos.base import BASE_NAME, BOOTSTRAP_PACKAGES
from testing.testos.crashes import IMAGE_PREFIX, import_image, install_user_root
from testing.testos.problem import ARCHIVE_MEMBERS, PROBLEM_DIR_MEMBERS
from testing.testos.rpms import APPS, DEBUGINFO_WITHHELD, RELEASE
from testing.testos.target import X86_64
from tests.testos.inspection import OS_INFO_LINES, build_ids_of, core_build_ids, repo_packages

CRASH_NAMES = ("crasher", "threadcrash", "cxxabort", "quietcrash")
# The library each crash goes through, as (package, installed path).
CRASH_LIBRARIES = {"crasher": ("libcrash", "/usr/lib64/libcrash.so.2"),
                   "quietcrash": ("libquiet", "/usr/lib64/libquiet.so.1")}  # fmt: skip


def expected_nvrs() -> set[str]:
    nvrs = {f"{BASE_NAME}-1-1"}
    for app in APPS:
        vr = f"{app.version}-{RELEASE}"
        # A split source package: the main package, -libs and -tools, each its -debuginfo.
        names = [app.name, *(f"{app.name}-{sub}" for sub in ("libs", "tools"))]
        if not app.split_soname:
            names = names[:1]
        nvrs.update(f"{name}-{vr}" for name in names)
        if app.name not in DEBUGINFO_WITHHELD:
            nvrs.update(f"{name}-debuginfo-{vr}" for name in names)
            nvrs.add(f"{app.name}-debugsource-{vr}")
    return nvrs


def test_repository_holds_both_versions_and_their_debuginfo(testos: Testos) -> None:
    packages = repo_packages(testos.repo)

    assert set(packages) == expected_nvrs()
    assert "crasher-debugsource-1.0-1" in packages
    assert "shapes-libs-debuginfo-1.0-1" in packages
    assert not [nvr for nvr in packages if nvr.startswith("libquiet-debug")]
    for nvr, package in packages.items():
        assert package.location_href == f"Packages/{nvr[0]}/{nvr}.x86_64.rpm"
        assert (testos.repo / package.location_href).is_file()


def test_base_package_provides_what_rpms_and_the_bootstrap_need(testos: Testos) -> None:
    base = repo_packages(testos.repo)[f"{BASE_NAME}-1-1"]
    provides = {name for name, *_ in base.provides}

    assert set(BOOTSTRAP_PACKAGES) <= provides
    assert {"rtld(GNU_HASH)", "libc.so.6(GLIBC_2.34)(64bit)", "libstdc++.so.6()(64bit)"} <= provides
    assert "system-release(releasever)" in provides
    assert base.requires == []


@pytest.mark.parametrize("name", CRASH_NAMES)
def test_core_comes_from_the_old_versions(testos: Testos, name: str) -> None:
    crash = testos.crashes[name]
    packages = repo_packages(testos.repo)

    def ids(nvr: str) -> dict[str, str]:
        return build_ids_of(testos.repo / packages[nvr].location_href)

    assert crash.core.read_bytes()[:4] == b"\x7fELF"
    assert crash.core.read_bytes()[16] == 4  # e_type ET_CORE
    modules = core_build_ids(crash.core)
    old_program, new_program = ids(f"{name}-1.0-1"), ids(f"{name}-1.1-1")
    assert modules[crash.executable] == old_program[crash.executable]
    assert modules[crash.executable] != new_program[crash.executable]
    if name in CRASH_LIBRARIES:
        library, path = CRASH_LIBRARIES[name]
        old_version, new_version = ("2.0", "2.1") if library == "libcrash" else ("1.0", "1.1")
        assert modules[path] == ids(f"{library}-{old_version}-1")[path]
        assert modules[path] != ids(f"{library}-{new_version}-1")[path]


@pytest.mark.parametrize("name", CRASH_NAMES)
def test_problem_dir_has_what_abrt_writes(testos: Testos, name: str) -> None:
    crash = testos.crashes[name]
    problem_dir = crash.problem_dir

    assert sorted(p.name for p in problem_dir.iterdir()) == sorted(PROBLEM_DIR_MEMBERS)
    assert (problem_dir / "executable").read_text() == f"/usr/bin/{name}"
    assert (problem_dir / "package").read_text() == f"{name}-1.0-1" == crash.package
    assert (problem_dir / "os_release").read_text() == "TestOS release 1 (Demo)"
    assert (problem_dir / "architecture").read_text() == "x86_64"
    os_info = (problem_dir / "os_info").read_text().splitlines()
    for line in OS_INFO_LINES:
        assert line in os_info
    assert crash.core.stat().st_mode & 0o777 == 0o644
    assert f"{name}-1.0-1.x86_64" in crash.installed
    assert f"{name}-1.1-1.x86_64" not in crash.installed


@pytest.mark.parametrize("name", CRASH_NAMES)
def test_archive_is_what_the_client_uploads(testos: Testos, name: str) -> None:
    crash = testos.crashes[name]

    assert crash.archive.read_bytes()[:6] == b"\xfd7zXZ\x00"
    with tarfile.open(crash.archive, "r:xz") as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == list(ARCHIVE_MEMBERS)
        assert all(m.isfile() for m in members)
        for member in members:
            content = archive.extractfile(member)
            assert content is not None
            assert content.read() == (crash.problem_dir / member.name).read_bytes()


def test_release_config_is_accepted_by_retracer(testos: Testos, tmp_path: Path) -> None:
    from retracer.server.config import config_from_mapping

    config = config_from_mapping({"releases": [testos.release_config()]}, tmp_path)

    (release,) = config.releases
    assert release.id == "testos-1-x86_64"
    assert release.repositories == (testos.repo,)
    assert release.bootstrap is not None
    assert release.bootstrap.packages == BOOTSTRAP_PACKAGES


@pytest.fixture(scope="module")
def base_image(
    testos: Testos, podman_service: PodmanService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An image of testos-base alone, as a retrace environment starts."""
    scratch = tmp_path_factory.mktemp("base-image")
    install_user_root(scratch / "root", testos.repo, scratch, X86_64, packages=(BASE_NAME,))
    reference = f"{IMAGE_PREFIX}testos-base:{scratch.name.lower()}"
    with PodmanClient(base_url=podman_service.url) as client:
        import_image(client, scratch / "root", reference, scratch)
        subprocess.run(["rm", "-rf", str(scratch / "root")], check=True)
        try:
            yield reference
        finally:
            client.images.remove(reference, force=True)


def gdb_in_container(service: PodmanService, image: str, repo: Path, crash: Crash) -> str:
    """dnf-install the crash's packages and debuginfo from the repo, then gdb the core."""
    installed = [nevra for nevra in crash.installed if not nevra.startswith(BASE_NAME)]
    debuginfo = [
        f"{name}-debuginfo-{version}-{release}"
        for name, version, release in (nevra.rsplit("-", 2) for nevra in installed)
        if name not in DEBUGINFO_WITHHELD
    ]
    script = (
        "dnf -q -y --nogpgcheck --repofrompath=testos,/repo --repo=testos install "
        f"{' '.join(installed + debuginfo)} && "
        f"gdb -batch -nx -ex 'thread apply all bt full' {crash.executable} /problem/coredump"
    )
    with PodmanClient(base_url=service.url) as client:
        container = client.containers.create(
            image=image,
            name=f"{IMAGE_PREFIX}gdb-{crash.name}-{os.getpid()}",
            command=["/bin/sh", "-c", script],
            mounts=[
                {"type": "bind", "source": str(repo), "target": "/repo", "read_only": True},
                {
                    "type": "bind",
                    "source": str(crash.problem_dir),
                    "target": "/problem",
                    "read_only": True,
                },
            ],
            network_mode="none",
            ulimits=ULIMITS,
        )
        try:
            container.start()
            status = container.wait(timeout=120)
            output = b"".join(container.logs(stdout=True, stderr=True)).decode(errors="replace")
        finally:
            container.remove(force=True)
    assert status == 0, output
    return output


@pytest.mark.parametrize("name", CRASH_NAMES)
def test_debuginfo_from_the_repo_gives_the_old_versions_frames(
    testos: Testos, podman_service: PodmanService, base_image: str, name: str
) -> None:
    crash = testos.crashes[name]

    backtrace = gdb_in_container(podman_service, base_image, testos.repo, crash)

    assert crash.crash_function in backtrace
    assert crash.crash_site in backtrace
    assert crash.newer_function not in backtrace
    if name == "quietcrash":
        assert "from /usr/lib64/libquiet.so.1" in backtrace  # no debuginfo for libquiet
        assert "libquiet.c" not in backtrace
    if name == "threadcrash":
        assert backtrace.count("\nThread ") == 5  # main and the four workers
    if name == "cxxabort":
        assert "cxx_message" in backtrace and "configuration level 7 is invalid" in backtrace


def test_no_test_containers_or_images_are_left(podman_service: PodmanService) -> None:
    containers = podman_service.cli("ps", "-a", "--format", "{{.Names}}").stdout.split()
    images = podman_service.cli("images", "--format", "{{.Repository}}").stdout.split()

    assert [c for c in containers if c.startswith(f"{IMAGE_PREFIX}crash-")] == []
    assert [c for c in containers if c.startswith(f"{IMAGE_PREFIX}gdb-")] == []
    assert [i for i in images if "testos-user" in i] == []
