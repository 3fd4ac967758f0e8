"""Compile the application packages from ``sources/`` into RPMs with debuginfo.

Each package version is one directory ``sources/<name>-<version>/``. Debian's
rpmbuild has no Fedora macros, so the defines below make it run find-debuginfo
the way Fedora does: the binary package gets ``/usr/lib/.build-id/xx/...`` links
and ``<name>-debuginfo`` gets ``/usr/lib/debug/.build-id/xx/....debug``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from testing.cache import digest_of
from testing.testos.steps import cached_dir, define_args, run, step
from testing.testos.target import Target

SOURCES = Path(__file__).parent / "sources"
RELEASE = "1"
CFLAGS = "-g -O0 -fno-omit-frame-pointer -Wall"


@dataclass(frozen=True)
class App:
    """One version of one package built from ``sources/<name>-<version>``."""

    name: str
    version: str
    summary: str
    language: str = "c"  # or "c++"
    library_soname: str | None = None  # a shared library package, else a program
    uses: tuple[str, ...] = ()  # "<name>-<version>" of the library packages it links
    cflags: str = ""  # on top of CFLAGS

    @property
    def nvr(self) -> str:
        return f"{self.name}-{self.version}-{RELEASE}"

    @property
    def source_dir(self) -> Path:
        return SOURCES / f"{self.name}-{self.version}"


APPS = (
    App("libcrash", "2.0", "List helpers that crash", library_soname="libcrash.so.2"),
    App("libcrash", "2.1", "List helpers that crash", library_soname="libcrash.so.2"),
    App("crasher", "1.0", "Crashes inside libcrash", uses=("libcrash-2.0",)),
    App("crasher", "1.1", "Crashes inside libcrash", uses=("libcrash-2.1",)),
    App("threadcrash", "1.0", "Crashes in one of four threads"),
    App("threadcrash", "1.1", "Crashes in one of four threads"),
    App("cxxabort", "1.0", "Aborts on an uncaught exception", language="c++"),
    App("cxxabort", "1.1", "Aborts on an uncaught exception", language="c++"),
    App("libquiet", "1.0", "Callbacks without debuginfo", library_soname="libquiet.so.1"),
    App("libquiet", "1.1", "Callbacks without debuginfo", library_soname="libquiet.so.1"),
    App("quietcrash", "1.0", "Crashes in a callback from libquiet", uses=("libquiet-1.0",)),
    App("quietcrash", "1.1", "Crashes in a callback from libquiet", uses=("libquiet-1.1",)),
    App("hostile", "1.0", "Aborts with markup and escapes in its strings"),
    App("hostile", "1.1", "Aborts with markup and escapes in its strings"),
    # One program, one crash per exploitable class (its first argument); the stack
    # protector needs a canary in every function.
    App("exploits", "1.0", "Crashes in the way its argument names", cflags="-fstack-protector-all"),
)
# Their -debuginfo packages are built but left out of the repository.
DEBUGINFO_WITHHELD = ("libquiet",)

SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: {summary}
License: GPL-2.0-or-later
{requires}

%description
{summary} (a package of the synthetic testos release).

%{{?debug_package}}

%prep
%setup -q -c -T
cp -a {source_dir}/. .

%build
{build}

%install
{install}

%files
{files}
"""

RPMBUILD_DEFINES = {
    "_enable_debug_packages": "1",
    # Fedora's find-debuginfo call; the seed makes build-ids unique per version.
    "__debug_install_post": (
        "/usr/bin/find-debuginfo --build-id-seed %{VERSION}-%{RELEASE}"
        " --unique-debug-src-base %{name}-%{VERSION}-%{RELEASE}.%{_arch}"
        ' "%{_builddir}/%{?buildsubdir}"'
    ),
    "__os_install_post": "%{nil}",
    "__arch_install_post": "%{nil}",
    "_build_id_links": "compat",
}


def apps_for(target: Target) -> tuple[App, ...]:
    return tuple(app for app in APPS if target.builds(app.name))


def spec_for(app: App, libraries: dict[str, Path], target: Target) -> str:
    compiler = " ".join(["g++" if app.language == "c++" else "gcc", *target.compiler_options])
    cflags = f"{CFLAGS} {app.cflags}".strip()
    sources = " ".join(
        sorted(p.name for p in app.source_dir.iterdir() if p.suffix in (".c", ".cpp"))
    )
    if app.library_soname:
        output = app.library_soname
        build = f"{compiler} {cflags} -fPIC -shared -Wl,-soname,{output} -o {output} {sources}"
        installed = f"{target.libdir}/{output}"
        requires = ""
    else:
        output = app.name
        links = " ".join(
            f"-I{SOURCES / used} -L{libraries[used]} -l:{_soname_of(used)}" for used in app.uses
        )
        # Debian's ld.so does not search /usr/lib64, so programs carry the libdir as rpath.
        build = f"{compiler} {cflags} -o {output} {sources} {links} -Wl,-rpath,{target.libdir}"
        installed = f"/usr/bin/{output}"
        requires = "\n".join(f"Requires: {used.rsplit('-', 1)[0]}" for used in app.uses)
    return SPEC.format(
        name=app.name,
        version=app.version,
        release=RELEASE,
        summary=app.summary,
        requires=requires,
        source_dir=app.source_dir,
        build=build,
        install=f"install -D -m 0755 {output} %{{buildroot}}{installed}",
        files=installed,
    )


def _soname_of(nv: str) -> str:
    return next(
        a.library_soname for a in APPS if f"{a.name}-{a.version}" == nv and a.library_soname
    )


def unpack_library(work: Path, library: App, target: Target) -> Path:
    """Unpack a built library package, for the programs that link against it."""
    (rpm,) = work.glob(f"{library.nvr}.*.rpm")
    sysroot = work / "sysroot" / library.nvr
    sysroot.mkdir(parents=True)
    run(["sh", "-c", f"rpm2archive - < {rpm} | tar -xzf -"], cwd=sysroot)
    return sysroot / target.libdir.lstrip("/")


def apps_key(target: Target) -> str:
    return digest_of([SOURCES, Path(__file__), repr(target)])


def build_app_rpms(layers: Path, target: Target) -> Path:
    """A cached directory with the target's application RPMs, debuginfo ones included."""

    def build(work: Path) -> None:
        # Libraries first: programs link against the .so unpacked from its package.
        libraries: dict[str, Path] = {}
        for app in sorted(apps_for(target), key=lambda a: a.library_soname is None):
            with step(f"rpmbuild {app.nvr}.{target.machine}"):
                topdir = work / "rpmbuild" / app.nvr
                spec = topdir / f"{app.name}.spec"
                spec.parent.mkdir(parents=True)
                spec.write_text(spec_for(app, libraries, target))
                run(
                    [
                        "rpmbuild",
                        "-bb",
                        *target.rpmbuild_options,
                        *define_args({"_topdir": str(topdir), **RPMBUILD_DEFINES}),
                        spec,
                    ]
                )
                for rpm in (topdir / "RPMS").rglob("*.rpm"):
                    shutil.move(rpm, work / rpm.name)
                if app.library_soname:
                    libraries[f"{app.name}-{app.version}"] = unpack_library(work, app, target)
        shutil.rmtree(work / "rpmbuild")
        shutil.rmtree(work / "sysroot")

    return cached_dir(layers / target.layer("apps", apps_key(target)), build)
