"""Scale-out across hosts: a front end with PostgreSQL and Redis, and worker hosts that
share no disk with it, each in a network namespace of its own (see tests/hosts.py).

These run real retraces of the testos crasher on every host (a minute or two each).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from retracer.server.tasks import TaskState, TaskStore
from testing.hosts import Deployment
from testing.server.archives import abrt_archive
from testing.testos.model import Testos
from tests.server.faults import PodmanDoor, wait_until

pytestmark = pytest.mark.analyzer
EM_AARCH64 = 183


@pytest.fixture
def deployment(tmp_path: Path, testos: Testos) -> Iterator[Deployment]:
    aarch64 = {**testos.release_config(), "id": "testos-1-aarch64"}
    made = Deployment(tmp_path / "hosts", testos, extra_releases=(aarch64,))
    try:
        made.start()
        yield made
    finally:
        made.remove()


def post_create(deployment: Deployment, archive: bytes) -> requests.Response:
    return requests.post(
        f"{deployment.url}/create",
        data=archive,
        headers={"Content-Type": "application/x-xz-compressed-tar"},
        timeout=60,
    )


def create(deployment: Deployment, archive: bytes) -> str:
    return create_with_password(deployment, archive)[0]


def create_with_password(deployment: Deployment, archive: bytes) -> tuple[str, str]:
    response = post_create(deployment, archive)
    assert response.status_code == 201, f"{response.text}\n{deployment.logs()}"
    return response.headers["X-Task-Id"], response.headers["X-Task-Password"]


def host_of(store: TaskStore, task_id: str) -> str:
    """The host name in the owner of the task's last attempt."""
    owner = store.running_owners().get(task_id) or _last_owner(store, task_id)
    return owner.split("/", 1)[0]


def _last_owner(store: TaskStore, task_id: str) -> str:
    with store._read() as db:
        (owner,) = db.rows("SELECT owner FROM tasks WHERE id = ?", (task_id,))[0]
    return str(owner)


def wait_finished(deployment: Deployment, store: TaskStore, ids: list[str], timeout: float) -> None:
    def finished() -> bool:
        return all(store.get(task_id).state.finished for task_id in ids)

    try:
        wait_until(finished, timeout, "every task's end")
    except AssertionError as error:
        states = {task_id: store.get(task_id) for task_id in ids}
        raise AssertionError(f"{error}: {states}\n{deployment.logs()}") from None


def crasher(testos: Testos) -> bytes:
    return testos.crashes["crasher"].archive.read_bytes()


def test_tasks_spread_over_two_hosts(deployment: Deployment, testos: Testos) -> None:
    store = deployment.store()
    hosts = [deployment.add_worker("alpha"), deployment.add_worker("beta")]
    ids = [create(deployment, crasher(testos)) for _ in range(6)]
    wait_finished(deployment, store, ids, 600)
    assert {store.get(task_id).state for task_id in ids} == {TaskState.FINISHED_SUCCESS}
    assert {host_of(store, task_id) for task_id in ids} == {"alpha", "beta"}
    # A worker sees the front end's folder empty (its own mount namespace covers it).
    spool = deployment.front_folder / "data" / "spool"
    assert spool.is_dir()
    for host in hosts:
        assert not Path(f"/proc/{host.process.pid}/root{spool}").exists()
    # The front end has the results, although no worker could see its folder.
    backtrace = deployment.front_folder / "data" / "spool" / "tasks" / ids[0] / "backtrace"
    assert "crasher" in backtrace.read_text()
    settings = requests.get(f"{deployment.url}/settings", timeout=10).text
    assert "workers_alive x86_64:2\n" in settings
    assert "workers_releases testos-1-aarch64:2 testos-1-x86_64:2\n" in settings


def test_a_host_killed_mid_retrace_loses_nothing(
    deployment: Deployment, testos: Testos, tmp_path: Path
) -> None:
    store = deployment.store()
    # alpha's podman hangs, so its retrace is surely in progress when it is killed (its
    # second process: the housekeeping, which also asks podman, may hold the first).
    door = PodmanDoor(tmp_path / "hung-podman.sock")
    alpha = deployment.add_worker("alpha", podman_url=door.url, workers=2)
    first = create(deployment, crasher(testos))
    try:
        wait_until(lambda: store.get(first).state is TaskState.RUNNING, 60, "alpha's claim")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{deployment.logs()}") from None
    assert host_of(store, first) == "alpha"
    alpha.kill_9()
    deployment.add_worker("beta")
    ids = [first] + [create(deployment, crasher(testos)) for _ in range(3)]
    wait_finished(deployment, store, ids, 600)
    assert {store.get(task_id).state for task_id in ids} == {TaskState.FINISHED_SUCCESS}
    assert host_of(store, first) == "beta"
    assert store.get(first).attempts == 2  # alpha's lease ran out; beta took over once
    door.close()


def test_redis_and_postgresql_restart_mid_run(deployment: Deployment, testos: Testos) -> None:
    store = deployment.store()
    deployment.add_worker("alpha")
    ids = [create(deployment, crasher(testos)) for _ in range(4)]
    wait_until(lambda: any(store.get(t).state.finished for t in ids), 300, "a first result")

    deployment.stop_redis()
    refused = post_create(deployment, crasher(testos))
    assert refused.status_code == 503
    assert refused.text == "The task queue is unavailable; try again in a minute.\n"
    deployment.start_redis()
    ids.append(create(deployment, crasher(testos)))

    deployment.postgres.stop()
    refused = post_create(deployment, crasher(testos))
    assert refused.status_code == 503
    assert refused.text == "The task store is unavailable; try again in a minute.\n"
    deployment.postgres.start()
    ids.append(create(deployment, crasher(testos)))

    wait_finished(deployment, store, ids, 600)
    assert {store.get(task_id).state for task_id in ids} == {TaskState.FINISHED_SUCCESS}


def test_an_aarch64_core_waits_for_an_aarch64_worker(
    deployment: Deployment, testos: Testos
) -> None:
    store = deployment.store()
    deployment.add_worker("alpha")  # x86_64 only
    task_id, password = create_with_password(deployment, aarch64_archive(testos))
    assert store.get(task_id).arch == "aarch64"
    control = create(deployment, crasher(testos))
    wait_finished(deployment, store, [control], 300)  # alpha works, and leaves it alone
    status = requests.get(
        f"{deployment.url}/{task_id}", headers={"X-Task-Password": password}, timeout=10
    )
    assert status.headers["X-Task-Status"] == "PENDING"
    assert status.headers["X-Task-Stage"] == "Waiting for an aarch64 worker (position 1)"
    assert store.get(task_id).state is TaskState.QUEUED

    deployment.add_worker("arm", arches=("aarch64",))
    wait_finished(deployment, store, [task_id], 300)
    # Routing is what counts: the x86_64 tools may fail on a relabelled core.
    assert host_of(store, task_id) == "arm"
    assert store.get(task_id).attempts == 1


def aarch64_archive(testos: Testos) -> bytes:
    """The crasher's problem files with the core's ELF machine set to aarch64."""
    folder = testos.crashes["crasher"].problem_dir
    names = ("coredump", "executable", "package", "os_release")
    files = {name: (folder / name).read_bytes() for name in names}
    core = bytearray(files["coredump"])
    core[18:20] = EM_AARCH64.to_bytes(2, "little")
    files["coredump"] = bytes(core)
    return abrt_archive(files)
