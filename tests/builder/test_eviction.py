"""Cache eviction keeps environments in use by a container or picked a moment ago."""

from __future__ import annotations

import io
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from retracer.builder.environment import Environments
from retracer.builder.sandbox import Sandbox
from retracer.builder.settings import BuilderSettings
from testing.podman_service import PodmanService

PREFIX = "retracer-evictiontest"


def tiny_image(service: PodmanService, folder: Path, name: str) -> str:
    """A distinct one-file image (its own id), imported from a tarball."""
    archive = folder / f"{name}.tar"
    with tarfile.open(archive, "w") as tar:
        data = name.encode()
        member = tarfile.TarInfo(name)
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    reference = f"localhost/{PREFIX}-env:{name}"
    service.cli("import", str(archive), reference)
    return reference


@pytest.fixture
def images(podman_service: PodmanService, tmp_path: Path) -> Iterator[tuple[str, str]]:
    images = (
        tiny_image(podman_service, tmp_path, "used"),
        tiny_image(podman_service, tmp_path, "idle"),
    )
    yield images[0], images[1]
    podman_service.cli("rm", "--force", f"{PREFIX}-holder", check=False)
    for image in images:
        podman_service.cli("rmi", "--force", image, check=False)


def test_eviction_keeps_an_image_a_container_uses(
    podman_service: PodmanService, tmp_path: Path, images: tuple[str, str]
) -> None:
    used, idle = images
    # Another worker's gdb container, created from the older environment.
    podman_service.cli("create", "--name", f"{PREFIX}-holder", used, "/gdb")
    settings = BuilderSettings(podman_url=podman_service.url, image_cache_max_mib=0)
    try:
        with Sandbox(settings) as sandbox:
            environments = Environments(sandbox, settings, tmp_path / "images")
            long_ago = time.time() - 86400
            with closing(sqlite3.connect(tmp_path / "images" / "environments.sqlite")) as db:
                db.executemany(
                    "INSERT INTO environment VALUES (?, 'testos-1-x86_64', 1048576, ?)",
                    [(used, long_ago), (idle, long_ago + 1)],
                )
                db.commit()

            assert environments.evict() == [idle]
            assert sandbox.image_exists(used)
            assert not sandbox.image_exists(idle)
    finally:
        # The holder is this test's own; the check for left-over containers follows.
        podman_service.cli("rm", "--force", f"{PREFIX}-holder", check=False)


def test_eviction_keeps_an_image_picked_a_moment_ago(
    podman_service: PodmanService, tmp_path: Path, images: tuple[str, str]
) -> None:
    used, idle = images
    settings = BuilderSettings(podman_url=podman_service.url, image_cache_max_mib=0)
    with Sandbox(settings) as sandbox:
        environments = Environments(sandbox, settings, tmp_path / "images")
        now = time.time()
        with closing(sqlite3.connect(tmp_path / "images" / "environments.sqlite")) as db:
            db.executemany(
                "INSERT INTO environment VALUES (?, 'testos-1-x86_64', 1048576, ?)",
                [(idle, now - 86400), (used, now - 1)],
            )
            db.commit()

        assert environments.evict(now=now) == [idle]
        assert sandbox.image_exists(used)
