"""Tiny real RPMs for the sync tests, built with rpmbuild once and cached by their inputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from testing.cache import cache_root, digest_of

# One main package plus ``count`` subpackages named <name>-1 ... <name>-<count>, each
# owning one small file, so one rpmbuild run yields many distinct NEVRAs.
SPEC = """\
Name: %{pkgname}
Version: %{pkgversion}
Release: %{pkgrelease}
Summary: A package for retracer's sync tests
License: MIT
BuildArch: noarch
%description
A package for retracer's sync tests.
%{lua: for i = 1, tonumber(rpm.expand("%{subpackages}")) do
  local sub = rpm.expand("%{pkgname}") .. "-" .. i
  print("%package -n " .. sub .. "\\nSummary: " .. sub .. "\\n")
  print("%description -n " .. sub .. "\\n" .. sub .. "\\n")
  print("%files -n " .. sub .. "\\n/usr/share/%{pkgname}/" .. i .. "\\n")
end}
%install
mkdir -p %{buildroot}/usr/share/%{pkgname}
echo %{pkgversion} > %{buildroot}/usr/share/%{pkgname}/version
for i in $(seq 1 %{subpackages}); do
    echo "$i %{pkgversion}" > %{buildroot}/usr/share/%{pkgname}/$i
done
%files
/usr/share/%{pkgname}/version
"""

_DEFINES = {
    "_binary_payload": "w6.gzdio",  # readable by every rpm, old or new
    "__os_install_post": "%{nil}",
    "_build_id_links": "none",
    "debug_package": "%{nil}",
}


def build_rpms(name: str, version: str, subpackages: int = 0, release: str = "1") -> list[Path]:
    """The RPM files of ``name`` and its subpackages at this version, sorted by file name."""
    key = digest_of(
        [SPEC, repr(sorted(_DEFINES.items())), name, version, release, str(subpackages)]
    )
    target = cache_root() / "sync-rpms" / key
    if not target.is_dir():
        _build(target, name, version, release, subpackages)
    return sorted(target.glob("*.rpm"))


def _build(target: Path, name: str, version: str, release: str, subpackages: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        top = Path(scratch) / "top"
        spec = Path(scratch) / f"{name}.spec"
        spec.write_text(SPEC)
        defines = {
            **_DEFINES,
            "_topdir": str(top),
            "pkgname": name,
            "pkgversion": version,
            "pkgrelease": release,
            "subpackages": str(subpackages),
        }
        command = ["rpmbuild", "-bb", "--quiet", str(spec)]
        for macro, value in defines.items():
            command += ["--define", f"{macro} {value}"]
        subprocess.run(command, check=True, capture_output=True)
        built = Path(scratch) / "built"
        built.mkdir()
        for rpm_file in (top / "RPMS").rglob("*.rpm"):
            shutil.move(rpm_file, built / rpm_file.name)
        try:
            os.rename(built, target)  # all or nothing, so a half build is never cached
        except OSError:
            if not target.is_dir():
                raise
