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

from retracer.server.config import Config
from testing.server.live import Served, ServeProcess, ThreadServer, settings_mapping, write_config


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "analyzer: runs real retraces of the testos crashes (podman, a few minutes)"
    )


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
