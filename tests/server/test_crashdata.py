"""Crash data over HTTP: /<id>/exploitable as abrt-retrace-client reads it, and
/<id>/core_backtrace, for every exploitable class of the testos fixtures."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import requests

from retracer.builder.model import Stage
from retracer.server.tasks import SqliteTaskStore
from testing.podman_service import PodmanService
from testing.server.live import ServeFactory, retrace_settings
from testing.testos import Testos
from testing.testos.problem import ARCHIVE_MEMBERS
from tests.server.client import create_task, get, wait_finished

pytestmark = pytest.mark.analyzer

RATINGS = {
    "exploit-write": 6,
    "exploit-jump": 7,
    "exploit-nullread": 1,
    "exploit-assert": 1,
    "exploit-stackguard": 6,
    "exploit-heap": 6,
    "exploit-illegal": 5,
    "exploit-fpe": 1,
}


@pytest.fixture
def abrt_server(
    serve_process: ServeFactory,
    tmp_path: Path,
    testos: Testos,
    podman_service: PodmanService,
) -> str:
    settings = retrace_settings(
        tmp_path, podman_service.url, testos.release_config(), protocol_profile="abrt"
    )
    return serve_process(settings).start()


def client_rating(body: str) -> int:
    """What abrt-retrace-client does: the number after the last ':'."""
    return int(body.rsplit(":", 1)[1])


def test_every_class_is_rated_at_exploitable_in_the_abrt_profile(
    abrt_server: str, testos: Testos
) -> None:
    url = abrt_server
    tasks = {name: create_task(url, testos.crashes[name].archive) for name in RATINGS}
    for name, (task_id, password) in tasks.items():
        status, _ = wait_finished(url, task_id, password, timeout=600)
        assert status == "FINISHED_SUCCESS", name

        response = get(url, f"/{task_id}/exploitable", password)
        assert response.status_code == 200, name
        assert response.headers["Content-Type"].startswith("text/plain")
        assert int(response.headers["Content-Length"]) == len(response.content)
        reason, rating = response.text.splitlines()
        assert reason.startswith("Likely crash reason: ")
        assert rating == f"Exploitable rating (0-8 scale): {RATINGS[name]}"
        assert client_rating(response.text) == RATINGS[name], name

        core_backtrace = get(url, f"/{task_id}/core_backtrace", password)
        assert core_backtrace.status_code == 200
        data = json.loads(core_backtrace.text)
        assert data["executable"] == "/usr/bin/exploits"
        assert sum(1 for t in data["stacktrace"] if t.get("crash_thread")) == 1
        report = json.loads(get(url, f"/{task_id}/backtrace.json", password).text)
        assert report["exploitable"]["rating"] == RATINGS[name]
        assert report["duphash"] and len(report["duphash"]) == 40


def test_core_backtrace_needs_the_password(abrt_server: str, testos: Testos) -> None:
    url = abrt_server
    task_id, password = create_task(url, testos.crashes["exploit-fpe"].archive)
    wait_finished(url, task_id, password, timeout=600)
    for document in ("core_backtrace", "exploitable"):
        assert get(url, f"/{task_id}/{document}", "wrong").status_code == 403
        assert get(url, f"/999999999/{document}", password).status_code == 404


def plain_tar(problem_dir: Path, core: bytes) -> bytes:
    """The crash as an uncompressed tar (the server splices it), with this core."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in ARCHIVE_MEMBERS:
            data = core if name == "coredump" else (problem_dir / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_repeated_core_reuses_the_result_and_a_different_one_is_retraced(
    abrt_server: str, testos: Testos, tmp_path: Path
) -> None:
    url = abrt_server
    crash = testos.crashes["crasher"]
    first_id, first_password = create_task(url, crash.archive)
    assert wait_finished(url, first_id, first_password, timeout=600)[0] == "FINISHED_SUCCESS"

    # The same core again, packed the other way (plain tar: spliced, never in Python).
    second_id, second_password = create_task(
        url, plain_tar(crash.problem_dir, crash.core.read_bytes()), "application/x-tar"
    )
    assert wait_finished(url, second_id, second_password, timeout=600)[0] == "FINISHED_SUCCESS"

    store = SqliteTaskStore.in_data_dir(tmp_path / "data")
    try:
        second = store.get(second_id)
        assert store.core_sha256(second_id) == hashlib.sha256(crash.core.read_bytes()).hexdigest()
        assert store.core_sha256(first_id) == store.core_sha256(second_id)
    finally:
        store.close()
    assert second.finished is not None and second.reason is None
    assert second_password != first_password
    assert get(url, f"/{second_id}", first_password).status_code == 403
    for document in ("backtrace", "backtrace.json", "core_backtrace", "exploitable"):
        assert (
            get(url, f"/{second_id}/{document}", second_password).text
            == get(url, f"/{first_id}/{document}", first_password).text
        )
    log = get(url, f"/{second_id}/log", second_password).text
    assert "Result reused: an identical core was retraced against the same repository" in log
    assert "running gdb" not in log
    # It never started a retrace: no analyzer stage was entered, so no container ran.
    analyzer_stages = (Stage.ANALYZING, Stage.PREPARING, Stage.GENERATING, Stage.CLEANING)
    assert not [stage for stage in analyzer_stages if stage.value in log]
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert "retracer_results_reused_total 1.0" in metrics

    # The very same archive again: reused too, with yet another password.
    third_id, third_password = create_task(url, crash.archive)
    assert wait_finished(url, third_id, third_password, timeout=600)[0] == "FINISHED_SUCCESS"
    assert third_password not in (first_password, second_password)
    assert "Result reused" in get(url, f"/{third_id}/log", third_password).text
    assert (
        get(url, f"/{third_id}/backtrace", third_password).text
        == get(url, f"/{first_id}/backtrace", first_password).text
    )
    assert "retracer_results_reused_total 2.0" in requests.get(f"{url}/metrics", timeout=10).text

    # One byte more makes another core of the same program: a real retrace.
    other_id, other_password = create_task(
        url, plain_tar(crash.problem_dir, crash.core.read_bytes() + b"\0"), "application/x-tar"
    )
    assert wait_finished(url, other_id, other_password, timeout=600)[0] == "FINISHED_SUCCESS"
    log = get(url, f"/{other_id}/log", other_password).text
    assert "Result reused" not in log
    assert "running gdb" in log
    assert crash.crash_function in get(url, f"/{other_id}/backtrace", other_password).text
    assert "retracer_results_reused_total 2.0" in requests.get(f"{url}/metrics", timeout=10).text
