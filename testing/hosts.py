"""A multi-host deployment on one machine, for the scale-out tests and the benchmark.

One front namespace holds PostgreSQL (a private cluster), Redis and ``retracer serve
--no-worker``; each worker host is a namespace of its own with its own data folder,
its own podman service and its own mirror, synced over HTTP from the front end's
``/repos``. A worker runs in a private mount namespace where the front end's folder
is covered by an empty tmpfs, and in a UTS namespace with its own host name (so its
leases name it); it reaches the front end only through its veth link.

The podman services run outside the namespaces on the test cache's storage: killing
one mid-operation could leave podman's shared locks held, which would wedge every
other service on that storage. A host's death is the death of its retracer processes.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from retracer.server.config import StoreSettings
from retracer.server.tasks import TaskStore, open_store
from testing.netns import Namespace, Network, spawn
from testing.podman_service import PodmanLauncher
from testing.postgres_service import PostgresCluster
from testing.testos.model import Testos

TOKEN = "test-worker-token"
PORT = 8080
REDIS_PORT = 6379
RETRACER = str(Path(sys.executable).parent / "retracer")
# Short, so a dead host's task goes elsewhere within seconds; long enough that a
# database restart (a few seconds without renewals) does not stop a retrace.
LEASE_SECONDS = 15.0


@dataclass
class WorkerHost:
    name: str
    namespace: Namespace
    folder: Path
    process: subprocess.Popen[bytes]
    podman: PodmanLauncher

    def kill_9(self) -> None:
        """Every retracer process of this host, at once."""
        self.namespace.kill_all()
        self.process.wait()


class Deployment:
    def __init__(self, root: Path, testos: Testos, extra_releases: tuple[dict[str, Any], ...] = ()):
        self.root = root
        self.testos = testos
        self.releases = (testos.release_config(), *extra_releases)
        self.front_folder = root / "front"
        self.front_folder.mkdir(parents=True)
        self.network = Network()
        self.hosts: list[WorkerHost] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        self._stores: list[TaskStore] = []
        self.postgres = PostgresCluster(listen=("*",), prefix=tuple(self.network.front.command()))
        self.redis_dir = root / "redis"
        self.redis_dir.mkdir()
        self.url = f"http://{self.network.front.address}:{PORT}"

    # The front

    def start(self) -> None:
        self.postgres.start()
        self.dbname = self.postgres.new_database().rsplit("dbname=", 1)[1].split()[0]
        self.start_redis()
        config = self.front_folder / "retracer.yaml"
        config.write_text(yaml.safe_dump(self._front_config()))
        self._processes.append(spawn(
            self.network.front.command(RETRACER, "--config", str(config), "serve", "--no-worker"),
            self.front_folder / "serve.log",
        ))  # fmt: skip
        self._wait_for(lambda: self._answers(f"{self.url}/settings"), 60, "the front end")

    def start_redis(self) -> None:
        """Redis with an append-only file synced at every write: a restart keeps the
        queues (the housekeeping would restore lost messages anyway, a minute later)."""
        self.redis = spawn(
            self.network.front.command(
                "redis-server", "--port", str(REDIS_PORT), "--bind", "0.0.0.0",
                "--protected-mode", "no", "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--dir", str(self.redis_dir),
            ),
            self.root / "redis.log",
        )  # fmt: skip
        self._processes.append(self.redis)
        self._wait_for(self._redis_answers, 30, "Redis")

    def stop_redis(self) -> None:
        self.redis.terminate()
        self.redis.wait(30)
        self._processes.remove(self.redis)

    def store(self) -> TaskStore:
        """The test's own connection, through the cluster's unix socket."""
        dsn = self.postgres.dsn(self.dbname)
        store = open_store(StoreSettings(backend="postgresql", dsn=dsn), self.root, 5)
        self._stores.append(store)
        return store

    # Worker hosts

    def add_worker(self, name: str, arches: tuple[str, ...] = ("x86_64",),
                   podman_url: str | None = None, workers: int = 1) -> WorkerHost:  # fmt: skip
        namespace = self.network.add_host(name)
        folder = self.root / name
        folder.mkdir()
        podman = PodmanLauncher(folder)
        service = podman.start()
        config = folder / "retracer.yaml"
        config.write_text(yaml.safe_dump(
            self._worker_config(namespace, folder, arches, podman_url or service.url, workers)
        ))  # fmt: skip
        sync = namespace.run(RETRACER, "--config", str(config), "sync", timeout=600)
        (folder / "sync.log").write_text(sync.stdout + sync.stderr)
        script = (
            f"hostname {name} && mount -t tmpfs -o size=1m tmpfs {self.front_folder}"
            f" && exec {RETRACER} --config {config} worker"
        )
        process = spawn(namespace.command("unshare", "--mount", "--uts", "sh", "-c", script),
                        folder / "worker.log")  # fmt: skip
        self._processes.append(process)
        host = WorkerHost(name, namespace, folder, process, podman)
        self.hosts.append(host)
        return host

    def logs(self) -> str:
        """Every process's output, for a failing test's message."""
        parts = []
        for path in sorted(self.root.rglob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.relative_to(self.root)}\n{text[-4000:]}")
        return "\n".join(parts)

    def remove(self) -> None:
        for store in self._stores:
            store.close()
        for process in self._processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
        self.network.remove()  # every process left in the namespaces, then them
        for host in self.hosts:
            host.podman.stop()
        self.postgres.remove()
        shutil.rmtree(self.redis_dir, ignore_errors=True)

    # Configurations

    def _front_config(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.front_folder / "data"),
            "server": {
                "host": "0.0.0.0", "port": PORT, "protocol_profile": "abrt",
                "min_free_space_mib": 1, "creates_per_client": 100_000,
                "uploads_per_client": 100_000, "max_queued_tasks": 500,
                "serve_repositories": True, "task_lease_seconds": LEASE_SECONDS,
                "worker_heartbeat_seconds": 1.0,
            },
            "store": {"backend": "postgresql", "dsn": f"host=127.0.0.1 port=5432"
                      f" dbname={self.dbname} user=postgres"},
            "queue": {"backend": "redis", "redis_url": f"redis://127.0.0.1:{REDIS_PORT}/0"},
            "worker": {"token": TOKEN},
            "builder": {"podman_url": f"unix://{self.root}/no-podman.sock"},
            "releases": list(self.releases),
        }  # fmt: skip

    def _worker_config(
        self,
        namespace: Namespace,
        folder: Path,
        arches: tuple[str, ...],
        podman_url: str,
        workers: int,
    ) -> dict[str, Any]:
        front = namespace.front_address
        served = self.testos.release_id
        releases = [
            {
                **release,
                "repositories": [str(folder / "mirror" / release["id"])],
                "upstreams": [{"name": "front",
                               "baseurl": [f"http://{front}:{PORT}/repos/{served}/"]}],
                "insecure": True,
            }
            for release in self.releases
        ]  # fmt: skip
        return {
            "data_dir": str(folder / "data"),
            "server": {
                "workers": workers,
                "task_lease_seconds": LEASE_SECONDS,
                "worker_heartbeat_seconds": 1.0,
            },
            "store": {
                "backend": "postgresql",
                "dsn": f"host={front} port=5432 dbname={self.dbname} user=postgres",
            },
            "queue": {"backend": "redis", "redis_url": f"redis://{front}:{REDIS_PORT}/0"},
            "worker": {
                "token": TOKEN,
                "front_end": f"http://{front}:{PORT}",
                "arches": list(arches),
            },
            "builder": {"podman_url": podman_url},
            "releases": releases,
        }

    # Waiting

    def _wait_for(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start within {timeout} s\n{self.logs()}")
            time.sleep(0.1)

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            return requests.get(url, timeout=2).ok
        except requests.RequestException:
            return False

    def _redis_answers(self) -> bool:
        done = subprocess.run(
            self.network.front.command("redis-cli", "-p", str(REDIS_PORT), "ping"),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout.strip() == "PONG"
