"""Fixtures of the web tests: Debian's chromium driven by Playwright, and a real server.

- ``browser``: one headless chromium per session, the distribution's binary (nothing
  is downloaded); each test opens its own contexts, so cookies never leak between
  "people".
- ``site``: ``retracer serve`` with its worker over the testos release in the private
  podman service, an admin token set, shared by the module's tests.
- ``screenshots``: a folder under the module's temporary folder for page captures.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from testing.podman_service import PodmanService
from testing.server.live import ServeProcess, settings_mapping, write_config
from testing.testos import Testos

CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container: chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_TOKEN = "web-test-admin-token"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives chromium against a real server and worker (a few minutes)"
    )


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("chromium is not installed; scripts/setup installs it")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    # Playwright's launch() gives every browser a new, empty --user-data-dir.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


@dataclass(frozen=True)
class Site:
    url: str
    screenshots: Path

    def capture(self, page: Page, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, testos: Testos, podman_service: PodmanService
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web")
    data = {
        **settings_mapping(root, admin_token=ADMIN_TOKEN),
        "builder": {"podman_url": podman_service.url},
        "releases": [testos.release_config()],
    }
    server = ServeProcess(write_config(root / "retracer.yaml", data), root / "serve.log")
    url = server.start()
    screenshots = root / "screenshots"
    screenshots.mkdir()
    try:
        yield Site(url, screenshots)
    finally:
        server.stop()
