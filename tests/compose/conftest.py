"""Fixtures of the compose tests: the service image and a running stack."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from testing.podman_service import PodmanService
from testing.testos import Testos
from tests.compose import images
from tests.compose.stack import HostPodmanLauncher, Stack


@pytest.fixture(scope="session")
def service_image() -> str:
    """The image of ./Containerfile on the local Debian base, cached by its inputs."""
    return images.service_image()


@pytest.fixture(scope="module")
def host_podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    launcher = HostPodmanLauncher(tmp_path_factory.mktemp("host-podman"))
    service = launcher.start()
    try:
        yield service
    finally:
        launcher.stop()


@pytest.fixture(scope="module")
def stack(
    service_image: str,
    host_podman: PodmanService,
    testos: Testos,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """compose.yaml up, healthy and synced with the demo release; removed afterwards."""
    stack = Stack.prepare(
        tmp_path_factory.mktemp("stack"),
        image=service_image,
        podman_socket=host_podman.socket,
        demo_repo=testos.repo,
        project=f"retracer-test-{secrets.token_hex(4)}",
    )
    try:
        stack.up()
        stack.wait_healthy()
        stack.wait_synced(testos.crashes["crasher"].package)
        yield stack
    finally:
        stack.compose("down", check=False)
        stack.remove_everything()
