"""Fixtures for the sync tests: real RPMs, an upstream served over loopback HTTP, and
release settings whose local repository lives under the test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from retracer.sync.settings import ReleaseSettings, SyncSettings, Upstream
from testing.sync.rpms import build_rpms
from testing.sync.served import UpstreamRepository, UpstreamServer

RELEASE_ID = "testos-1-x86_64"


@pytest.fixture(scope="session")
def hello_v1() -> Path:
    (rpm_file,) = build_rpms("hello", "1.0")
    return rpm_file


@pytest.fixture(scope="session")
def hello_v2() -> Path:
    (rpm_file,) = build_rpms("hello", "2.0")
    return rpm_file


@pytest.fixture(scope="session")
def bundle() -> list[Path]:
    """Six small packages from one build: ``bundle`` and ``bundle-1`` ... ``bundle-5``."""
    return build_rpms("bundle", "1.0", subpackages=5)


@pytest.fixture
def upstream(tmp_path: Path) -> UpstreamRepository:
    return UpstreamRepository(tmp_path / "upstream")


@pytest.fixture
def server(upstream: UpstreamRepository) -> Iterator[UpstreamServer]:
    served = UpstreamServer(upstream.root).start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def local_repo(tmp_path: Path) -> Path:
    return tmp_path / "local"


@pytest.fixture
def release_for(local_repo: Path) -> Callable[..., ReleaseSettings]:
    """Release settings mirroring the given upstreams into ``local_repo``."""

    def make(*upstreams: Upstream) -> ReleaseSettings:
        return ReleaseSettings(
            id=RELEASE_ID,
            os_release="TestOS release 1",
            repositories=(local_repo,),
            base_image="localhost/testos:1",
            upstreams=upstreams,
            # Tests about signatures give keys; the others sync unsigned test packages.
            insecure=not all(u.gpgkey for u in upstreams),
        )

    return make


@pytest.fixture
def settings() -> SyncSettings:
    return SyncSettings(parallel_downloads=3, timeout_seconds=5.0)
