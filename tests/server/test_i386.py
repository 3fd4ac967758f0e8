"""A 32-bit crash through the server: one server serving testos-1-x86_64 and testos-1-i386.

Real ABRT clients on an i686 machine name the release ``testos-1-i386`` (ABRT folds
i686 and i586 into i386) and send ``X-Package-Arch: i686`` (``uname -m``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from retracer.server.config import config_from_mapping
from testing.podman_service import PodmanService
from testing.server.live import ServeFactory, ThreadServer, retrace_settings, settings_mapping
from testing.testos import Testos
from tests.server.client import create_task, get, upload, wait_finished

pytestmark = pytest.mark.analyzer


def serve_releases(
    serve_process: ServeFactory, tmp_path: Path, podman: PodmanService, *releases: Testos
) -> str:
    configs = [release.release_config() for release in releases]
    return serve_process(retrace_settings(tmp_path, podman.url, *configs)).start()


@pytest.fixture(scope="module")
def both_releases(
    tmp_path_factory: pytest.TempPathFactory, testos: Testos, testos_i386: Testos
) -> Iterator[str]:
    """The app in this process on a real socket, serving both releases: /settings and
    /checkpackage need neither a worker nor podman, so one server answers them all."""
    url, server = in_process(tmp_path_factory.mktemp("both"), testos, testos_i386)
    yield url
    server.stop()


def in_process(folder: Path, *releases: Testos) -> tuple[str, ThreadServer]:
    data = {**settings_mapping(folder), "releases": [r.release_config() for r in releases]}
    server = ThreadServer(config_from_mapping(data, folder))
    return server.start().url, server


def test_settings_list_both_releases(both_releases: str) -> None:
    lines = requests.get(f"{both_releases}/settings", timeout=30).text.split("\n")

    (supported,) = [line for line in lines if line.startswith("supported_releases ")]
    assert supported.split(" ")[1:] == ["testos-1-x86_64", "testos-1-i386"]


@pytest.mark.parametrize(
    ("arch", "release", "code"),
    [
        ("i686", "testos-1-i386", 302),  # what a client on an i686 machine sends
        ("i686", None, 302),
        ("i386", "testos-1-i386", 302),
        ("x86_64", "testos-1-i386", 404),  # the i386 release has no x86_64 build
        ("i686", "testos-1-x86_64", 404),  # nor the x86_64 release an i686 one
    ],
)
def test_checkpackage_finds_the_i686_build(
    both_releases: str, arch: str, release: str | None, code: int
) -> None:
    headers = {"X-Package-NVR": "libcrash-2.0-1", "X-Package-Arch": arch}
    if release:
        headers["X-OS-Release"] = release
    response = requests.get(
        f"{both_releases}/checkpackage", headers=headers, allow_redirects=False, timeout=60
    )
    assert response.status_code == code, response.text
    assert "Location" not in response.headers


def test_32_bit_crash_is_retraced_with_the_old_i686_packages(
    serve_process: ServeFactory,
    tmp_path: Path,
    podman_service: PodmanService,
    testos: Testos,
    testos_i386: Testos,
) -> None:
    crash = testos_i386.crashes["crasher"]
    url = serve_releases(serve_process, tmp_path, podman_service, testos, testos_i386)
    task_id, password = create_task(url, crash.archive)
    status, password = wait_finished(url, task_id, password, timeout=600)
    assert status == "FINISHED_SUCCESS"

    backtrace = get(url, f"/{task_id}/backtrace", password)
    assert crash.crash_function in backtrace.text
    assert crash.crash_site in backtrace.text
    assert crash.newer_function not in backtrace.text
    assert "eip" in backtrace.text  # the registers of a 32-bit thread
    # Every response carries the password for the next request.
    report = get(url, f"/{task_id}/backtrace.json", backtrace.headers["X-Task-Password"])
    data = json.loads(report.text)
    assert data["release"] == "testos-1-i386"
    assert {"crasher-1.0-1.i686", "libcrash-debuginfo-2.0-1.i686"} <= set(data["packages"])
    assert all(nevra.endswith(".i686") for nevra in data["packages"])
    log = get(url, f"/{task_id}/log", report.headers["X-Task-Password"]).text
    assert "testos-1-i386" in log


def test_32_bit_crash_on_a_server_without_an_i386_release_is_an_unknown_release(
    tmp_path: Path, testos: Testos, testos_i386: Testos
) -> None:
    """The crash is checked at /create, before a task exists: a 403 with the sentence."""
    url, server = in_process(tmp_path, testos)
    try:
        response = upload(url, testos_i386.crashes["crasher"].archive.read_bytes())
    finally:
        server.stop()
    assert response.status_code == 403
    assert response.text == (
        "Unknown release 'testos-1-i386'; this server supports: testos-1-x86_64.\n"
    )
