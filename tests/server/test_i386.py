"""A 32-bit crash through the server: one server serving testos-1-x86_64 and testos-1-i386.

Real ABRT clients on an i686 machine name the release ``testos-1-i386`` (ABRT folds
i686 and i586 into i386) and send ``X-Package-Arch: i686`` (``uname -m``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.podman_service import PodmanService
from tests.server.conftest import settings_mapping
from tests.server.live import ServeProcess
from tests.server.test_full_flow import create
from tests.server.test_worker import get, wait_finished
from tests.testos import Testos

pytestmark = pytest.mark.analyzer
ServeFactory = Callable[[dict[str, Any]], ServeProcess]


def serve_releases(
    serve_process: ServeFactory, tmp_path: Path, podman: PodmanService, *releases: Testos
) -> str:
    return serve_process(
        {
            **settings_mapping(tmp_path),
            "builder": {"podman_url": podman.url},
            "releases": [release.release_config() for release in releases],
        }
    ).start()


def test_settings_list_both_releases(
    serve_process: ServeFactory,
    tmp_path: Path,
    podman_service: PodmanService,
    testos: Testos,
    testos_i386: Testos,
) -> None:
    url = serve_releases(serve_process, tmp_path, podman_service, testos, testos_i386)
    lines = requests.get(f"{url}/settings", timeout=30).text.split("\n")

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
    serve_process: ServeFactory,
    tmp_path: Path,
    podman_service: PodmanService,
    testos: Testos,
    testos_i386: Testos,
    arch: str,
    release: str | None,
    code: int,
) -> None:
    url = serve_releases(serve_process, tmp_path, podman_service, testos, testos_i386)
    headers = {"X-Package-NVR": "libcrash-2.0-1", "X-Package-Arch": arch}
    if release:
        headers["X-OS-Release"] = release
    response = requests.get(
        f"{url}/checkpackage", headers=headers, allow_redirects=False, timeout=60
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
    task_id, password = create(url, crash.archive)
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
    serve_process: ServeFactory,
    tmp_path: Path,
    podman_service: PodmanService,
    testos: Testos,
    testos_i386: Testos,
) -> None:
    # Today the upload is accepted and the task fails with the reason; once uploads are
    # checked at /create, the same sentence comes back there as a 4xx.
    url = serve_releases(serve_process, tmp_path, podman_service, testos)
    reason = "Unknown release 'testos-1-i386'; this server supports: testos-1-x86_64."
    response = requests.post(
        f"{url}/create",
        data=testos_i386.crashes["crasher"].archive.read_bytes(),
        headers={"Content-Type": "application/x-xz-compressed-tar"},
        timeout=60,
    )
    if response.status_code != 201:
        assert 400 <= response.status_code < 500
        assert reason in response.text
        return
    task_id, password = response.headers["X-Task-Id"], response.headers["X-Task-Password"]
    status, password = wait_finished(url, task_id, password, timeout=120)
    assert status == "FINISHED_FAILURE"
    assert reason in get(url, f"/{task_id}/log", password).text
