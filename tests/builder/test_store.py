"""The package store with real RPMs from the testos repository: no podman needed.

Each NEVRA is unpacked once however many workers want it, a half-done unpack is
never used, eviction skips packages in use, and no member lands outside its tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from retracer.builder.packages import PackageStore
from retracer.sync.errors import PayloadUnreadable
from retracer.sync.index import RepositoryIndex
from retracer.sync.model import Package
from retracer.sync.settings import ReleaseSettings
from testing.testos import Testos


def repository_files(testos: Testos, tmp_path: Path, *nvrs: str) -> dict[Package, Path]:
    release = ReleaseSettings(**{**testos.release_config(), "repositories": (testos.repo,)})
    index = RepositoryIndex(release, tmp_path / "index")
    packages = [index.find(nvr, "x86_64") for nvr in nvrs]
    assert None not in packages
    return index.package_files(p for p in packages if p is not None)


@pytest.fixture
def files(testos: Testos, tmp_path: Path) -> dict[Package, Path]:
    return repository_files(
        testos, tmp_path, "crasher-1.0-1", "crasher-debuginfo-1.0-1", "libcrash-2.0-1"
    )


def test_a_package_is_unpacked_whole_and_read_only(
    files: dict[Package, Path], tmp_path: Path
) -> None:
    store = PackageStore(tmp_path / "store", max_bytes=1 << 30)
    with store.hold(files) as holding:
        assert sorted(holding.unpacked) == sorted(files)
        tree = holding.trees["crasher-debuginfo-1.0-1.x86_64"]
        debug = tree / "usr/lib/debug/usr/bin/crasher-1.0-1.x86_64.debug"
        assert debug.read_bytes()[:4] == b"\x7fELF"
        assert debug.stat().st_mode & 0o777 == 0o444
        links = list((tree / "usr/lib/debug/.build-id").glob("*/*.debug"))
        assert links and all(link.is_symlink() and link.resolve() == debug for link in links)
        assert (holding.trees["crasher-1.0-1.x86_64"] / "usr/bin/crasher").stat().st_mode & 0o111


def test_concurrent_holders_unpack_each_package_once(
    files: dict[Package, Path], tmp_path: Path
) -> None:
    # Four workers' stores over one folder, all asking at once.
    stores = [PackageStore(tmp_path / "store", max_bytes=1 << 30) for _ in range(4)]
    start = threading.Barrier(len(stores))
    unpacked: list[Package] = []
    checked: dict[str, int] = {}
    second_check: dict[str, threading.Event] = {}
    lock = threading.Lock()

    def check(path: Path, name: str) -> None:
        """Runs just before an unpack: it holds the first unpack of each package open
        for a moment, in which any second unpack of it would arrive here too."""
        with lock:
            checked[name] = checked.get(name, 0) + 1
            arrived = second_check.setdefault(name, threading.Event())
            if checked[name] > 1:
                arrived.set()
        arrived.wait(timeout=1)

    def worker(store: PackageStore) -> None:
        start.wait()
        with store.hold(files, check) as holding, lock:
            unpacked.extend(holding.unpacked)

    threads = [threading.Thread(target=worker, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert checked == {path.name: 1 for path in files.values()}
    assert sorted(unpacked) == sorted(files)
    assert sorted(os.listdir(tmp_path / "store" / "packages")) == sorted(p.nevra for p in files)


KILLED_UNPACK = """
import os, signal, sys
from pathlib import Path
from retracer.builder import packages
from retracer.sync.model import Package

real = packages.unpack_payload

def unpack_then_die(rpm_file, root):
    real(rpm_file, root)  # every file written, the rename not done yet
    os.kill(os.getpid(), signal.SIGKILL)

packages.unpack_payload = unpack_then_die
store = packages.PackageStore(Path(sys.argv[1]), max_bytes=1 << 30)
name, epoch, version, release, arch = sys.argv[3:8]
store.hold({Package(name, int(epoch), version, release, arch): Path(sys.argv[2])})
"""


def test_a_killed_unpack_leaves_nothing_that_is_used(
    files: dict[Package, Path], tmp_path: Path
) -> None:
    package, rpm_file = next((p, f) for p, f in files.items() if p.name == "crasher-debuginfo")
    fields = [package.name, str(package.epoch), package.version, package.release, package.arch]
    # The kill must land between the last file and the rename, which only a hook can time.
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_UNPACK, str(tmp_path / "store"), str(rpm_file), *fields],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr
    store = PackageStore(tmp_path / "store", max_bytes=1 << 30)
    (leftover,) = os.listdir(tmp_path / "store" / "staging")
    assert leftover.startswith(package.nevra)
    assert not store.tree(package.nevra).exists()

    with store.hold({package: rpm_file}) as holding:
        assert holding.unpacked == (package,)
        debug = holding.trees[package.nevra] / "usr/lib/debug/usr/bin/crasher-1.0-1.x86_64.debug"
        assert debug.is_file()
    assert store.clean_up() == [leftover]
    assert os.listdir(tmp_path / "store" / "staging") == []


def test_eviction_skips_packages_in_use_and_removes_the_oldest_others(
    files: dict[Package, Path], tmp_path: Path
) -> None:
    store = PackageStore(tmp_path / "store", max_bytes=0)
    used = {p: f for p, f in files.items() if p.name == "crasher-debuginfo"}
    idle = {p: f for p, f in files.items() if p not in used}
    with store.hold(idle):
        pass
    # Another worker's store over the same folder holds the used one through its gdb run.
    other = PackageStore(tmp_path / "store", max_bytes=0)
    with other.hold(used):
        removed = store.evict()
        (nevra,) = [p.nevra for p in used]
        assert sorted(removed) == sorted(p.nevra for p in idle)
        assert store.tree(nevra).is_dir()
        assert store.usage().packages == 1
    assert store.evict() == [nevra]
    assert store.usage().packages == 0
    assert os.listdir(tmp_path / "store" / "packages") == []


def test_a_package_cannot_write_outside_its_tree(testos: Testos, tmp_path: Path) -> None:
    escaping = build_rpm_with_symlinked_folder(tmp_path)
    store = PackageStore(tmp_path / "store", max_bytes=1 << 30)
    package = Package("escape", 0, "1", "1", "noarch")
    with pytest.raises(PayloadUnreadable) as refused:
        store.hold({package: escaping})
    assert "member /usr/share/escape/evil would land outside its tree" in refused.value.reason
    assert not (tmp_path / "outside" / "evil").exists()
    assert not store.tree(package.nevra).exists()
    assert os.listdir(tmp_path / "store" / "staging") == []


SPEC = """\
Name: escape
Version: 1
Release: 1
Summary: A folder that is a symlink out, and a file written through it
License: MIT
BuildArch: noarch
%description
Test package.
%install
mkdir -p %{buildroot}/usr/share
ln -s OUTSIDE %{buildroot}/usr/share/escape
%files
/usr/share/escape
/usr/share/escape/evil
"""


def build_rpm_with_symlinked_folder(tmp_path: Path) -> Path:
    """An RPM whose payload has /usr/share/escape -> <tmp>/outside, then a member
    /usr/share/escape/evil: rpmbuild found that file through the link at build time."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil").write_text("built through the link\n")
    spec = tmp_path / "escape.spec"
    spec.write_text(SPEC.replace("OUTSIDE", str(outside)))
    topdir = tmp_path / "rpmbuild"
    subprocess.run(
        ["rpmbuild", "-bb", "--define", f"_topdir {topdir}",
         "--define", "__os_install_post %{nil}", str(spec)],
        check=True, capture_output=True,
    )  # fmt: skip
    (outside / "evil").unlink()  # the unpack must not write it back
    (rpm,) = (topdir / "RPMS" / "noarch").glob("escape-*.rpm")
    return rpm
