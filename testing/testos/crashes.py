"""Crash the old program versions on a simulated user's machine and keep the cores.

The user's machine is a root bootstrapped from the testos repository with host dnf,
imported into the test podman service; each program runs in its own container with
a bind-mounted working directory, where the kernel writes the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from podman import PodmanClient

from testing.podman_service import ULIMITS
from testing.testos import osrelease
from testing.testos.rpms import RELEASE, SOURCES
from testing.testos.steps import log, run, step
from testing.testos.target import Target

IMAGE_PREFIX = "retracer-test-"
# Where the program runs in its container; the core lands here.
CRASH_DIR = "/crash"
CRASH_TIMEOUT_SECONDS = 60
# "unlimited" for the API, which takes rlimits as unsigned 64-bit numbers.
RLIM_INFINITY = 2**64 - 1


@dataclass(frozen=True)
class CrashProgram:
    """A program of the user's machine and where, in which source, it fails."""

    name: str  # the crash's name; also its package name unless ``package`` says
    version: str  # the old version the user runs
    executable: str
    crash_source: str  # the sources (<name>-<version>) with the faulting line
    crash_function: str
    newer_source: str  # the same place in the newer version
    newer_function: str
    package: str | None = None
    arguments: str = ""  # on the command line, after the executable

    @property
    def nvr(self) -> str:
        return f"{self.package or self.name}-{self.version}-{RELEASE}"


# The exploitable classes of the ``exploits`` program (its first argument).
EXPLOIT_CLASSES = ("write", "jump", "nullread", "assert", "stackguard", "heap", "illegal", "fpe")


PROGRAMS = (
    CrashProgram(
        "crasher", "1.0", "/usr/bin/crasher",
        "libcrash-2.0", "crash_v20_walk_list", "libcrash-2.1", "crash_v21_traverse_nodes",
    ),
    CrashProgram(
        "threadcrash", "1.0", "/usr/bin/threadcrash",
        "threadcrash-1.0", "threadcrash_v10_faulter",
        "threadcrash-1.1", "threadcrash_v11_segfaulter",
    ),
    CrashProgram(
        "cxxabort", "1.0", "/usr/bin/cxxabort",
        "cxxabort-1.0", "cxxabort::v10_validate_config",
        "cxxabort-1.1", "cxxabort::ConfigChecker::v11_check_level",
    ),
    CrashProgram(
        "quietcrash", "1.0", "/usr/bin/quietcrash",
        "quietcrash-1.0", "quietcrash_v10_on_item", "quietcrash-1.1", "quietcrash_v11_accumulate",
    ),
    # Its thread name, locals and abort message hold <script>, javascript: and escapes.
    CrashProgram(
        "hostile", "1.0", "/usr/bin/hostile",
        "hostile-1.0", "hostile_v10_render", "hostile-1.1", "hostile_v11_draw",
    ),
    # Fedora-shaped debuginfo: the program (shapes-tools) crashes in its library
    # (shapes-libs); each has its own -debuginfo, and the types both use are in the
    # dwz multifile of shapes-debuginfo. shapes-tools requires its own version's libs.
    CrashProgram(
        "shapes", "1.0", "/usr/bin/shapes",
        "shapes-1.0", "shapes_v10_paint_shape", "shapes-1.1", "shapes_v11_paint_shape",
        package="shapes-tools",
    ),
    *(
        CrashProgram(
            f"exploit-{kind}", "1.0", "/usr/bin/exploits",
            "exploits-1.0", f"exploits_{kind}", "exploits-1.0", f"exploits_{kind}_newer",
            package="exploits", arguments=kind,
        )
        for kind in EXPLOIT_CLASSES
    ),
)  # fmt: skip
# The user's machine: the base system and the OLD version of every package.
USER_PACKAGES = (
    "testos-base",
    *(f"{nv}-{RELEASE}" for nv in ("libcrash-2.0", "libquiet-1.0")),
    *dict.fromkeys(program.nvr for program in PROGRAMS),
)


def programs_for(target: Target) -> tuple[CrashProgram, ...]:
    return tuple(program for program in PROGRAMS if target.builds(program.name))


def user_packages(target: Target) -> tuple[str, ...]:
    """USER_PACKAGES that are built for ``target``."""
    return tuple(
        nvr for nvr in USER_PACKAGES if nvr == "testos-base" or target.builds(nvr.rsplit("-", 2)[0])
    )


def crash_site(source: str) -> str:
    """``file:line`` of the line marked ``CRASH HERE`` in ``sources/<source>/``."""
    for file in sorted((SOURCES / source).iterdir()):
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if "CRASH HERE" in line:
                return f"{file.name}:{number}"
    raise LookupError(f"no CRASH HERE marker in {source}")


def install_user_root(
    root: Path, repo: Path, scratch: Path, target: Target, packages: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """Bootstrap a root from ``repo`` with host dnf; return its installed NEVRAs.

    ``packages`` defaults to the user's machine of ``target``.
    """
    config = scratch / "dnf.conf"
    config.write_text("[main]\n")  # dnf refuses --config=/dev/null
    (scratch / "repos.d").mkdir(exist_ok=True)
    with step(f"dnf --installroot {root.name}"):
        run([
            "dnf", f"--installroot={root}", f"--releasever={osrelease.VERSION_ID}",
            f"--forcearch={target.machine}",
            f"--config={config}", f"--setopt=reposdir={scratch / 'repos.d'}",
            f"--setopt=cachedir={scratch / 'dnf-cache'}", "--setopt=install_weak_deps=False",
            f"--repofrompath=testos,{repo}", "--nogpgcheck", "--quiet", "-y",
            "install", *(packages or user_packages(target)),
        ])  # fmt: skip
    query = run(
        ["rpm", f"--root={root}", "-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\n"]
    )
    return tuple(sorted(query.stdout.split()))


def import_image(client: PodmanClient, root: Path, reference: str, scratch: Path) -> None:
    """``podman import`` through the REST API (podman-py has no wrapper for it)."""
    tarball = scratch / "user-root.tar"
    with step(f"podman import {reference}"):
        run(["tar", "-C", root, "--numeric-owner", "-cf", tarball, "."])
        with tarball.open("rb") as stream:
            response = client.api.post(
                "/images/import", params={"reference": reference}, data=stream
            )
        response.raise_for_status()
        tarball.unlink()


def core_goes_to_a_pipe() -> bool:
    """Where cores go to a handler (systemd-coredump, apport), the kernel won't write one."""
    return Path("/proc/sys/kernel/core_pattern").read_text().startswith("|")


def capture_core(
    client: PodmanClient, image: str, program: CrashProgram, workdir: Path, use_gdb: bool, tag: str
) -> Path:
    """Run the program until it crashes and return its core file in ``workdir``."""
    if use_gdb:
        # gdb stops at the fatal signal, and gcore writes what the kernel would have.
        crash = (
            f"gdb -batch -nx -ex run -ex 'gcore {CRASH_DIR}/core'"
            f" --args {program.executable} {program.arguments}"
        )
    else:
        # Not as PID 1: the kernel ignores abort()'s SIGABRT sent to a namespace's init.
        crash = f"{program.executable} {program.arguments}; true"
    container = client.containers.create(
        image=image,
        name=f"{IMAGE_PREFIX}crash-{program.name}-{tag}",
        command=["/bin/sh", "-c", crash],
        working_dir=CRASH_DIR,
        mounts=[{"type": "bind", "source": str(workdir), "target": CRASH_DIR}],
        network_mode="none",
        ulimits=[{"Name": "core", "Soft": RLIM_INFINITY, "Hard": RLIM_INFINITY}, *ULIMITS],
    )
    try:
        container.start()
        container.wait(timeout=CRASH_TIMEOUT_SECONDS)
        output = b"".join(container.logs(stdout=True, stderr=True)).decode(errors="replace")
    finally:
        container.remove(force=True)
    cores = sorted(workdir.glob("core*"))
    if len(cores) != 1:
        raise RuntimeError(f"{program.executable} left {len(cores)} cores; output:\n{output}")
    return cores[0]


def crash_programs(
    podman_url: str, root: Path, tag: str, workdir: Path, scratch: Path, target: Target
) -> dict[str, Path]:
    """Import the user's root as an image, crash every program in it, remove the image."""
    reference = f"{IMAGE_PREFIX}testos-user:{target.machine}-{tag}"
    use_gdb = core_goes_to_a_pipe()
    if use_gdb:
        log("core_pattern is a pipe: taking the cores with gdb's gcore instead")
    cores: dict[str, Path] = {}
    with PodmanClient(base_url=podman_url) as client:
        import_image(client, root, reference, scratch)
        try:
            for program in programs_for(target):
                program_dir = workdir / program.name
                program_dir.mkdir(parents=True)
                with step(f"crash {program.executable}"):
                    cores[program.name] = capture_core(
                        client, reference, program, program_dir, use_gdb, tag
                    )
        finally:
            client.images.remove(reference, force=True)
    return cores
