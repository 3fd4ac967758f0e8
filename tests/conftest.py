"""Fixtures shared by every test area.

- ``podman_service``: a private ``podman system service`` (own storage root, own socket).
- ``testos``: the synthetic "testos 1" release with real crashes, built once and cached.
- ``testos_i386``: its 32-bit twin ``testos-1-i386`` (i686 packages), built and cached alike.
- ``config_factory``: a validated Config whose data lives under the test's tmp_path.
- ``postgres``: a private PostgreSQL cluster (``new_database()`` gives each test its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from retracer.server.config import Config, config_from_mapping
from testing.podman_service import PodmanLauncher, PodmanService
from testing.postgres_service import PostgresCluster
from testing.testos.fixture import testos, testos_i386  # noqa: F401  (session fixtures)


@pytest.fixture(scope="session")
def podman_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    launcher = PodmanLauncher(tmp_path_factory.mktemp("podman"))
    service = launcher.start()
    try:
        yield service
    finally:
        launcher.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., Config]:
    """Build a Config from a mapping; ``data_dir`` defaults to a fresh temporary folder."""

    def make(data: dict[str, Any] | None = None) -> Config:
        merged = {"data_dir": str(tmp_path / "data"), **(data or {})}
        return config_from_mapping(merged, tmp_path)

    return make
