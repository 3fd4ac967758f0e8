"""Fixtures of the server tests: configurations, real servers and a small HTTP client.

- ``server_config``: a Config under tmp_path whose release has no repository, so a
  real retrace fails fast with the analyzer's reason (no mock anywhere).
- ``serve``: start the app on a gevent WSGIServer in a thread; ``served`` is one with
  the default test settings. No worker runs, so tasks stay queued.
- ``serve_process``: ``retracer serve`` (HTTP + worker) as a subprocess.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from retracer.server.config import Config
from tests.server.live import Served, ServeProcess, ThreadServer, write_config

XZ_TAR = "application/x-xz-compressed-tar"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "analyzer: runs real retraces of the testos crashes (podman, a few minutes)"
    )


def settings_mapping(
    tmp_path: Path, podman_url: str | None = None, **server: Any
) -> dict[str, Any]:
    """Server settings under tmp_path. Without ``podman_url`` the builder points at a
    socket that does not exist, so no test reaches the host's own podman."""
    return {
        "data_dir": str(tmp_path / "data"),
        # The tests upload far more often than a client would; the limits have their own.
        "server": {
            "port": 0,
            "min_free_space_mib": 1,
            "creates_per_client": 10_000,
            "uploads_per_client": 10_000,
            **server,
        },
        "builder": {"podman_url": podman_url or f"unix://{tmp_path}/no-podman.sock"},
        "releases": [
            {
                "id": "testos-1-x86_64",
                "os_release": "TestOS release 1 (Demo)",
                "repositories": [str(tmp_path / "no-such-repository")],
                "bootstrap": {},
            }
        ],
    }


@pytest.fixture
def server_config(config_factory: Callable[..., Config], tmp_path: Path) -> Callable[..., Config]:
    """A Config with the given ``server:`` settings (and ``queue=`` / ``releases=``)."""

    def make(queue: dict[str, Any] | None = None, **server: Any) -> Config:
        data = settings_mapping(tmp_path, **server)
        if queue:
            data["queue"] = queue
        return config_factory(data)

    return make


@pytest.fixture
def serve() -> Iterator[Callable[[Config], Served]]:
    servers: list[ThreadServer] = []

    def start(config: Config) -> Served:
        server = ThreadServer(config)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def served(serve: Callable[[Config], Served], server_config: Callable[..., Config]) -> Served:
    return serve(server_config())


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], ServeProcess]]:
    processes: list[ServeProcess] = []

    def make(data: dict[str, Any]) -> ServeProcess:
        config_file = write_config(tmp_path / f"retracer-{len(processes)}.yaml", data)
        process = ServeProcess(config_file, tmp_path / f"serve-{len(processes)}.log")
        processes.append(process)
        return process

    yield make
    for process in processes:
        process.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


def upload(url: str, body: bytes, content_type: str = XZ_TAR, **headers: str) -> requests.Response:
    return requests.post(
        f"{url}/create", data=body, headers={"Content-Type": content_type, **headers}, timeout=60
    )
