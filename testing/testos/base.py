"""Pack the Debian root file system into one RPM, ``testos-base``.

The RPM's automatic Provides (sonames with symbol versions) satisfy the library
Requires of ordinary RPMs built against the same glibc, and the explicit Provides
below stand in for the packages a release config bootstraps from.
"""

from __future__ import annotations

from pathlib import Path

from testing.cache import digest_of
from testing.testos import osrelease
from testing.testos.rootfs import build_rootfs, rootfs_key
from testing.testos.steps import cached_dir, define_args, run, step
from testing.testos.target import Target

BASE_NAME = "testos-base"
BASE_VERSION = "1"
BASE_RELEASE = "1"
# What `bootstrap: packages:` names in a release config; all live in testos-base.
BOOTSTRAP_PACKAGES = ("bash", "coreutils", "gdb", "dnf", "rpm", "elfutils")

DNF_CONF = """\
[main]
gpgcheck=0
installonly_limit=3
best=False
skip_if_unavailable=False
install_weak_deps=False
keepcache=False
"""

SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: TestOS base system (a Debian root file system)
License: Various
# Every ELF package requires rtld(GNU_HASH); Fedora's glibc provides it.
Provides: rtld(GNU_HASH)
Provides: {bootstrap}
# dnf takes $releasever from the package that provides this.
Provides: system-release = {version}-{release}
Provides: system-release(releasever) = {version}
# Sonames are provided automatically; Debian's packages need nothing from RPM.
AutoReq: no
AutoProv: yes

%description
The Debian root file system of the synthetic testos release, as one package.

%install
mkdir -p %{{buildroot}}
tar -C %{{buildroot}} -xf {rootfs} --exclude='./dev/?*'
rm -f %{{buildroot}}/etc/hostname %{{buildroot}}/etc/resolv.conf
rm -f %{{buildroot}}/etc/os-release %{{buildroot}}/usr/lib/os-release
rm -rf %{{buildroot}}/etc/yum.repos.d %{{buildroot}}/var/cache/apt/archives/*.deb
cp -a {overlay}/. %{{buildroot}}/

%files
/*
"""

# Turn off everything rpmbuild would do to the files: they are used as they are.
RPMBUILD_DEFINES = {
    "__os_install_post": "%{nil}",
    "__arch_install_post": "%{nil}",
    "_enable_debug_packages": "0",
    "debug_package": "%{nil}",
    "_build_id_links": "none",
    "_binary_payload": "w3T.zstdio",
}


def write_overlay(overlay: Path) -> None:
    """The files that make the Debian tree identify and behave as testos 1."""
    etc = overlay / "etc"
    (etc / "dnf" / "vars").mkdir(parents=True)
    (etc / "yum.repos.d").mkdir()  # present and empty: repositories are given per call
    (etc / "os-release").write_text(osrelease.OS_RELEASE_FILE)
    (overlay / "usr" / "lib").mkdir(parents=True)
    (overlay / "usr" / "lib" / "os-release").write_text(osrelease.OS_RELEASE_FILE)
    (etc / "system-release").write_text(osrelease.SYSTEM_RELEASE + "\n")
    (etc / "testos-release").write_text(osrelease.SYSTEM_RELEASE + "\n")
    (etc / "dnf" / "dnf.conf").write_text(DNF_CONF)
    (etc / "dnf" / "vars" / "releasever").write_text(BASE_VERSION + "\n")


def base_key(target: Target) -> str:
    return digest_of([rootfs_key(target), Path(__file__), Path(osrelease.__file__), repr(target)])


def build_base_rpm(layers: Path, target: Target) -> Path:
    """A cached directory holding the single ``testos-base`` RPM."""

    def build(work: Path) -> None:
        rootfs = build_rootfs(layers, target)
        topdir = work / "rpmbuild"
        overlay = work / "overlay"
        write_overlay(overlay)
        spec = work / f"{BASE_NAME}.spec"
        spec.write_text(
            SPEC.format(
                name=BASE_NAME,
                version=BASE_VERSION,
                release=BASE_RELEASE,
                bootstrap=" ".join(BOOTSTRAP_PACKAGES),
                rootfs=rootfs,
                overlay=overlay,
            )
        )
        defines = {"_topdir": str(topdir), **RPMBUILD_DEFINES}
        with step(f"rpmbuild testos-base.{target.machine} from the root file system"):
            run(["rpmbuild", "-bb", *target.rpmbuild_options, *define_args(defines), spec])
        for rpm in (topdir / "RPMS").rglob("*.rpm"):
            rpm.rename(work / rpm.name)
        run(["rm", "-rf", topdir, overlay, spec])

    return cached_dir(layers / target.layer("base", base_key(target)), build)
