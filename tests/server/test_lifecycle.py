"""Every task ends: deadlines, lost leases, killed workers and a dead podman service.

The faults are real: a podman socket that never answers (a hung service), a SQLite
lock held by another connection, ``kill -9`` of processes, a podman service killed.
Tests that need a real retrace are marked ``analyzer``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from retracer.server.auth import digest
from retracer.server.config import Config, ServerSettings, config_from_mapping
from retracer.server.lifetime import new_owner
from retracer.server.spool import Spool
from retracer.server.tasks import SqliteTaskStore, TaskState, TaskStore
from retracer.server.worker import FOLDER_GONE, TaskGuard, Worker
from testing.podman_service import PodmanLauncher, PodmanService
from testing.server.live import Served, ServeFactory, retrace_settings, settings_mapping
from testing.sync.rpms import build_rpms
from testing.sync.served import UpstreamRepository, UpstreamServer
from testing.testos import Testos
from tests.server.client import create_task, get, wait_finished
from tests.server.faults import (
    PodmanDoor,
    children,
    command_line,
    descendants,
    is_running,
    someone_waits_for,
    wait_until,
)


def lifecycle_settings(
    tmp_path: Path, testos: Testos, podman_url: str, **server: Any
) -> dict[str, Any]:
    """Real retraces of testos, answered in the abrt profile (one password throughout)."""
    return retrace_settings(
        tmp_path, podman_url, testos.release_config(), protocol_profile="abrt", **server
    )


def task_log(tmp_path: Path, task_id: str) -> Path:
    return tmp_path / "data" / "spool" / "tasks" / task_id / "log"


def wait_running(store: TaskStore, task_id: str, timeout: float = 90) -> str:
    """Wait until a worker holds the task; returns its owner."""
    wait_until(lambda: store.get(task_id).state is TaskState.RUNNING, timeout, "the claim")
    owner = store.running_owners()[task_id]
    assert owner is not None
    return owner


def owner_pid(owner: str) -> int:
    return int(owner.rsplit("/", 2)[1])


@pytest.fixture
def door(tmp_path: Path) -> Iterator[PodmanDoor]:
    """A podman socket that hangs until opened to a real service."""
    podman_door = PodmanDoor(tmp_path / "podman.sock")
    yield podman_door
    podman_door.close()


# The guard alone, with an injected clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_guard_stops_a_task_at_its_deadline(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "tasks.db")
    store.insert("100000001", "hash")
    owner = new_owner()
    assert store.claim("100000001", 60, owner=owner) is not None
    clock = FakeClock()
    settings = ServerSettings(task_lease_seconds=60, task_deadline_seconds=300)
    guard = TaskGuard(store, "100000001", owner, settings, clock=clock)
    assert guard.check() is None
    clock.now += 299
    assert guard.check() is None
    clock.now += 1
    assert guard.check() == "The retrace ran past its deadline of 300 s."
    assert not guard.lease_lost


def test_the_guard_notices_that_another_worker_took_the_task(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "tasks.db")
    store.insert("100000002", "hash")
    first = new_owner()
    assert store.claim("100000002", 60, owner=first) is not None
    settings = ServerSettings(task_lease_seconds=60)
    guard = TaskGuard(store, "100000002", first, settings)
    assert guard.check() is None
    # The lease ran out (say the worker was stopped for a while) and another took it.
    assert store.claim("100000002", 60, now=time.time() + 120, owner=new_owner())
    assert guard.check() == "the lease ran out and another worker took over the task"
    assert guard.lease_lost
    assert store.finish("100000002", False, "late", owner=first) is False


# Through `retracer serve`


def test_the_deadline_ends_a_retrace_stuck_on_a_hung_podman(
    serve_process: ServeFactory, tmp_path: Path, testos: Testos, door: PodmanDoor
) -> None:
    data = lifecycle_settings(tmp_path, testos, door.url, task_deadline_seconds=2)
    url = serve_process(data).start()
    task_id, password = create_task(url, testos.crashes["crasher"].archive)
    status, _ = wait_finished(url, task_id, password, timeout=30)
    assert status == "FINISHED_FAILURE"
    assert get(url, f"/{task_id}/log", password).text.endswith(
        "Retrace failed: The retrace ran past its deadline of 2 s.\n"
    )


def test_a_lease_that_cannot_be_renewed_stops_the_retrace(
    serve_process: ServeFactory, tmp_path: Path, testos: Testos, door: PodmanDoor
) -> None:
    data = lifecycle_settings(tmp_path, testos, door.url, task_lease_seconds=3)
    url = serve_process(data).start()
    task_id, password = create_task(url, testos.crashes["crasher"].archive)
    store = SqliteTaskStore.in_data_dir(tmp_path / "data")
    wait_running(store, task_id)

    # Another connection holds the write lock: every renewal fails ("database is locked").
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        log = task_log(tmp_path, task_id)
        wait_until(
            lambda: "Retrace failed: The task's lease could not be renewed" in log.read_text(),
            30,
            "the retrace's stop",
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    status, _ = wait_finished(url, task_id, password, timeout=30)
    assert status == "FINISHED_FAILURE"
    assert store.get(task_id).reason.startswith("The task's lease could not be renewed")


def test_kill_9_of_serve_takes_its_workers_along(
    serve_process: ServeFactory, tmp_path: Path
) -> None:
    server = serve_process(settings_mapping(tmp_path))
    server.start()
    assert server.process is not None
    serve_pid = server.process.pid
    # The worker child and huey's processes under it (a worker per slot, a scheduler).
    wait_until(lambda: len(descendants(serve_pid)) >= 4, 30, "the workers' start")
    workers = descendants(serve_pid)

    os.kill(serve_pid, signal.SIGKILL)  # the server alone, not its process group
    server.process.wait()
    wait_until(lambda: not any(is_running(pid) for pid in workers), 10, "the workers' exit")


def test_health_and_metrics_say_whether_a_worker_is_alive(
    serve_process: ServeFactory, tmp_path: Path
) -> None:
    data = settings_mapping(tmp_path, worker_heartbeat_seconds=0.5)
    server = serve_process(data)
    url = server.start("--no-worker")
    health = requests.get(f"{url}/health", timeout=5)
    assert (health.status_code, health.text) == (
        503,
        "No worker is alive: new tasks wait until one starts.\n",
    )
    assert "retracer_workers_alive 0.0" in requests.get(f"{url}/metrics", timeout=5).text
    server.stop()

    url = server.start()
    wait_until(lambda: requests.get(f"{url}/health", timeout=5).ok, 30, "a healthy worker")
    assert "retracer_workers_alive 1.0" in requests.get(f"{url}/metrics", timeout=5).text


def test_a_folder_gone_fails_the_task_with_a_reason(tmp_path: Path) -> None:
    config = config_from_mapping(settings_mapping(tmp_path), tmp_path)
    store = SqliteTaskStore.in_data_dir(config.data_dir)
    # The server stored the row, then died before moving the folder in.
    assert store.insert("100000003", "hash", now=time.time() - 120, reserve_seconds=60)
    assert store.queued_ids() == ["100000003"]  # the reservation ran out

    Worker(config).retrace("100000003")
    task = store.get("100000003")
    assert (task.state, task.reason) == (TaskState.FINISHED_FAILURE, FOLDER_GONE)


def test_a_reserved_task_is_not_queued_by_housekeeping(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "tasks.db")
    assert store.insert("100000004", "hash", reserve_seconds=60)
    assert store.queued_ids() == []
    assert store.claim("100000004", 60) is None
    store.admitted("100000004")
    assert store.queued_ids() == ["100000004"]


# Real retraces


@pytest.mark.analyzer
def test_a_worker_killed_mid_retrace_is_replaced_and_the_task_finishes(
    serve_process: ServeFactory,
    tmp_path: Path,
    testos: Testos,
    podman_service: PodmanService,
    door: PodmanDoor,
) -> None:
    # A long lease: the task must come back because its worker is dead, not by expiry.
    data = lifecycle_settings(tmp_path, testos, door.url, task_lease_seconds=600)
    url = serve_process(data).start()
    crash = testos.crashes["crasher"]
    task_id, password = create_task(url, crash.archive)
    store = SqliteTaskStore.in_data_dir(tmp_path / "data")
    pid = owner_pid(wait_running(store, task_id))

    os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    wait_until(lambda: not is_running(pid), 10, "the worker's death")
    door.open_to(podman_service.socket)
    status, password = wait_finished(url, task_id, password, timeout=60)
    assert status == "FINISHED_SUCCESS"
    assert crash.crash_function in get(url, f"/{task_id}/backtrace", password).text
    assert store.get(task_id).attempts == 2


@pytest.mark.analyzer
def test_the_worker_child_of_serve_is_restarted_after_kill_9(
    serve_process: ServeFactory,
    tmp_path: Path,
    testos: Testos,
    podman_service: PodmanService,
    door: PodmanDoor,
) -> None:
    data = lifecycle_settings(
        tmp_path, testos, door.url, task_lease_seconds=600, worker_heartbeat_seconds=0.5
    )
    server = serve_process(data)
    url = server.start()
    assert server.process is not None
    wait_until(lambda: requests.get(f"{url}/health", timeout=5).ok, 30, "a healthy worker")
    crash = testos.crashes["crasher"]
    task_id, password = create_task(url, crash.archive)
    store = SqliteTaskStore.in_data_dir(tmp_path / "data")
    retracing = owner_pid(wait_running(store, task_id))
    (consumer,) = [
        pid for pid in children(server.process.pid) if command_line(pid).endswith(
            f"worker --parent {server.process.pid} ")
    ]  # fmt: skip
    huey_processes = children(consumer)
    assert retracing in huey_processes

    os.kill(consumer, signal.SIGKILL)
    wait_until(lambda: not any(map(is_running, huey_processes)), 10, "the huey workers' exit")
    door.open_to(podman_service.socket)
    status, password = wait_finished(url, task_id, password, timeout=60)
    assert status == "FINISHED_SUCCESS"
    assert crash.crash_function in get(url, f"/{task_id}/backtrace", password).text
    log = server.log_file.read_text()
    assert re.search(rf"the worker \(pid {consumer}\) was killed by signal 9; restarting it", log)
    assert requests.get(f"{url}/health", timeout=5).ok
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert re.search(r"^retracer_workers_alive 1\.0$", metrics, re.MULTILINE)


@pytest.mark.analyzer
def test_a_podman_service_killed_mid_retrace_ends_the_task_with_a_reason(
    serve_process: ServeFactory, tmp_path: Path, testos: Testos
) -> None:
    launcher = PodmanLauncher(tmp_path)
    podman = launcher.start()
    data = lifecycle_settings(tmp_path, testos, podman.url)
    # A prefix no image has: the retrace must build the base image, under its lock.
    data["builder"]["name_prefix"] = f"retracer-t{os.getpid()}"
    locks = tmp_path / "data" / "builder" / "locks"
    locks.mkdir(parents=True)
    lock_file = locks / f"base-{testos.release_id}.lock"
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = serve_process(data).start()
        task_id, password = create_task(url, testos.crashes["crasher"].archive)
        # The retrace has connected and asked podman about its base image, and now waits
        # for the build lock: the service is idle, so killing it leaves no storage lock
        # held (the storage is shared with the other tests).
        wait_until(lambda: someone_waits_for(lock_file), 30, "the wait for the build lock")
        assert launcher.process is not None
        os.killpg(launcher.process.pid, signal.SIGKILL)
        launcher.process.wait()
    status, password = wait_finished(url, task_id, password, timeout=60)
    assert status == "FINISHED_FAILURE"
    reason = SqliteTaskStore.in_data_dir(tmp_path / "data").get(task_id).reason
    assert reason is not None
    assert reason.startswith(f"The podman service at {podman.url} cannot be reached")
    launcher.stop()


def test_a_write_waiting_for_the_database_does_not_freeze_the_server(
    serve: Callable[[Config], Served], server_config: Callable[..., Config]
) -> None:
    config = server_config(protocol_profile="seed")
    url = serve(config).url
    store = SqliteTaskStore.in_data_dir(config.data_dir)
    assert store.insert("123456789", digest("right"))
    # A worker holds the write lock: the HTTP process's next write waits (busy timeout).
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    answers: list[int] = []
    try:
        # A right password is spent (seed profile): a write, which now waits for the lock.
        writer = threading.Thread(
            target=lambda: answers.append(
                requests.get(
                    f"{url}/123456789", headers={"X-Task-Password": "right"}, timeout=30
                ).status_code
            )
        )
        writer.start()
        # For three seconds the write waits; a frozen event loop would answer nothing
        # until the lock is released below (each request would time out first). How
        # fast the answers are is not this test's business.
        answered_while_the_write_waits = 0
        window = time.monotonic() + 3
        while time.monotonic() < window:
            assert requests.get(f"{url}/settings", timeout=5).ok
            answered_while_the_write_waits += writer.is_alive()
        assert answered_while_the_write_waits >= 3
        assert writer.is_alive()  # the write waited all along
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    writer.join(30)
    assert answers == [200]  # answered once the lock was released


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Path]:
    """``data/spool`` on a 16 MiB tmpfs of its own (the database stays on disk)."""
    spool = tmp_path / "data" / "spool"
    spool.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(spool)], check=True)
    try:
        yield spool
    finally:
        subprocess.run(["umount", "--lazy", str(spool)], check=True)


def fill(folder: Path) -> None:
    """Write into ``folder`` until its file system is full."""
    with open(folder / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC


def test_a_full_spool_still_finishes_the_task_with_its_reason(
    serve_process: ServeFactory,
    tmp_path: Path,
    testos: Testos,
    door: PodmanDoor,
    small_spool: Path,
) -> None:
    data = lifecycle_settings(tmp_path, testos, door.url, task_deadline_seconds=3)
    url = serve_process(data).start()
    task_id, password = create_task(url, testos.crashes["crasher"].archive)
    store = SqliteTaskStore.in_data_dir(tmp_path / "data")
    wait_running(store, task_id)
    fill(small_spool)  # the outcome, the log line and the results cannot be written

    status, _ = wait_finished(url, task_id, password, timeout=30)
    assert status == "FINISHED_FAILURE"
    assert store.get(task_id).reason == "The retrace ran past its deadline of 3 s."


@pytest.mark.analyzer
def test_a_sync_republishing_the_repository_during_a_retrace(
    serve_process: ServeFactory,
    tmp_path: Path,
    testos: Testos,
    podman_service: PodmanService,
) -> None:
    # The release's repository, writable: hard links to the cached packages (sync adds
    # files and replaces repodata by rename, so the cache is never written).
    local = tmp_path / "repo"
    subprocess.run(["cp", "-al", str(testos.repo), str(local)], check=True)
    upstream = UpstreamRepository(tmp_path / "upstream")
    upstream.add(build_rpms("newcomer", "1.0"))
    upstream.refresh()
    server = UpstreamServer(upstream.root).start()
    prefix = f"retracer-s{os.getpid()}"
    try:
        data = lifecycle_settings(tmp_path, testos, podman_service.url)
        data["releases"][0].update(
            repositories=[str(local)],
            upstreams=[{"name": "updates", "baseurl": [server.url]}],
            insecure=True,
        )
        # A prefix no image has: the retrace builds its base image (the host-side
        # bootstrap reads the repository), after a lock the test holds.
        data["builder"]["name_prefix"] = prefix
        locks = tmp_path / "data" / "builder" / "locks"
        locks.mkdir(parents=True)
        serve = serve_process(data)
        with open(locks / f"base-{testos.release_id}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            url = serve.start()
            crash = testos.crashes["crasher"]
            task_id, password = create_task(url, crash.archive)
            log = task_log(tmp_path, task_id)
            wait_until(
                lambda: log.exists() and "reading the problem directory" in log.read_text(),
                30,
                "the retrace's start",
            )
            before = (local / "repodata" / "repomd.xml").read_bytes()
            sync = subprocess.run(
                [sys.executable, "-m", "retracer.server.cli", "--config",
                 str(serve.config_file), "sync"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert sync.returncode == 0, sync.stderr
            assert (local / "repodata" / "repomd.xml").read_bytes() != before
        status, password = wait_finished(url, task_id, password, timeout=300)
        assert status == "FINISHED_SUCCESS", store_reason(tmp_path, task_id)
        assert crash.crash_function in get(url, f"/{task_id}/backtrace", password).text
    finally:
        server.stop()
        images = podman_service.cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        for image in images.split():
            if image.startswith(f"localhost/{prefix}-"):
                podman_service.cli("rmi", "--force", image, check=False)


def store_reason(tmp_path: Path, task_id: str) -> str | None:
    return SqliteTaskStore.in_data_dir(tmp_path / "data").get(task_id).reason


def test_an_upload_still_arriving_after_an_hour_is_not_swept(tmp_path: Path) -> None:
    config = config_from_mapping(settings_mapping(tmp_path), tmp_path)
    spool = Spool.in_data_dir(config.data_dir, config.server)
    incoming = spool.root / "incoming"
    now = time.time()
    for name in ("slow", "abandoned"):
        (incoming / name / "crash").mkdir(parents=True)
        (incoming / name / "crash" / "coredump").write_bytes(b"core")
        for path in (incoming / name, incoming / name / "crash"):
            os.utime(path, (now - 7200, now - 7200))
    # The slow upload wrote its core a moment ago; the other one two hours ago.
    os.utime(incoming / "abandoned" / "crash" / "coredump", (now - 7200, now - 7200))

    assert spool.sweep_incoming(older_than_seconds=3600, now=now) == 1
    assert sorted(p.name for p in incoming.iterdir()) == ["slow"]
