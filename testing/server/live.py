"""Real servers for the tests: the app on gevent's WSGIServer in a thread, or
``retracer serve`` as a subprocess (for worker and kill -9 tests)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import requests
import yaml
from flask import Flask
from gevent.pywsgi import WSGIServer

from retracer.server.app import create_app
from retracer.server.config import Config
from retracer.server.connections import make_server


@dataclass(frozen=True)
class Served:
    url: str
    app: Flask


class ThreadServer:
    """httpx's ``serve_in_thread``: a gevent WSGIServer on 127.0.0.1, port 0, in a thread."""

    def __init__(self, config: Config) -> None:
        self.app = create_app(config)
        self._settings = config.server
        self._ready = threading.Event()
        self._server: WSGIServer | None = None
        self._hub: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Served:
        self._thread.start()
        if not self._ready.wait(10) or self._server is None:
            raise RuntimeError("the test server did not start")
        return Served(f"http://127.0.0.1:{self._server.server_port}", self.app)

    def stop(self) -> None:
        if self._server is not None and self._hub is not None:
            # stop() waits for the connections' pool: not from a loop callback.
            self._hub.loop.run_callback_threadsafe(gevent.spawn, self._server.stop)
        self._thread.join(10)

    def _run(self) -> None:
        self._hub = gevent.get_hub()
        self._server = make_server(self.app, self._settings, listener=("127.0.0.1", 0), log=None)
        self._server.start()
        self._ready.set()
        self._server.serve_forever()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


class ServeProcess:
    """``retracer --config FILE serve`` in its own process group, killable with -9."""

    def __init__(self, config_file: Path, log_file: Path) -> None:
        self.config_file = config_file
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, *options: str, timeout: float = 30.0) -> str:
        seen = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retracer.server.cli", "--config", str(self.config_file),
                 "serve", *options],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(r"serving on (http://\S+)", self.log_file.read_text()[seen:])
            if found:
                self.url = found[-1]
                requests.get(f"{self.url}/settings", timeout=5).raise_for_status()
                return self.url
            if self.process.poll() is not None:
                raise RuntimeError(f"retracer serve exited:\n{self.log_file.read_text()}")
            time.sleep(0.05)
        raise RuntimeError("retracer serve did not announce its address")

    def kill(self) -> None:
        """SIGKILL the server and its worker (the whole process group), no clean-up at all."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process is not None:
            # huey's worker children leave with their group; make sure of it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


ServeFactory = Callable[[dict[str, Any]], ServeProcess]


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


def retrace_settings(
    tmp_path: Path, podman_url: str, *releases: dict[str, Any], **server: Any
) -> dict[str, Any]:
    """Settings that retrace for real: the given releases (``release_config()`` of a
    testos build) and a podman service."""
    return {
        **settings_mapping(tmp_path, **server),
        "builder": {"podman_url": podman_url},
        "releases": list(releases),
    }
