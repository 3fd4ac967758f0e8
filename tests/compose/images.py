"""The service image, built from the real Containerfile on a locally made base.

No registry is reachable from CI, so the base is a Debian root file system made by
mmdebstrap with the service's package list (``scripts/system-packages list service
debian``) and imported into the host's podman. The Containerfile's package step then
finds everything installed. Containers cannot reach PyPI here (its proxy's CA is
the host's), so pip installs offline from a wheelhouse made on the host and mounted
into the build.

Each layer is cached by a hash of its inputs: the base image and the service image
as podman tags, the wheelhouse under the test cache. A newer key replaces the older
image, so the tags do not pile up.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from testing.cache import cache_root, digest_of
from testing.testos.steps import cached_dir, run, step

REPO = Path(__file__).resolve().parents[2]
BASE_REPOSITORY = "localhost/retracer-test-debian-base"
SERVICE_REPOSITORY = "localhost/retracer-test-service"
# podman here cannot raise rlimits, so RUN steps get explicit ones too.
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
# What the image is built from (see .containerignore).
IMAGE_INPUTS = (
    "Containerfile", ".containerignore", "pyproject.toml", "README.md",
    "scripts/system-packages", "container", "server", "builder", "sync", "images",
)  # fmt: skip


def service_image() -> str:
    """The service image for the current sources: built (about a minute cold) or cached."""
    with _locked():
        base = base_image()
        wheelhouse = _wheelhouse()
        sources = [part for p in _source_files() for part in (str(p.relative_to(REPO)), p)]
        key = digest_of([_image_id(base), wheelhouse.name, *sources])
        reference = f"{SERVICE_REPOSITORY}:{key}"
        if not _exists(reference):
            with step(f"podman build {reference}"):
                run([
                    "podman", "build", "--format", "docker", "--layers=false", *ULIMITS,
                    "--volume", f"{wheelhouse}:/wheelhouse:ro",
                    "--build-arg", f"BASE_IMAGE={base}",
                    "--build-arg", "PIP_INSTALL_OPTIONS=--no-index --find-links /wheelhouse",
                    "--tag", reference, "--file", str(REPO / "Containerfile"), str(REPO),
                ])  # fmt: skip
            _remove_other_tags(SERVICE_REPOSITORY, keep=reference)
        return reference


def base_image() -> str:
    """A Debian image with the service's system packages (about a minute cold)."""
    args = _mmdebstrap_args(Path("rootfs.tar"))
    reference = f"{BASE_REPOSITORY}:{digest_of(args)}"
    if _exists(reference):
        return reference
    with (
        tempfile.TemporaryDirectory(prefix="retracer-base-") as work,
        step(f"mmdebstrap and import {reference}"),
    ):
        rootfs = Path(work) / "rootfs.tar"
        run(_mmdebstrap_args(rootfs))
        run(["podman", "import", "--change", 'CMD ["/bin/bash"]', str(rootfs), reference])
    _remove_other_tags(BASE_REPOSITORY, keep=reference)
    return reference


def service_packages() -> list[str]:
    listed = run([REPO / "scripts/system-packages", "list", "service", "debian"])
    return listed.stdout.split()


def _mmdebstrap_args(target: Path) -> list[str]:
    return [
        "mmdebstrap", "--variant=apt", "--quiet",
        "--include=" + ",".join(service_packages()),
        *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "doc", "locale", "info")),
        "bookworm", str(target),
    ]  # fmt: skip


def _wheelhouse() -> Path:
    """Wheels of the project's dependencies (and its build backend), made on the host."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = [
        *project["project"]["dependencies"],
        *project["build-system"]["requires"],
        "wheel",
    ]
    # The wheels are for this interpreter, which is the base's python3 (Debian 12's).
    key = digest_of([sys.version, *requirements])

    def build(work: Path) -> None:
        with step("pip wheel the dependencies"):
            run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", work,
                 *requirements])  # fmt: skip

    return cached_dir(cache_root() / "compose" / f"wheelhouse-{key}", build)


def _source_files() -> Iterator[Path]:
    for name in IMAGE_INPUTS:
        path = REPO / name
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(
                p for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            )  # fmt: skip


def _exists(reference: str) -> bool:
    result = subprocess.run(["podman", "image", "exists", reference], check=False)
    return result.returncode == 0


def _image_id(reference: str) -> str:
    return run(["podman", "image", "inspect", "--format", "{{.Id}}", reference]).stdout.strip()


def _remove_other_tags(repository: str, keep: str) -> None:
    for tag in _tags(repository):
        if tag != keep:
            subprocess.run(["podman", "rmi", tag], capture_output=True, check=False)


def _tags(repository: str) -> Iterable[str]:
    listed = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", repository])
    return [line for line in listed.stdout.split() if line.startswith(f"{repository}:")]


@contextmanager
def _locked() -> Iterator[None]:
    """One build at a time, also across concurrent test runs."""
    lock = cache_root() / "compose" / "build.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
