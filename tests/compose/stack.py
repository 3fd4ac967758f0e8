"""The compose stack under test: compose.yaml run by podman-compose on the host's podman.

podman-compose drives the podman CLI, so these tests use the host's default storage.
They stay apart from anything else there through a unique project name (containers,
network) and a unique ``builder.name_prefix`` (the images and retrace containers the
worker makes), and remove all of it afterwards. The stack's state lives in a
temporary RETRACER_ROOT; its configuration is container/demo.yaml with a few test
settings changed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from testing.podman_service import PodmanLauncher
from tests.compose.images import REPO


class HostPodmanLauncher(PodmanLauncher):
    """``podman system service`` on the host's default storage, the one the CLI uses.

    The worker reaches podman through this socket, as it would the host's
    /run/podman/podman.sock, which does not run here (no systemd).
    """

    def __init__(self, socket_dir: Path) -> None:
        super().__init__(socket_dir)
        # No private storage: the runtime then comes from containers.conf, as for
        # podman-compose.
        self.args = ()


@dataclass
class Stack:
    project: str
    root: Path  # RETRACER_ROOT: data/ and repos/, mounted at the same path
    url: str
    # builder.name_prefix: the worker's images and retrace containers start with it.
    prefix: str
    environment: dict[str, str]

    @classmethod
    def prepare(
        cls, work: Path, image: str, podman_socket: Path, demo_repo: Path, project: str
    ) -> Stack:
        root = work / "root"
        root.mkdir()
        prefix = f"{project}-retrace"
        config = yaml.safe_load((REPO / "container" / "demo.yaml").read_text())
        config["builder"]["name_prefix"] = prefix
        # A worker that dies loses its claim on the task after this long.
        config["server"]["task_lease_seconds"] = 10.0
        config_file = work / "retracer.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        port = _free_port()
        environment = {
            "RETRACER_ROOT": str(root),
            "RETRACER_CONFIG_FILE": str(config_file),
            "RETRACER_PODMAN_SOCKET": str(podman_socket),
            "RETRACER_LISTEN": f"127.0.0.1:{port}",
            "RETRACER_IMAGE": image,
            "RETRACER_DEMO_REPO": str(demo_repo),
        }
        return cls(project, root, f"http://127.0.0.1:{port}", prefix, environment)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman-compose", "--file", str(REPO / "compose.yaml"), "--project-name",
             self.project, *args],
            env={**os.environ, **self.environment},
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman-compose {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def container(self, service: str, number: int = 1) -> str:
        return f"{self.project}_{service}_{number}"

    def up(self) -> None:
        self.compose("up", "-d")
        missing = {"server", "worker", "sync", "demo-upstream"} - set(self.running_services())
        assert not missing, f"services not running after up: {sorted(missing)}\n{self.logs()}"

    def running_services(self) -> list[str]:
        listed = _podman(
            "ps", "--filter", f"label=io.podman.compose.project={self.project}",
            "--format", '{{index .Labels "com.docker.compose.service"}}',
        )  # fmt: skip
        return listed.split()

    def wait_healthy(self, timeout: float = 90) -> None:
        """Run the health checks of the server (GET /settings) and the worker (the podman
        socket answers) until they pass.

        podman runs health checks from systemd timers, and this host has no systemd,
        so the test runs each container's own check itself.
        """
        deadline = time.monotonic() + timeout
        for name in (self.container("server"), self.container("worker")):
            while True:
                check = subprocess.run(
                    ["podman", "healthcheck", "run", name], capture_output=True, text=True
                )
                if check.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} not healthy: {check.stdout}{check.stderr}")
                time.sleep(1)

    def wait_synced(self, nvr: str, timeout: float = 120) -> None:
        """Wait until the sync service has mirrored the demo release and the server knows
        ``nvr`` (/checkpackage answers 302)."""
        deadline = time.monotonic() + timeout
        headers = {"X-Package-NVR": nvr, "X-Package-Arch": "x86_64"}
        while True:
            response = requests.get(
                f"{self.url}/checkpackage", headers=headers, allow_redirects=False, timeout=30
            )
            if response.status_code == 302:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{nvr} not synced in {timeout} s:\n{self.logs('sync')}")
            time.sleep(1)

    def logs(self, *services: str) -> str:
        names = [self.container(s) for s in services] or self.containers()
        parts = []
        for name in names:
            run = subprocess.run(["podman", "logs", "--tail", "40", name], capture_output=True)
            text = (run.stdout + run.stderr).decode(errors="replace")
            parts.append(f"--- {name}\n{text}")
        return "\n".join(parts)

    def containers(self) -> list[str]:
        """The stack's own containers, running or not."""
        return _podman(
            "ps", "--all", "--filter", f"label=io.podman.compose.project={self.project}",
            "--format", "{{.Names}}",
        ).split()  # fmt: skip

    def retrace_containers(self) -> list[str]:
        """Containers the worker started through the podman socket (named after the prefix)."""
        names = _podman("ps", "--all", "--format", "{{.Names}}").split()
        return [name for name in names if name.startswith(f"{self.prefix}-")]

    def retrace_images(self) -> list[str]:
        listed = _podman("images", "--format", "{{.Repository}}:{{.Tag}}").split()
        return [tag for tag in listed if tag.startswith(f"localhost/{self.prefix}-")]

    def remove_everything(self) -> None:
        """Whatever ``down`` leaves: leftover containers, the network, the worker's images."""
        for name in self.containers() + self.retrace_containers():
            _podman("rm", "--force", name, check=False)
        _podman("network", "rm", "--force", f"{self.project}_default", check=False)
        for image in self.retrace_images():
            _podman("rmi", "--force", image, check=False)


def _podman(*args: str, check: bool = True) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
