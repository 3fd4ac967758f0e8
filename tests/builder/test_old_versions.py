"""The seed's promise: a crash stays retraceable after upstream drops its packages."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from retracer.builder.retrace import Analyzer
from retracer.builder.sandbox import Sandbox
from retracer.server.config import Config
from retracer.sync.mirror import sync_release
from retracer.sync.settings import ReleaseSettings, SyncSettings, Upstream
from testing.sync.served import UpstreamRepository, UpstreamServer
from testing.testos import Testos

OLD_VERSIONS = (
    "crasher-1.0-1",
    "crasher-debuginfo-1.0-1",
    "libcrash-2.0-1",
    "libcrash-debuginfo-2.0-1",
)


@pytest.fixture
def upstream(testos: Testos, tmp_path: Path) -> Iterator[tuple[UpstreamRepository, str]]:
    repository = UpstreamRepository(tmp_path / "upstream")
    repository.add(sorted((testos.repo / "Packages").rglob("*.rpm")))
    repository.refresh()
    server = UpstreamServer(repository.root).start()
    try:
        yield repository, server.url
    finally:
        server.stop()


def test_crash_is_retraced_with_v1_after_upstream_dropped_v1(
    testos: Testos,
    retrace_config: Config,
    upstream: tuple[UpstreamRepository, str],
    tmp_path: Path,
) -> None:
    repository, url = upstream
    release = ReleaseSettings(
        **{
            **testos.release_config(),
            "repositories": (tmp_path / "local",),
            "bootstrap": retrace_config.releases[0].bootstrap,
            "upstreams": (Upstream("updates", baseurl=(url,)),),
            "insecure": True,  # unsigned test packages
        }
    )
    assert sync_release(release, SyncSettings()).ok
    for nvr in OLD_VERSIONS:
        repository.remove(f"{nvr}.x86_64.rpm")
    repository.refresh()
    assert sync_release(release, SyncSettings()).ok

    # A prefix of its own, so the base and the environment are built from the synced
    # repository here rather than found in the cache of other tests.
    settings = dataclasses.replace(retrace_config.builder, name_prefix="retracer-e2e")
    try:
        with Analyzer(settings, [release], tmp_path / "state") as analyzer:
            result = analyzer.retrace(testos.crashes["crasher"].problem_dir)
    finally:
        with Sandbox(settings) as sandbox:
            for image in sandbox.images():
                sandbox.remove_image(image)

    crash = testos.crashes["crasher"]
    assert not result.environment_cached
    (crashed,) = [t for t in result.report.to_json()["threads"] if t["crashed"]]
    assert crashed["frames"][0]["function"] == crash.crash_function
    assert {f"{nvr}.x86_64" for nvr in OLD_VERSIONS} <= {
        p.nevra for p in result.package_set.packages
    }
