"""A small HTTP client of the retrace protocol, shared by the server tests.

It speaks to a real server over a socket, as ABRT clients do: upload an archive,
poll the task following the seed profile's password rotation, fetch its documents.
"""

from __future__ import annotations

import time
from pathlib import Path

import requests

from testing.server.archives import abrt_archive

XZ_TAR = "application/x-xz-compressed-tar"


def upload(url: str, body: bytes, content_type: str = XZ_TAR, **headers: str) -> requests.Response:
    """POST /create with ``body``; the response, whatever it is."""
    return requests.post(
        f"{url}/create", data=body, headers={"Content-Type": content_type, **headers}, timeout=60
    )


def create_task(
    url: str, archive: bytes | Path | None = None, content_type: str = XZ_TAR
) -> tuple[str, str]:
    """Create a task from ``archive`` (bytes or a file; default: a small valid crash)
    and return its id and password; fails the test unless the server answers 201."""
    if archive is None:
        archive = abrt_archive()
    body = archive.read_bytes() if isinstance(archive, Path) else archive
    response = upload(url, body, content_type)
    assert response.status_code == 201, response.text
    return response.headers["X-Task-Id"], response.headers["X-Task-Password"]


def get(url: str, path: str, password: str) -> requests.Response:
    return requests.get(f"{url}{path}", headers={"X-Task-Password": password}, timeout=5)


def wait_finished(url: str, task_id: str, password: str, timeout: float = 60) -> tuple[str, str]:
    """Poll like a seed-profile client; returns (status, newest password)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = get(url, f"/{task_id}", password)
        assert response.status_code == 200, response.text
        password = response.headers.get("X-Task-Password", password)
        if response.headers["X-Task-Status"].startswith("FINISHED"):
            return response.headers["X-Task-Status"], password
        time.sleep(0.2)  # a client's polling interval, not a wait for an event
    raise AssertionError(f"task {task_id} did not finish in {timeout} s")
