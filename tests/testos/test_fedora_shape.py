"""testos's debuginfo has Fedora's shape, read from the built packages with rpm, cpio
and pyelftools: a -debugsource package per source package, per-subpackage -debuginfo,
dwz with a .dwz multifile, and MiniDebugInfo (.gnu_debugdata) in the binaries."""

from __future__ import annotations

import lzma
import posixpath
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from testing.testos import Testos
from testing.testos.base import BASE_NAME
from testing.testos.rpms import APPS, DEBUGINFO_WITHHELD, RELEASE, App
from tests.testos.inspection import build_ids_of, core_build_ids, repo_packages

Unpacked = Callable[[str], Path]
VERSIONS = ("1.0", "1.1")
# shapes' subpackages and the ELF file each ships.
SUBPACKAGE_FILES = {"libs": "/usr/lib64/libshapes.so.1", "tools": "/usr/bin/shapes"}


def rpm_query(testos: Testos, nvr: str, query: str) -> list[str]:
    """What ``rpm -qp <query>`` says of the package file, one entry a line."""
    (rpm_file,) = testos.repo.glob(f"Packages/*/{nvr}.x86_64.rpm")
    answer = subprocess.run(
        ["rpm", "-qp", query, "--nosignature", str(rpm_file)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return answer.stdout.splitlines()


def listing(testos: Testos, nvr: str) -> set[str]:
    """The files and folders a package ships, as ``rpm -qlp`` lists them."""
    return set(rpm_query(testos, nvr, "--list"))


@pytest.fixture(scope="module")
def unpacked(testos: Testos, tmp_path_factory: pytest.TempPathFactory) -> Unpacked:
    """A package's files, unpacked once with rpm2cpio and cpio (not retracer's reader)."""
    root = tmp_path_factory.mktemp("unpacked")

    def unpack(nvr: str) -> Path:
        folder = root / nvr
        if not folder.is_dir():
            (rpm_file,) = testos.repo.glob(f"Packages/*/{nvr}.x86_64.rpm")
            folder.mkdir()
            subprocess.run(
                f"rpm2cpio {rpm_file} | cpio -idm --quiet", shell=True, cwd=folder, check=True
            )
        return folder

    return unpack


def section(path: Path, name: str) -> bytes | None:
    with path.open("rb") as stream:
        found = ELFFile(stream).get_section_by_name(name)
        return found.data() if found is not None else None


def build_id_note(path: Path) -> str:
    with path.open("rb") as stream:
        for note in ELFFile(stream).get_section_by_name(".note.gnu.build-id").iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return str(note["n_desc"])
    raise LookupError(f"{path} has no build-id note")


@pytest.mark.parametrize(
    "app", [app for app in APPS if app.name not in DEBUGINFO_WITHHELD], ids=lambda app: app.nvr
)
def test_each_source_package_has_a_debugsource_with_its_sources(testos: Testos, app: App) -> None:
    vr = f"{app.version}-{RELEASE}"
    folder = f"/usr/src/debug/{app.name}-{vr}.x86_64"
    sources = listing(testos, f"{app.name}-debugsource-{vr}")
    compiled = [p.name for p in app.source_dir.iterdir() if p.suffix in (".c", ".cpp")]
    if app.split_soname:  # and the header both ELF files describe
        compiled.append(f"{app.name}.h")

    assert {f"{folder}/{name}" for name in compiled} <= sources
    assert all(path.startswith(folder) for path in sources)
    debuginfo = [nvr for nvr in repo_packages(testos.repo) if f"-debuginfo-{vr}" in nvr]
    for nvr in debuginfo:
        if nvr.startswith(app.name):
            assert not any(p.startswith("/usr/src/debug") for p in listing(testos, nvr))


@pytest.mark.parametrize("version", VERSIONS)
def test_each_subpackage_has_its_own_debuginfo(testos: Testos, version: str) -> None:
    vr = f"{version}-{RELEASE}"
    packages = repo_packages(testos.repo)
    for sub, path in SUBPACKAGE_FILES.items():
        build_id = build_ids_of(testos.repo / packages[f"shapes-{sub}-{vr}"].location_href)[path]
        debuginfo = listing(testos, f"shapes-{sub}-debuginfo-{vr}")
        assert f"/usr/lib/debug{path}-{vr}.x86_64.debug" in debuginfo
        assert f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug" in debuginfo
        # rpm makes each subpackage's -debuginfo require the one with the multifile.
        requires = rpm_query(testos, f"shapes-{sub}-debuginfo-{vr}", "--requires")
        assert f"shapes-debuginfo(x86-64) = {vr}" in requires
    # The main package has no ELF file: its -debuginfo holds the multifile alone, as
    # Fedora's do with no build-id link to it (gdb looks for it by its path).
    assert listing(testos, f"shapes-debuginfo-{vr}") == {
        "/usr/lib/debug",
        "/usr/lib/debug/.dwz",
        f"/usr/lib/debug/.dwz/shapes-{vr}.x86_64",
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_dwz_moved_the_shared_types_into_the_multifile_the_debug_files_link(
    testos: Testos, unpacked: Unpacked, version: str
) -> None:
    vr = f"{version}-{RELEASE}"
    multifile_path = f"/usr/lib/debug/.dwz/shapes-{vr}.x86_64"
    multifile = unpacked(f"shapes-debuginfo-{vr}") / multifile_path.lstrip("/")
    multifile_id = build_id_note(multifile)
    assert b"swatch_chroma" in multifile.read_bytes()
    for sub, path in SUBPACKAGE_FILES.items():
        debug_path = f"/usr/lib/debug{path}-{vr}.x86_64.debug"
        debug = unpacked(f"shapes-{sub}-debuginfo-{vr}") / debug_path.lstrip("/")
        altlink = section(debug, ".gnu_debugaltlink")
        assert altlink is not None, f"{debug_path} was not compressed against a multifile"
        name, _, alt_build_id = altlink.partition(b"\0")
        # A path relative to the .debug file, and the multifile's build-id.
        where = posixpath.normpath(posixpath.join(posixpath.dirname(debug_path), name.decode()))
        assert where == multifile_path
        assert alt_build_id.hex() == multifile_id
        # The swatch type of shapes.h is described in the multifile alone.
        assert b"swatch_chroma" not in debug.read_bytes()


def test_every_binary_carries_minidebuginfo(testos: Testos, unpacked: Unpacked) -> None:
    binaries = [
        nvr
        for nvr in repo_packages(testos.repo)
        if not nvr.startswith(BASE_NAME) and "-debug" not in nvr
    ]
    checked = []
    for nvr in binaries:
        for path in (unpacked(nvr) / "usr").rglob("*"):
            if path.is_symlink() or not path.is_file() or path.read_bytes()[:4] != b"\x7fELF":
                continue
            mini = section(path, ".gnu_debugdata")
            assert mini is not None, f"{path} of {nvr} has no MiniDebugInfo"
            assert section(path, ".symtab") is None  # stripped: the table is in there
            checked.append(path.name)
            if path.name == "libquiet.so.1":
                # libquiet has no -debuginfo, yet its static function has a name
                # (and no file or line: MiniDebugInfo has no DWARF).
                embedded = lzma.decompress(mini)
                assert embedded[:4] == b"\x7fELF"
                assert b"quiet_v1" in embedded and b".debug_info" not in embedded
    assert {"libquiet.so.1", "libshapes.so.1", "shapes", "crasher"} <= set(checked)


def test_the_shapes_core_maps_the_old_program_and_library(testos: Testos) -> None:
    crash = testos.crashes["shapes"]
    packages = repo_packages(testos.repo)

    def ids(nvr: str) -> dict[str, str]:
        return build_ids_of(testos.repo / packages[nvr].location_href)

    modules = core_build_ids(crash.core)
    assert crash.package == "shapes-tools-1.0-1"
    assert (crash.problem_dir / "package").read_text() == crash.package
    for sub, path in SUBPACKAGE_FILES.items():
        assert modules[path] == ids(f"shapes-{sub}-1.0-1")[path]
        assert modules[path] != ids(f"shapes-{sub}-1.1-1")[path]
    assert {"shapes-tools-1.0-1.x86_64", "shapes-libs-1.0-1.x86_64"} <= set(crash.installed)
