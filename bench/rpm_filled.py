"""A repository of real RPM files: the testos packages among thousands of others.

elfutils' debuginfod indexes a repository by opening every RPM and reading every
ELF file in it, so its benchmark needs real package files, not metadata alone (see
:mod:`bench.fedora_sized` for that). Each filler package holds one small program
with its own build-id (the same tiny executable with the build-id bytes changed)
and the ``/usr/lib/.build-id`` link rpmbuild adds, like a Fedora package; one
rpmbuild run makes them all as subpackages of one spec. The repository gets its
metadata from retracer's own publisher, as ``retracer sync`` would. Built once per
testos revision and size, and cached.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from retracer.sync.repodata import metadata_files, publish
from testing.cache import cache_root
from testing.testos.steps import cached_dir

# Bump when the generated packages change.
_RECIPE = "1"
_PROGRAM = "int main(void) { return 0; }\n"


def rpm_filled_repository(testos_repo: Path, filler: int) -> Path:
    """The testos packages plus ``filler`` generated RPM files, with metadata."""
    revision = metadata_files(testos_repo)["primary"].checksum
    key = hashlib.sha256(f"{_RECIPE}\n{revision}\n{filler}".encode()).hexdigest()[:16]
    target = cache_root() / "bench-repositories" / f"rpms-{key}"
    return cached_dir(target, lambda work: _build(work, testos_repo, filler))


def _build(work: Path, testos_repo: Path, filler: int) -> None:
    for rpm in sorted(testos_repo.glob("Packages/*/*.rpm")):
        href = rpm.relative_to(testos_repo)
        (work / href).parent.mkdir(parents=True, exist_ok=True)
        os.link(rpm, work / href)
    scratch = work / ".rpmbuild"
    programs = scratch / "programs"
    programs.mkdir(parents=True)
    _write_programs(programs, filler)
    spec = scratch / "filler.spec"
    spec.write_text(_spec(programs, filler))
    subprocess.run(
        ["rpmbuild", "-bb", "--quiet",
         "--define", f"_topdir {scratch}",
         "--define", "debug_package %{nil}",
         "--define", "__os_install_post %{nil}",
         "--define", "_build_id_links compat",
         str(spec)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    packages = work / "Packages" / "f"
    packages.mkdir(parents=True, exist_ok=True)
    for rpm in (scratch / "RPMS").rglob("*.rpm"):
        os.replace(rpm, packages / rpm.name)
    shutil.rmtree(scratch)
    publish(work, work)


def _write_programs(folder: Path, count: int) -> None:
    source = folder / "program.c"
    source.write_text(_PROGRAM)
    template = folder / "program"
    seed = "0x" + "ab" * 20
    subprocess.run(
        ["gcc", "-O2", f"-Wl,--build-id={seed}", "-o", str(template), str(source)], check=True
    )
    image = template.read_bytes()
    marker = bytes.fromhex(seed[2:])
    assert image.count(marker) == 1, "the build-id must occur once in the template"
    for number in range(count):
        build_id = hashlib.sha1(f"filler {number}".encode()).digest()
        (folder / f"filler{number:05d}").write_bytes(image.replace(marker, build_id))
    template.unlink()
    source.unlink()


def _spec(programs: Path, count: int) -> str:
    parts = [
        "Name: filler\nVersion: 1.0\nRelease: 1\nSummary: Generated packages\n"
        "License: MIT\n\n%description\nGenerated packages for a benchmark.\n"
    ]
    for number in range(count):
        name = f"filler{number:05d}"
        parts.append(
            f"%package -n {name}\nSummary: Generated package {number}\n\n"
            f"%description -n {name}\nGenerated package {number}.\n\n"
            f"%files -n {name}\n/usr/bin/{name}\n"
        )
    parts.append(
        f"%install\nmkdir -p %{{buildroot}}/usr/bin\n"
        f"install -m 0755 {programs}/filler* %{{buildroot}}/usr/bin/\n"
    )
    return "\n".join(parts)
