"""Compile the application packages from ``sources/`` into RPMs with debuginfo.

Each package version is one directory ``sources/<name>-<version>/``. Debian's
rpmbuild has no Fedora macros (redhat-rpm-config), so the defines below turn on
what Fedora's do, and rpm's own ``__debug_install_post`` passes them to
find-debuginfo. Every source package then comes out shaped like Fedora's:

- the binaries keep a MiniDebugInfo symbol table (``.gnu_debugdata``) and get
  ``/usr/lib/.build-id/xx/...`` links;
- ``<name>-debuginfo`` gets ``/usr/lib/debug/<path>-<version>-<release>.<arch>.debug``,
  dwz-compressed, with ``/usr/lib/debug/.build-id/xx/....debug`` links;
- ``<name>-debugsource`` gets the sources under ``/usr/src/debug``;
- a subpackage's files get their own ``<name>-<sub>-debuginfo``; and when two ELF
  files of one source package share DWARF (``shapes``), dwz moves it to a multifile,
  ``/usr/lib/debug/.dwz/<name>-<version>-<release>.<arch>``, which stays in the main
  ``<name>-debuginfo``.
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
    # A source package split as Fedora splits one (see SPLIT_SPEC): this library in
    # <name>-libs, the program /usr/bin/<name> in <name>-tools, documentation in <name>.
    split_soname: str | None = None

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
    # Two ELF files including one big header: dwz makes a multifile of their shared
    # DWARF (all of the header's types, used or not, are in both).
    *(
        App(
            "shapes", version, "Draws shapes with its library, which crashes",
            cflags="-fno-eliminate-unused-debug-types", split_soname="libshapes.so.1",
        )
        for version in ("1.0", "1.1")
    ),
)  # fmt: skip
# Their -debuginfo and -debugsource packages are built but left out of the repository.
# libquiet keeps its MiniDebugInfo, as every Fedora binary does: its frames get names
# (a symbol table) but no file, line or variables, so it still stands for a package
# whose debuginfo is missing.
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

SPLIT_SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: {summary}
License: GPL-2.0-or-later

%description
{summary} (a package of the synthetic testos release, split like Fedora's).

%package libs
Summary: The {name} library

%description libs
The shared library of {name}.

%package tools
Summary: The {name} program
Requires: %{{name}}-libs%{{?_isa}} = %{{version}}-%{{release}}

%description tools
The program of {name}, which draws with its library.

%{{?debug_package}}

%prep
%setup -q -c -T
cp -a {source_dir}/. .

%build
{compiler} {cflags} -fPIC -shared -Wl,-soname,{soname} -o {soname} lib{name}.c
{compiler} {cflags} -o {name} {name}.c -L. -l:{soname} -Wl,-rpath,{libdir}

%install
install -D -m 0755 {soname} %{{buildroot}}{libdir}/{soname}
install -D -m 0755 {name} %{{buildroot}}/usr/bin/{name}
install -D -m 0644 README %{{buildroot}}/usr/share/doc/{name}/README

%files
/usr/share/doc/{name}/README

%files libs
{libdir}/{soname}

%files tools
/usr/bin/{name}
"""

# Fedora's debuginfo settings (redhat-rpm-config): rpm's own __debug_install_post
# (in /usr/lib/rpm/macros) turns each into its find-debuginfo option. rpm's defaults
# add the rest of Fedora's call: a build-id seed per version and release (so versions
# differ), unique .debug names and a source folder per build.
RPMBUILD_DEFINES = {
    "_enable_debug_packages": "1",
    "_include_minidebuginfo": "1",  # -m: .gnu_debugdata in every binary
    "_debugsource_packages": "1",  # -S debugsourcefiles.list: <name>-debugsource
    "_debuginfo_subpackages": "1",  # <name>-<sub>-debuginfo per subpackage
    "_find_debuginfo_dwz_opts": (
        "--run-dwz --dwz-low-mem-die-limit 10000000 --dwz-max-die-limit 110000000"
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
    if app.split_soname:
        return SPLIT_SPEC.format(
            name=app.name,
            version=app.version,
            release=RELEASE,
            summary=app.summary,
            source_dir=app.source_dir,
            compiler=compiler,
            cflags=cflags,
            soname=app.split_soname,
            libdir=target.libdir,
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
