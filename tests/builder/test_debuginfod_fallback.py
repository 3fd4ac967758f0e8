"""debuginfod as a fallback source of debuginfo for a real retrace.

testos leaves libquiet's -debuginfo and -debugsource packages out of its repository.
Here a second retracer, whose repository holds them, acts as the upstream debuginfod
server; a server that accepts connections and never answers is listed before it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from retracer.builder.debuginfod import DebuginfodClient
from retracer.builder.retrace import Analyzer
from retracer.server.config import Config, config_from_mapping
from retracer.sync.repodata import publish
from testing.server.live import ThreadServer
from testing.testos import Testos
from testing.testos.build import layers_dir
from testing.testos.rpms import DEBUGINFO_WITHHELD, build_app_rpms
from testing.testos.target import X86_64
from tests.builder.conftest import RecordingObserver

STALLED_TIMEOUT_SECONDS = 3.0


@pytest.fixture(scope="module")
def upstream(testos: Testos, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second retracer serving a repository of the withheld debug packages."""
    root = tmp_path_factory.mktemp("upstream")
    repository = root / "repo" / "Packages"
    repository.mkdir(parents=True)
    apps = build_app_rpms(layers_dir(), X86_64)
    for name in DEBUGINFO_WITHHELD:
        for rpm in apps.glob(f"{name}-debug*-*.rpm"):  # -debuginfo and -debugsource
            os.link(rpm, repository / rpm.name)
    publish(repository.parent, root)
    release = {**testos.release_config(), "repositories": [str(repository.parent)]}
    config = config_from_mapping({"data_dir": str(root / "data"), "releases": [release]}, root)
    server = ThreadServer(config)
    try:
        yield server.start().url
    finally:
        server.stop()


@pytest.fixture
def stalled_listener() -> Iterator[socket.socket]:
    """Accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener


@pytest.fixture
def stalled_server(stalled_listener: socket.socket) -> str:
    return f"http://127.0.0.1:{stalled_listener.getsockname()[1]}"


def connections_waiting(listener: socket.socket) -> int:
    """How many connections reached the listener (none was accepted before)."""
    listener.setblocking(False)
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def test_withheld_debuginfo_comes_from_an_upstream_debuginfod(
    retrace_config: Config, testos: Testos, upstream: str, stalled_server: str
) -> None:
    settings = dataclasses.replace(
        retrace_config.builder,
        debuginfod_urls=(stalled_server, upstream),
        debuginfod_timeout_seconds=STALLED_TIMEOUT_SECONDS,
    )
    observer = RecordingObserver()
    with Analyzer(settings, retrace_config.releases, retrace_config.data_dir / "builder") as a:
        result = a.retrace(testos.crashes["quietcrash"].problem_dir, observer)

    report = result.report.to_json()
    sources = report["debuginfo_sources"]
    (quiet,) = [path for path in sources if "libquiet" in path]
    assert sources[quiet] == f"debuginfod {upstream}"
    assert quiet not in {m["path"] for m in report["missing_debuginfo"]}
    crashed = next(t for t in report["threads"] if t["crashed"])
    quiet_frames = [f for f in crashed["frames"] if f["module"] == quiet]
    assert quiet_frames and all(f["file"] and f["line"] for f in quiet_frames)
    assert f"debuginfo for module {quiet} from debuginfod {upstream}" in observer.lines
    failures = [line for line in observer.lines if line.startswith("debuginfod server")]
    assert failures == [
        f"debuginfod server {stalled_server} failed (timed out); "
        "it is not asked again during this retrace"
    ]


def test_a_failing_server_costs_its_timeout_once(
    testos: Testos,
    upstream: str,
    stalled_server: str,
    stalled_listener: socket.socket,
    tmp_path: Path,
) -> None:
    wanted = [debug_build_id(f"libquiet-debuginfo-{v}-1") for v in ("1.0", "1.1")]
    unknown = "00" * 20
    lines: list[str] = []
    client = DebuginfodClient(
        [stalled_server, upstream], tmp_path, STALLED_TIMEOUT_SECONDS, 1 << 30, lines.append
    )
    fetched = client.fetch([unknown, *wanted])
    assert sorted(fetched) == sorted(wanted)
    assert all(f.server == upstream and f.fresh for f in fetched.values())
    # It gave up on the stalled server for its timeout, after asking it once, not once
    # per build-id (the time that costs is a bench/ matter).
    assert lines == [
        f"debuginfod server {stalled_server} failed (timed out); "
        "it is not asked again during this retrace"
    ]
    assert connections_waiting(stalled_listener) == 1
    for build_id, found in fetched.items():
        assert found.path == tmp_path / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
        assert found.path.read_bytes()[:4] == b"\x7fELF"
    again = DebuginfodClient([stalled_server], tmp_path, 30.0, 1 << 30, lines.append)
    assert {b: f.fresh for b, f in again.fetch(wanted).items()} == dict.fromkeys(wanted, False)
    assert len(lines) == 1  # answered from the cache: the stalled server was not asked


def test_files_over_the_size_cap_are_refused(upstream: str, tmp_path: Path) -> None:
    build_id = debug_build_id("libquiet-debuginfo-1.0-1")
    head = requests.head(f"{upstream}/buildid/{build_id}/debuginfo", timeout=30)
    size = int(head.headers["Content-Length"])
    lines: list[str] = []
    client = DebuginfodClient([upstream], tmp_path, 30.0, 100, lines.append)
    assert client.fetch([build_id]) == {}
    assert lines == [
        f"debuginfod server {upstream} failed (a file of "
        f"{size} bytes is over the size cap); "
        "it is not asked again during this retrace"
    ]
    assert not list(tmp_path.rglob("*.debug"))


def debug_build_id(nevr: str) -> str:
    (rpm_file,) = build_app_rpms(layers_dir(), X86_64).glob(f"{nevr}.x86_64.rpm")
    listing = subprocess.run(
        ["rpm", "-qlp", "--nosignature", str(rpm_file)], capture_output=True, text=True, check=True
    ).stdout.split()
    for path in listing:
        if found := re.match(r"^/usr/lib/debug/\.build-id/(..)/(.+)\.debug$", path):
            return found[1] + found[2]
    raise LookupError(f"{nevr} has no build-id link")
