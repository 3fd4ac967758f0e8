"""Analyzer fixtures: one Analyzer per session over the testos release and private podman."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from retracer.builder.model import RetraceResult, Stage
from retracer.builder.retrace import Analyzer
from retracer.server.config import Config, config_from_mapping
from testing.podman_service import PodmanService
from testing.testos import Testos


class RecordingObserver:
    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self.lines: list[str] = []

    def stage(self, stage: Stage) -> None:
        self.stages.append(stage)

    def log(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture(scope="session")
def retrace_config(
    testos: Testos, podman_service: PodmanService, tmp_path_factory: pytest.TempPathFactory
) -> Config:
    root = tmp_path_factory.mktemp("analyzer")
    return config_from_mapping(
        {
            "data_dir": str(root / "data"),
            "builder": {
                "podman_url": podman_service.url,
                "limits": {"gdb_timeout_seconds": 120, "memory_mib": 1024},
            },
            "releases": [testos.release_config()],
        },
        root,
    )


@pytest.fixture(scope="session")
def analyzer(retrace_config: Config) -> Iterator[Analyzer]:
    with Analyzer(
        retrace_config.builder, retrace_config.releases, retrace_config.data_dir / "builder"
    ) as analyzer:
        yield analyzer


@pytest.fixture(scope="session")
def retraced(analyzer: Analyzer, testos: Testos) -> Callable[[str], RetraceResult]:
    """Retrace a fixture crash once per session and share the result between tests."""
    results: dict[str, RetraceResult] = {}

    def get(name: str) -> RetraceResult:
        if name not in results:
            results[name] = analyzer.retrace(testos.crashes[name].problem_dir)
        return results[name]

    return get


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test that used podman fails if it left a retracer container behind.

    Checked in the test's own call phase (so it fails as the test, not as a
    teardown error of a fixture), and only where the private podman service ran:
    pure tests pay nothing.
    """
    result = yield
    service = getattr(item, "funcargs", {}).get("podman_service")
    if isinstance(service, PodmanService):
        names = service.cli("ps", "--all", "--format", "{{.Names}}").stdout.split()
        left = [n for n in names if n.startswith("retracer-")]
        assert left == [], f"containers left behind: {left}"
    return result


@pytest.fixture
def problem_copy(tmp_path: Path, testos: Testos) -> Callable[[str], Path]:
    """A writable copy of a fixture crash's problem directory, to damage in a test."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        for member in testos.crashes[name].problem_dir.iterdir():
            (target / member.name).write_bytes(member.read_bytes())
        return target

    return copy
