"""The service image built from ./Containerfile: its commands, user and health check."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.compose.images import ULIMITS

pytestmark = [
    pytest.mark.compose,
    pytest.mark.skipif(shutil.which("podman-compose") is None, reason="needs podman-compose"),
]


def run_in(image: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "run", "--rm", *ULIMITS, image, *command],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_retracer_help_runs_in_the_image(service_image: str) -> None:
    result = run_in(service_image, "retracer", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "worker", "sync", "submit"):
        assert command in result.stdout


def test_the_image_configuration_serves_on_all_interfaces(service_image: str) -> None:
    result = run_in(service_image, "retracer", "config")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# read from /etc/retracer/retracer.yaml\n")
    assert "host: 0.0.0.0" in result.stdout
    assert "podman_url: unix:///run/podman/podman.sock" in result.stdout


def test_the_image_runs_unprivileged_and_checks_its_health(service_image: str) -> None:
    result = run_in(service_image, "id", "-un")
    assert result.stdout.strip() == "retracer", result.stderr
    inspected = subprocess.run(
        ["podman", "image", "inspect", service_image],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (image,) = json.loads(inspected.stdout)
    assert "/settings" in " ".join(image["Healthcheck"]["Test"])
    assert image["Config"]["Cmd"] == ["retracer", "serve"]
