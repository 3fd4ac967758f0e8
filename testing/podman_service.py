"""A private podman API service for the tests, on its own storage root.

Tests never touch the host's default podman storage: images and containers live
under a cache directory that survives between runs (so slow images are built
once), and the service listens on a socket in a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testing.cache import cache_root

# podman here must use runc (crun fails on hybrid cgroups) and cannot raise
# rlimits, so every container the tests start sets explicit ulimits.
RUNTIME = "runc"
ULIMITS = [
    {"Name": "nofile", "Soft": 4096, "Hard": 4096},
    {"Name": "nproc", "Soft": 4096, "Hard": 4096},
]


@dataclass(frozen=True)
class PodmanService:
    url: str
    socket: Path
    storage_args: tuple[str, ...]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the podman CLI on the same storage, for test set-up and inspection only."""
        return subprocess.run(
            ["podman", *self.storage_args, *args], check=check, capture_output=True, text=True
        )


def storage_args() -> tuple[str, ...]:
    root = cache_root() / "podman"
    return (
        "--root", str(root / "storage"),
        "--runroot", str(root / "run"),
        "--tmpdir", str(root / "tmp"),
        "--runtime", RUNTIME,
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "file",
    )  # fmt: skip


def remove_retracer_images() -> list[str]:
    """Remove the images retracer built on the tests' storage; returns their names.

    retracer keys its images by package NEVRAs, which a real repository never reuses
    for other content. A rebuilt testos does: its packages keep their NEVRAs but get
    new build-ids, so images made from the previous build would hold stale binaries.
    """
    podman = ["podman", *storage_args()]
    listing = subprocess.run(
        [*podman, "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    stale = [image for image in listing if image.startswith("localhost/retracer-")]
    if stale:
        subprocess.run([*podman, "rmi", "--force", *stale], capture_output=True, check=False)
    return stale


class PodmanLauncher:
    """Starts ``podman system service`` and stops it again, like podman-py's own tests."""

    def __init__(self, socket_dir: Path) -> None:
        self.socket = socket_dir / "podman.sock"
        # The service's own log goes to a file: a pipe nobody drains fills after a few
        # hundred retraces' warnings, and then the service blocks on every request.
        self.log = socket_dir / "podman.log"
        self.args = storage_args()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> PodmanService:
        if shutil.which("podman") is None:
            raise RuntimeError("podman is not installed; run scripts/setup")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["podman", *self.args, "system", "service", "--time=0", f"unix://{self.socket}"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                # conmon drops an `oom` file into its working directory when a container
                # is OOM-killed; keep that out of the repository.
                cwd=self.socket.parent,
            )
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.process.poll() is not None:
                stderr = self.log.read_text(errors="replace")
                raise RuntimeError(f"podman system service exited: {stderr}")
            if time.monotonic() > deadline:
                raise RuntimeError("podman system service did not create its socket")
            time.sleep(0.05)
        return PodmanService(
            url=f"unix://{self.socket}", socket=self.socket, storage_args=self.args
        )

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
