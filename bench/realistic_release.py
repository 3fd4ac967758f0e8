"""A release at real size: one program mapping >= 100 libraries from >= 100 packages.

Each library ``libbNNN`` is its own source package, built by rpmbuild with Fedora's
find-debuginfo into a binary package, a ``-debuginfo`` and a ``-debugsource``. Its
sources are generated: many functions over struct types of their own, so that the
debuginfo holds real DWARF that gdb has to read. Each library also carries an
extra non-allocated section of random bytes, which find-debuginfo moves into the
``.debug`` file: incompressible padding that brings the installed debuginfo to the
size of a real crash's (over 1 GiB in all), without the compile time.

A sequence of crashes follows, as updates do: each crash's libraries differ from the
previous one's by 2-5 new versions. Each crash is a real core, taken with gdb's
gcore in the release's base image with that crash's libraries mounted.

Everything is built once per recipe and cached under the test cache
(``bench-release-<key>``), libraries in parallel.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from testing.cache import cache_root, digest_of
from testing.testos.problem import write_problem_dir
from testing.testos.steps import cached_dir, define_args, log, run, step

LIBRARIES = 110
FUNCTIONS = 1500
FIELDS = 20
PADDING_MIB = 8
CRASHES = 20
PROGRAM = "benchcrash"
LIBDIR = "/usr/lib64/bench"
# Bump when the generated release changes in a way its inputs do not show.
RECIPE = "1"

DEFINES = {
    "_enable_debug_packages": "1",
    "_debugsource_packages": "1",
    "__debug_install_post": (
        "/usr/bin/find-debuginfo --build-id-seed %{VERSION}-%{RELEASE}"
        " --unique-debug-src-base %{name}-%{VERSION}-%{RELEASE}.%{_arch}"
        ' -S debugsourcefiles.list "%{_builddir}/%{?buildsubdir}"'
    ),
    "__os_install_post": "%{nil}",
    "__arch_install_post": "%{nil}",
    "_build_id_links": "compat",
    # Fast to pack: the padding does not compress anyway.
    "_binary_payload": "w1.gzdio",
}

SPEC = """\
Name: {name}
Version: {version}
Release: 1
Summary: Generated package of the benchmark release
License: MIT
{requires}

%description
Generated package of the benchmark release.

%{{?debug_package}}

%prep
%setup -q -c -T
cp -a {source}/. .

%build
{build}

%install
{install}

%files
{files}
"""


@dataclass(frozen=True)
class BenchCrash:
    name: str
    problem_dir: Path
    core: Path
    # name -> version of each library the crash mapped.
    versions: dict[str, int]
    crash_library: str


@dataclass(frozen=True)
class BenchRelease:
    root: Path
    repo: Path
    crashes: list[BenchCrash]


def library_name(number: int) -> str:
    return f"libb{number:03d}"


def crash_versions() -> list[dict[str, int]]:
    """Each crash's library versions: all 1 at first, then 2-5 bumped per crash."""
    rng = random.Random(4242)
    versions = {library_name(n): 1 for n in range(LIBRARIES)}
    sequence = [dict(versions)]
    for _ in range(CRASHES - 1):
        for name in rng.sample(sorted(versions), rng.randint(2, 5)):
            versions[name] += 1
        sequence.append(dict(versions))
    return sequence


def library_source(name: str, version: int) -> str:
    rng = random.Random(f"{name}-{version}")
    parts = ["#include <stddef.h>", "#include <string.h>"]
    for f in range(FUNCTIONS):
        fields = "\n".join(
            f"    {rng.choice(['int', 'long', 'double', 'char *', 'unsigned short'])}"
            f" {name}_f{f}_m{m};"
            for m in range(FIELDS)
        )
        parts.append(f"struct {name}_s{f} {{\n{fields}\n    struct {name}_s{f} *next;\n}};")
        parts.append(
            f"long {name}_fn{f}(struct {name}_s{f} *in, int depth)\n{{\n"
            f"    struct {name}_s{f} local;\n    long total = {version};\n"
            f"    memset(&local, 0, sizeof local);\n    local.next = in;\n"
            f"    for (int i = 0; i < depth; i++) total += i * {f + 1};\n"
            f"    return total + (in ? (long)sizeof *in : 0);\n}}"
        )
    parts.append(
        f"int {name}_step(int crash)\n{{\n    int *volatile nowhere = NULL;\n"
        f"    long sum = {name}_fn0(NULL, 3);\n"
        f"    if (crash) return *nowhere + (int)sum;  /* {name} version {version} */\n"
        f"    return (int)sum;\n}}"
    )
    return "\n".join(parts) + "\n"


def program_source() -> str:
    names = [library_name(n) for n in range(LIBRARIES)]
    declarations = "\n".join(f"int {n}_step(int crash);" for n in names)
    calls = "\n".join(f"    total += {n}_step(which == {i});" for i, n in enumerate(names))
    return (
        f"#include <stdlib.h>\n{declarations}\n"
        f"int main(int argc, char **argv)\n{{\n"
        f"    int which = argc > 1 ? atoi(argv[1]) : -1;\n    long total = 0;\n"
        f"{calls}\n    return (int)(total & 1);\n}}\n"
    )


def build_package(work: Path, name: str, version: int, source: str, library: bool) -> None:
    """rpmbuild one generated source package into ``work``."""
    top = work / "rpmbuild" / f"{name}-{version}"
    sources = top / "src"
    sources.mkdir(parents=True)
    (sources / f"{name}.c").write_text(source)
    cflags = "-g -O0 -fno-omit-frame-pointer"
    if library:
        output = f"{name}.so.1"
        padding = f"head -c {PADDING_MIB << 20} /dev/urandom > padding.bin"
        build = (
            f"gcc {cflags} -fPIC -shared -Wl,-soname,{output} -o {output} {name}.c\n"
            f"{padding}\n"
            f"objcopy --add-section .bench_padding=padding.bin"
            f" --set-section-flags .bench_padding=readonly {output}"
        )
        installed = f"{LIBDIR}/{output}"
        requires = ""
    else:
        output = name
        links = " ".join(f"-l:{library_name(n)}.so.1" for n in range(LIBRARIES))
        build = f"gcc {cflags} -o {output} {name}.c -L{work / 'link'} {links} -Wl,-rpath,{LIBDIR}"
        installed = f"/usr/bin/{output}"
        requires = "AutoReq: no"
    spec = top / f"{name}.spec"
    spec.write_text(
        SPEC.format(
            name=name,
            version=version,
            requires=requires,
            source=sources,
            build=build,
            install=f"install -D -m 0755 {output} %{{buildroot}}{installed}",
            files=installed,
        )
    )
    run(["rpmbuild", "-bb", *define_args({"_topdir": str(top), **DEFINES}), spec])
    for rpm in (top / "RPMS").rglob("*.rpm"):
        shutil.move(rpm, work / "repo" / rpm.name)
    shutil.rmtree(top)


def release_key() -> str:
    settings = [LIBRARIES, FUNCTIONS, FIELDS, PADDING_MIB, CRASHES, RECIPE]
    return digest_of([Path(__file__), json.dumps(settings)])


def build_release(base_image: str, podman: Callable[..., subprocess.CompletedProcess[str]]) -> Path:
    """The cached release folder (repo/, crashes/, manifest.json), built if missing.

    ``podman`` runs the podman CLI (of the bench's private service) with arguments.
    """
    target = cache_root() / f"bench-release-{release_key()}"
    return cached_dir(target, lambda work: _build(work, base_image, podman))


def _build(
    work: Path, base_image: str, podman: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    (work / "repo").mkdir()
    sequence = crash_versions()
    wanted = sorted({(name, v) for versions in sequence for name, v in versions.items()})
    with (
        step(f"rpmbuild {len(wanted)} library packages"),
        ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool,
    ):
        done = pool.map(
            lambda item: build_package(work, item[0], item[1], library_source(*item), True),
            wanted,
        )
        list(done)
    # The program links against the first versions (same sonames in all).
    link = work / "link"
    link.mkdir()
    for n in range(LIBRARIES):
        name = library_name(n)
        (rpm,) = (work / "repo").glob(f"{name}-1-1.*.rpm")
        unpacked = work / "unpacked" / name
        unpacked.mkdir(parents=True)
        run(["sh", "-c", f"rpm2archive - < {rpm} | tar -xzf -"], cwd=unpacked)
        shutil.copy(unpacked / LIBDIR.lstrip("/") / f"{name}.so.1", link)
    with step(f"rpmbuild {PROGRAM}"):
        build_package(work, PROGRAM, 1, program_source(), library=False)
    with step("createrepo"):
        run(["createrepo_c", "--quiet", work / "repo"])
    crashes = []
    for number, versions in enumerate(sequence):
        with step(f"crash {number + 1} of {len(sequence)}"):
            crashes.append(_crash(work, number, versions, base_image, podman))
    shutil.rmtree(work / "link")
    shutil.rmtree(work / "unpacked")
    (work / "manifest.json").write_text(
        json.dumps(
            [
                {
                    "name": c.name,
                    "problem_dir": str(c.problem_dir.relative_to(work)),
                    "core": str(c.core.relative_to(work)),
                    "versions": c.versions,
                    "crash_library": c.crash_library,
                }
                for c in crashes
            ],
            indent=1,
        )
    )


def _crash(
    work: Path,
    number: int,
    versions: dict[str, int],
    base_image: str,
    podman: Callable[..., subprocess.CompletedProcess[str]],
) -> BenchCrash:
    """Run the program with this crash's library versions, and keep gdb's gcore."""
    libraries = work / "scratch" / f"libs-{number}"
    libraries.mkdir(parents=True)
    for name, version in versions.items():
        (rpm,) = (work / "repo").glob(f"{name}-{version}-1.*.rpm")
        run(["sh", "-c", f"rpm2archive - < {rpm} | tar -xzf - -C {libraries}"])
    program = work / "scratch" / "program"
    if not program.exists():
        program.mkdir()
        (rpm,) = (work / "repo").glob(f"{PROGRAM}-1-1.*.rpm")
        run(["sh", "-c", f"rpm2archive - < {rpm} | tar -xzf - -C {program}"])
    crash_dir = work / "crashes" / f"crash-{number + 1:02d}"
    out = work / "scratch" / f"out-{number}"
    out.mkdir()
    which = (number * 7) % LIBRARIES
    podman(
        "run", "--rm", "--network", "none",
        "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
        "-v", f"{libraries / LIBDIR.lstrip('/')}:{LIBDIR}:ro",
        "-v", f"{program}/usr/bin/{PROGRAM}:/usr/bin/{PROGRAM}:ro",
        "-v", f"{out}:/out", base_image,
        "gdb", "-batch", "-nx", "-ex", "run", "-ex", "gcore /out/core",
        "--args", f"/usr/bin/{PROGRAM}", str(which),
    )  # fmt: skip
    core = out / "core"
    if not core.is_file():
        raise RuntimeError(f"crash {number + 1} left no core")
    problem_dir = crash_dir / "problem"
    write_problem_dir(problem_dir, core, f"/usr/bin/{PROGRAM}", f"{PROGRAM}-1-1", "x86_64")
    shutil.rmtree(libraries)
    shutil.rmtree(out)
    log(f"crash {number + 1}: in {library_name(which)}")
    return BenchCrash(
        name=crash_dir.name,
        problem_dir=problem_dir,
        core=problem_dir / "coredump",
        versions=versions,
        crash_library=library_name(which),
    )


def load(root: Path) -> BenchRelease:
    entries = json.loads((root / "manifest.json").read_text())
    crashes = [
        BenchCrash(
            name=e["name"],
            problem_dir=root / e["problem_dir"],
            core=root / e["core"],
            versions=e["versions"],
            crash_library=e["crash_library"],
        )
        for e in entries
    ]
    return BenchRelease(root, root / "repo", crashes)
