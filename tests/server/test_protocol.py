"""The wire contract of the ABRT retrace protocol, over real HTTP against gevent's WSGIServer."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from retracer.server.app import create_app
from retracer.server.auth import digest
from retracer.server.config import Config
from retracer.server.tasks import SqliteTaskStore
from testing.server.archives import abrt_archive
from testing.server.live import Served
from tests.server.client import create_task, upload


def raw_request(url: str, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> http.client.HTTPResponse:  # fmt: skip
    """http.client, so the test sees exactly what goes over the wire (no Content-Length added)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_factory_builds_independent_apps(server_config: Callable[..., Config]) -> None:
    first = create_app(server_config(protocol_profile="seed"))
    second = create_app(server_config(protocol_profile="abrt"))
    assert first is not second
    assert first.extensions["retracer"] is not second.extensions["retracer"]
    assert {"api", "metrics"} <= set(first.blueprints)


def test_settings_lists_every_key_with_lf_only(served: Served) -> None:
    response = requests.get(f"{served.url}/settings", timeout=10)
    assert response.status_code == 200
    assert b"\r" not in response.content
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.text == (
        "running_tasks 0\n"
        "max_running_tasks 52\n"
        "max_packed_size 1024\n"
        "max_unpacked_size 4096\n"
        "supported_formats application/x-xz-compressed-tar application/x-xz"
        " application/x-gzip application/gzip application/x-tar\n"
        "supported_releases testos-1-x86_64\n"
    )


def test_settings_counts_queued_tasks_against_workers_plus_queue(
    serve: Callable[[Config], Served], server_config: Callable[..., Config]
) -> None:
    served = serve(server_config(workers=1, max_queued_tasks=1))
    create_task(served.url)
    lines = requests.get(f"{served.url}/settings", timeout=10).text.splitlines()
    assert lines[:2] == ["running_tasks 1", "max_running_tasks 2"]


def test_create_answers_201_with_id_and_password(served: Served) -> None:
    response = upload(served.url, abrt_archive())
    assert response.status_code == 201
    task_id = response.headers["X-Task-Id"]
    assert len(task_id) == 9 and task_id.isdigit()
    assert len(response.headers["X-Task-Password"]) >= 32
    assert response.headers["Content-Length"] == str(len(response.content))


def test_passwords_are_stored_only_as_hashes(
    served: Served, server_config: Callable[..., Config]
) -> None:
    task_id, password = create_task(served.url)
    database = (server_config().data_dir / "tasks.db").read_bytes()
    assert password.encode() not in database
    assert SqliteTaskStore.in_data_dir(server_config().data_dir).password_hash(task_id) == digest(
        password
    )


@pytest.fixture
def seed_task(served: Served) -> tuple[str, str]:
    return create_task(served.url)


def status(url: str, task_id: str, password: str) -> requests.Response:
    return requests.get(f"{url}/{task_id}", headers={"X-Task-Password": password}, timeout=10)


def test_seed_profile_rotates_the_password_on_every_answer(
    served: Served, seed_task: tuple[str, str], tmp_path: Path
) -> None:
    task_id, password = seed_task
    # A live worker serves the core's architecture: the task waits for a free one.
    SqliteTaskStore.in_data_dir(tmp_path / "data").beat("worker", arches=("x86_64",))
    first = status(served.url, task_id, password)
    assert first.status_code == 200
    assert first.text == "PENDING"
    assert first.headers["X-Task-Status"] == "PENDING"
    assert first.headers["X-Task-Stage"] == "Waiting for a free worker (position 1)"
    assert first.headers["X-Task-Queue-Position"] == "1"
    following = first.headers["X-Task-Password"]
    assert following != password and len(following) >= 32

    reused = status(served.url, task_id, password)
    assert reused.status_code == 403
    assert reused.text == (
        f"Task {task_id}: this password was already used;"
        " this server issues a new one in every response.\n"
    )
    assert status(served.url, task_id, following).status_code == 200


def test_seed_profile_hands_over_a_new_password_with_a_404_too(
    served: Served, seed_task: tuple[str, str]
) -> None:
    task_id, password = seed_task
    response = requests.get(
        f"{served.url}/{task_id}/backtrace", headers={"X-Task-Password": password}, timeout=10
    )
    assert response.status_code == 404
    assert response.text == (
        f"The backtrace of task {task_id} is not available: the task has not finished yet.\n"
    )
    assert status(served.url, task_id, response.headers["X-Task-Password"]).status_code == 200


def test_abrt_profile_keeps_the_password_and_answers_in_words(
    serve: Callable[[Config], Served], server_config: Callable[..., Config]
) -> None:
    served = serve(server_config(protocol_profile="abrt"))
    task_id, password = create_task(served.url)
    for _ in range(3):
        response = status(served.url, task_id, password)
        assert response.status_code == 200
        assert "X-Task-Password" not in response.headers
        assert response.headers["X-Task-Status"] == "PENDING"
        # No worker serves x86_64 at all: the task waits for one, and says so.
        assert response.text == "Waiting for an x86_64 worker (position 1)"


def test_log_is_available_once_finished(served: Served, seed_task: tuple[str, str]) -> None:
    task_id, password = seed_task
    response = requests.get(
        f"{served.url}/{task_id}/log", headers={"X-Task-Password": password}, timeout=10
    )
    assert response.status_code == 404
    assert response.text == (
        f"The log of task {task_id} is not available: the task has not finished yet.\n"
    )


def test_exploitable_404_means_no_information(served: Served, seed_task: tuple[str, str]) -> None:
    task_id, password = seed_task
    response = requests.get(
        f"{served.url}/{task_id}/exploitable", headers={"X-Task-Password": password}, timeout=10
    )
    assert response.status_code == 404
    assert response.text == f"There is no exploitability information for task {task_id}.\n"


@pytest.mark.parametrize("suffix", ["", "/backtrace", "/log", "/exploitable"])
def test_wrong_password_is_403(served: Served, seed_task: tuple[str, str], suffix: str) -> None:
    task_id, _ = seed_task
    response = requests.get(
        f"{served.url}/{task_id}{suffix}", headers={"X-Task-Password": "x" * 43}, timeout=10
    )
    assert response.status_code == 403
    assert response.text == f"The password for task {task_id} is wrong.\n"


def test_missing_password_is_403(served: Served, seed_task: tuple[str, str]) -> None:
    task_id, _ = seed_task
    response = requests.get(f"{served.url}/{task_id}", timeout=10)
    assert response.status_code == 403
    assert response.text == f"Task {task_id} needs its password in the X-Task-Password header.\n"


@pytest.mark.parametrize("suffix", ["", "/backtrace", "/log", "/exploitable"])
def test_unknown_task_is_404(served: Served, suffix: str) -> None:
    response = requests.get(
        f"{served.url}/123456789{suffix}", headers={"X-Task-Password": "x"}, timeout=10
    )
    assert response.status_code == 404
    assert response.text == "There is no task '123456789' on this server.\n"


def test_metrics_count_uploads(served: Served) -> None:
    body = abrt_archive()
    create_task(served.url)
    upload(served.url, body, content_type="text/plain")
    text = requests.get(f"{served.url}/metrics", timeout=10).text
    assert "retracer_tasks_created_total 1.0" in text
    assert f"retracer_upload_bytes_total {float(len(body))}" in text
    assert 'retracer_uploads_refused_total{status="415"} 1.0' in text
    assert "retracer_queue_length 1.0" in text


# /create's refusals, in the original retrace server's order: 503, 405, 415, 411, 413, 507.


def test_full_server_answers_503_even_before_the_method(
    serve: Callable[[Config], Served], server_config: Callable[..., Config]
) -> None:
    served = serve(server_config(workers=1, max_queued_tasks=1))
    create_task(served.url)
    create_task(served.url)
    for method in ("POST", "GET"):
        response = requests.request(
            method, f"{served.url}/create", data=abrt_archive(), timeout=10,
            headers={"Content-Type": "application/x-xz-compressed-tar"},
        )  # fmt: skip
        assert response.status_code == 503
        assert response.text == (
            "The server is full (2 of 2 tasks running or queued); try again later.\n"
        )


def test_create_needs_post(served: Served) -> None:
    response = requests.get(f"{served.url}/create", timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.text == "The method GET is not allowed here; use POST.\n"


def test_unsupported_content_type_is_415(served: Served) -> None:
    response = upload(served.url, abrt_archive(), content_type="application/zip")
    assert response.status_code == 415
    assert response.text == (
        "The Content-Type 'application/zip' is not supported; send one of"
        " application/x-xz-compressed-tar, application/x-xz, application/x-gzip,"
        " application/gzip, application/x-tar.\n"
    )


def test_chunked_upload_without_length_is_411(served: Served) -> None:
    body = abrt_archive()
    response = requests.post(
        f"{served.url}/create", data=iter([body[:100], body[100:]]), timeout=10,
        headers={"Content-Type": "application/x-xz-compressed-tar"},
    )  # fmt: skip
    assert response.status_code == 411
    assert response.text == (
        "The upload needs a Content-Length header (chunked bodies are refused).\n"
    )


def test_packed_size_over_the_cap_is_413_before_reading(
    serve: Callable[[Config], Served], server_config: Callable[..., Config]
) -> None:
    served = serve(server_config(max_packed_size_mib=1))
    response = upload(served.url, b"\0" * (2 << 20))
    assert response.status_code == 413
    assert response.text == "The packed archive is larger than this server's 1 MiB limit.\n"


def test_low_disk_space_is_507(
    serve: Callable[[Config], Served], server_config: Callable[..., Config]
) -> None:
    served = serve(server_config(min_free_space_mib=1 << 40))
    response = upload(served.url, abrt_archive())
    assert response.status_code == 507
    assert response.text == (
        "The server does not have enough free disk space to store this upload.\n"
    )


def test_non_coredump_task_type_is_403(served: Served) -> None:
    response = upload(served.url, abrt_archive(), **{"X-Task-Type": "2"})
    assert response.status_code == 403
    assert response.text == (
        "This server retraces only coredumps (X-Task-Type 0), not X-Task-Type '2'.\n"
    )


def test_other_methods_elsewhere_are_405_in_one_sentence(served: Served) -> None:
    response = requests.post(f"{served.url}/settings", timeout=10)
    assert response.status_code == 405
    assert response.text == "Method Not Allowed: The method is not allowed for the requested URL.\n"


@pytest.fixture
def every_response(served: Served) -> Iterator[list[http.client.HTTPResponse]]:
    responses: list[http.client.HTTPResponse] = []
    yield responses
    for response in responses:
        assert response.getheader("Content-Length") is not None, response.status
        assert response.getheader("Transfer-Encoding") is None


def test_every_response_has_content_length(
    served: Served, every_response: list[http.client.HTTPResponse]
) -> None:
    task_id, password = create_task(served.url)
    auth = {"X-Task-Password": password}
    for method, path, headers in [
        ("GET", "/settings", {}),
        ("GET", "/metrics", {}),
        ("GET", "/checkpackage", {}),
        ("GET", "/create", {}),
        ("GET", "/nothing/here", {}),
        ("GET", f"/{task_id}", {"X-Task-Password": "wrong"}),
        ("GET", f"/{task_id}/exploitable", auth),
    ]:
        every_response.append(raw_request(served.url, method, path, headers=headers))
