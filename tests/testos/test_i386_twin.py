"""testos-1-i386: the 32-bit twin's repository, core and problem directory."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from testing.testos import Testos, build
from testing.testos.base import BASE_NAME
from testing.testos.target import I686, X86_64
from tests.testos.inspection import OS_INFO_LINES, build_ids_of, core_build_ids, repo_packages

EM_386 = 3
ELFCLASS32 = 1


def test_repository_holds_i686_builds_of_both_library_versions(testos_i386: Testos) -> None:
    packages = repo_packages(testos_i386.repo)
    kinds = ("", "-debuginfo", "-debugsource")  # the package, its debug data, its sources

    assert set(packages) == {
        f"{BASE_NAME}-1-1",
        *(f"libcrash{kind}-{v}-1" for kind in kinds for v in ("2.0", "2.1")),
        *(f"crasher{kind}-{v}-1" for kind in kinds for v in ("1.0", "1.1")),
    }
    assert {package.arch for package in packages.values()} == {"i686"}
    assert testos_i386.release_id == "testos-1-i386"
    assert testos_i386.release_config()["id"] == "testos-1-i386"


def test_base_package_provides_32_bit_sonames(testos_i386: Testos) -> None:
    base = repo_packages(testos_i386.repo)[f"{BASE_NAME}-1-1"]
    provides = {name for name, *_ in base.provides}

    assert {"rtld(GNU_HASH)", "libc.so.6(GLIBC_2.34)", "gdb", "dnf"} <= provides
    assert not any(name.endswith("(64bit)") for name in provides)


def test_core_is_a_32_bit_x86_core_of_the_old_versions(testos_i386: Testos) -> None:
    crash = testos_i386.crashes["crasher"]
    header = crash.core.read_bytes()[:20]
    packages = repo_packages(testos_i386.repo)

    def ids(nvr: str) -> dict[str, str]:
        return build_ids_of(testos_i386.repo / packages[nvr].location_href)

    assert header[:4] == b"\x7fELF" and header[4] == ELFCLASS32
    assert struct.unpack("<HH", header[16:20]) == (4, EM_386)  # ET_CORE, EM_386
    modules = core_build_ids(crash.core)
    assert modules["/usr/bin/crasher"] == ids("crasher-1.0-1")["/usr/bin/crasher"]
    assert modules["/usr/lib/libcrash.so.2"] == ids("libcrash-2.0-1")["/usr/lib/libcrash.so.2"]
    assert modules["/usr/lib/libcrash.so.2"] != ids("libcrash-2.1-1")["/usr/lib/libcrash.so.2"]


def test_problem_dir_says_what_an_i686_machine_says(testos_i386: Testos) -> None:
    crash = testos_i386.crashes["crasher"]

    assert (crash.problem_dir / "architecture").read_text() == "i686"  # uname -m
    assert (crash.problem_dir / "package").read_text() == "crasher-1.0-1"
    os_info = (crash.problem_dir / "os_info").read_text().splitlines()
    assert all(line in os_info for line in OS_INFO_LINES)
    assert crash.installed == ("crasher-1.0-1.i686", "libcrash-2.0-1.i686", "testos-base-1-1.i686")


def test_pruning_keeps_the_layers_of_both_releases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRACER_TEST_CACHE", str(tmp_path))
    layers = build.layers_dir()
    kept = [*build.current_layer_names(X86_64), *build.current_layer_names(I686)]
    for name in [*kept, "rootfs-0123456789abcdef", "release-i686-0123456789abcdef"]:
        (layers / name).mkdir(parents=True)

    build.prune_stale_layers(build.known_layer_names())

    assert sorted(entry.name for entry in layers.iterdir()) == sorted(kept)
