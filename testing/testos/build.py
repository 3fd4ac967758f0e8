"""Build testos layer by layer, each cached under its own input hash.

    rootfs-<key>   mmdebstrap output              (about 40 s)
    base-<key>     testos-base RPM                (about 20 s)
    apps-<key>     application RPMs + debuginfo   (a few seconds)
    release-<key>  repo/, crashes/, manifest.json (dnf, podman: about 30 s)

The 32-bit twin (testos-1-i386) has the same layers, named ``rootfs-i686-<key>`` and
so on; it is built only when asked for. ``<cache_root>/demo`` points at the newest
x86_64 release, for scripts/demo and the server's default configuration.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testing.cache import cache_root, digest_of
from testing.podman_service import PodmanLauncher, remove_retracer_images
from testing.testos import crashes, model, osrelease, problem, repo
from testing.testos.base import base_key, build_base_rpm
from testing.testos.crashes import crash_programs, crash_site, install_user_root, programs_for
from testing.testos.model import Crash, Testos
from testing.testos.repo import make_repository
from testing.testos.rootfs import rootfs_key
from testing.testos.rpms import DEBUGINFO_WITHHELD, apps_key, build_app_rpms
from testing.testos.steps import cached_dir, log, step
from testing.testos.target import TARGETS, X86_64, Target

DEMO_LINK = "demo"


def layers_dir() -> Path:
    return cache_root() / "testos"


def release_dir(target: Target = X86_64) -> Path:
    modules = (crashes, model, osrelease, problem, repo)
    key = digest_of(
        [base_key(target), apps_key(target), *(Path(m.__file__ or "") for m in modules)]
    )
    return layers_dir() / target.layer("release", key)


def is_cached(target: Target = X86_64) -> bool:
    """True when ``build_testos`` would only read the cache (no podman needed)."""
    return (release_dir(target) / model.MANIFEST).is_file()


def build_testos(podman_url: str | None = None, target: Target = X86_64) -> Testos:
    """The cached testos release for ``target``, built first if needed (minutes cold).

    ``podman_url`` is the test podman service to crash the programs in; without
    one, a private service is started (on the tests' storage) when it is needed.
    """
    # Keys are taken once, so sources edited during a build can't make it prune itself.
    current = known_layer_names()
    release = release_dir(target)
    with step(f"testos release {target.release_id}"), build_lock(layers_dir()):
        cached_dir(release, lambda work: build_release(work, podman_url, target))
        if target == X86_64:
            point_demo_link_at(release)
        prune_stale_layers(current)
    log(f"testos release at {release}")
    return model.load(release, target.release_id)


def build_release(work: Path, podman_url: str | None, target: Target) -> None:
    layers = layers_dir()
    rpms = [
        *build_base_rpm(layers, target).glob("*.rpm"),
        *build_app_rpms(layers, target).glob("*.rpm"),
    ]
    make_repository(work / "repo", rpms, DEBUGINFO_WITHHELD)
    scratch = work / "scratch"
    scratch.mkdir()
    user_root = scratch / "root"
    installed = install_user_root(user_root, work / "repo", scratch, target)
    tag = work.name.rsplit("-", 1)[-1].lower()  # unique per build attempt
    # New builds of the same NEVRAs: retracer's images of the old ones are stale.
    remove_retracer_images()
    with podman(podman_url) as url:
        cores = crash_programs(url, user_root, tag, scratch / "cores", scratch, target)
    found: dict[str, Crash] = {}
    for program in programs_for(target):
        crash_dir = work / "crashes" / program.name
        problem_dir = crash_dir / "problem"
        archive = crash_dir / f"{program.name}.tar.xz"
        problem.write_problem_dir(
            problem_dir, cores[program.name], program.executable, program.nvr, target.machine
        )
        problem.write_archive(problem_dir, archive)
        found[program.name] = Crash(
            name=program.name,
            problem_dir=problem_dir,
            archive=archive,
            executable=program.executable,
            package=program.nvr,
            installed=installed,
            crash_function=program.crash_function,
            crash_site=crash_site(program.crash_source),
            newer_function=program.newer_function,
            newer_crash_site=crash_site(program.newer_source),
        )
    shutil.rmtree(scratch)
    model.save(
        Testos(
            root=work,
            repo=work / "repo",
            release_id=target.release_id,
            os_release=osrelease.SYSTEM_RELEASE,
            crashes=found,
        )
    )


def current_layer_names(target: Target) -> tuple[str, ...]:
    """The cache entries the current sources map to for ``target``, the release last."""
    return (
        target.layer("rootfs", rootfs_key(target)),
        target.layer("base", base_key(target)),
        target.layer("apps", apps_key(target)),
        release_dir(target).name,
    )


def known_layer_names() -> set[str]:
    """The current layers of every target: building one release must keep the other's."""
    return {name for target in TARGETS for name in current_layer_names(target)}


def prune_stale_layers(current: set[str]) -> None:
    """Remove layers of older inputs and leftovers of interrupted builds (under the lock)."""
    for entry in layers_dir().iterdir():
        if entry.is_dir() and entry.name not in current:
            log(f"removing stale layer {entry.name}")
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def podman(url: str | None) -> Iterator[str]:
    """The given service, or a private one for the duration of the build."""
    if url is not None:
        yield url
        return
    socket_dir = Path(tempfile.mkdtemp(prefix="retracer-testos-podman-"))
    launcher = PodmanLauncher(socket_dir)
    try:
        yield launcher.start().url
    finally:
        launcher.stop()
        if launcher.process is not None and launcher.process.stderr is not None:
            launcher.process.stderr.close()  # stop() leaves the pipe open
        shutil.rmtree(socket_dir, ignore_errors=True)


@contextmanager
def build_lock(layers: Path) -> Iterator[None]:
    """One build at a time across processes (tests and scripts/demo may race)."""
    layers.mkdir(parents=True, exist_ok=True)
    with (layers / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def point_demo_link_at(release: Path) -> None:
    """Atomically repoint ``<cache_root>/demo`` (a relative symlink) at ``release``."""
    link = cache_root() / DEMO_LINK
    target = os.path.relpath(release, link.parent)
    if link.is_symlink() and os.readlink(link) == target:
        return
    temporary = link.with_name(f".{DEMO_LINK}-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    os.replace(temporary, link)
