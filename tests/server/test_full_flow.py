"""Whole retraces of the testos crashes through the HTTP server and the worker.

These run the real analyzer in the private podman service (marked ``analyzer``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from retracer.server.config import config_from_mapping
from testing.podman_service import PodmanService
from testing.server.live import ServeFactory, ThreadServer, retrace_settings, settings_mapping
from testing.testos import Testos
from tests.server.client import create_task, get, wait_finished

pytestmark = pytest.mark.analyzer


@pytest.fixture
def retrace_server(
    serve_process: ServeFactory, tmp_path: Path, testos: Testos, podman_service: PodmanService
) -> Callable[..., str]:
    def start(**server: Any) -> str:
        data = retrace_settings(tmp_path, podman_service.url, testos.release_config(), **server)
        return serve_process(data).start()

    return start


@pytest.fixture(scope="module")
def package_server(tmp_path_factory: pytest.TempPathFactory, testos: Testos) -> Iterator[str]:
    """The app in this process on a real socket, serving testos: /checkpackage needs
    the repository index only, neither a worker nor podman, so one server answers
    every case."""
    folder = tmp_path_factory.mktemp("checkpackage")
    data = {**settings_mapping(folder), "releases": [testos.release_config()]}
    server = ThreadServer(config_from_mapping(data, folder))
    yield server.start().url
    server.stop()


@pytest.mark.parametrize(
    ("nvr", "arch", "release", "code"),
    [
        ("crasher-1.0-1", "x86_64", None, 302),
        ("crasher-1.0-1", "x86_64", "testos-1-x86_64", 302),
        ("crasher-9.9-1", "x86_64", None, 404),
        ("crasher-1.0-1", "x86_64", "fedora-41-x86_64", 404),
    ],
)
def test_checkpackage_answers_from_the_repository(
    package_server: str, nvr: str, arch: str, release: str | None, code: int
) -> None:
    headers = {"X-Package-NVR": nvr, "X-Package-Arch": arch}
    if release:
        headers["X-OS-Release"] = release
    response = requests.get(
        f"{package_server}/checkpackage", headers=headers, allow_redirects=False, timeout=60
    )
    assert response.status_code == code, response.text
    assert "Location" not in response.headers


def test_seed_profile_full_flow(retrace_server: Callable[..., str], testos: Testos) -> None:
    crash = testos.crashes["crasher"]
    url = retrace_server()
    task_id, password = create_task(url, crash.archive)
    status, password = wait_finished(url, task_id, password, timeout=600)
    assert status == "FINISHED_SUCCESS"

    backtrace = get(url, f"/{task_id}/backtrace", password)
    assert backtrace.status_code == 200
    assert crash.crash_function in backtrace.text
    assert crash.newer_function not in backtrace.text
    report = get(url, f"/{task_id}/backtrace.json", backtrace.headers["X-Task-Password"])
    assert report.status_code == 200
    document = json.loads(report.text)
    assert document["package"] == "crasher-1.0-1.x86_64"
    assert document["crash_function"] == crash.crash_function
    log = get(url, f"/{task_id}/log", report.headers["X-Task-Password"])
    assert "Generating backtrace" in log.text
    exploitable = get(url, f"/{task_id}/exploitable", log.headers["X-Task-Password"])
    assert exploitable.status_code == 200
    assert exploitable.text == (
        "Likely crash reason: NULL pointer read\nExploitable rating (0-8 scale): 1\n"
    )


def test_abrt_profile_full_flow(retrace_server: Callable[..., str], testos: Testos) -> None:
    crash = testos.crashes["crasher"]
    url = retrace_server(protocol_profile="abrt")
    task_id, password = create_task(url, crash.archive)
    status, _ = wait_finished(url, task_id, password, timeout=600)
    assert status == "FINISHED_SUCCESS"
    assert get(url, f"/{task_id}", password).text == "Retrace job finished successfully"
    assert crash.crash_function in get(url, f"/{task_id}/backtrace", password).text
    assert get(url, f"/{task_id}/exploitable", password).status_code == 200


def test_submit_waits_and_prints_the_backtrace(
    retrace_server: Callable[..., str], testos: Testos
) -> None:
    crash = testos.crashes["crasher"]
    url = retrace_server()
    run = subprocess.run(
        [sys.executable, "-m", "retracer.server.cli", "submit", str(crash.problem_dir),
         "--server", url, "--wait", "--timeout", "600"],
        capture_output=True, text=True, timeout=700,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert crash.crash_function in run.stdout


def test_submit_json_prints_the_core_backtrace(
    retrace_server: Callable[..., str], testos: Testos
) -> None:
    crash = testos.crashes["crasher"]
    url = retrace_server()
    run = subprocess.run(
        [sys.executable, "-m", "retracer.server.cli", "submit", str(crash.problem_dir),
         "--server", url, "--wait", "--timeout", "600", "--json"],
        capture_output=True, text=True, timeout=700,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    core_backtrace = json.loads(run.stdout)
    (crashed,) = [t for t in core_backtrace["stacktrace"] if t.get("crash_thread")]
    assert crashed["frames"][0]["function_name"] == crash.crash_function
