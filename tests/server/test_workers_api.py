"""The /internal endpoints remote workers use, over real HTTP, and the remote worker's
client (retracer.server.remote) against them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from retracer.builder.model import Stage
from retracer.server.config import Config
from retracer.server.jobs import JobQueue
from retracer.server.remote import FrontEnd, ProblemGone, TaskTakenOver
from retracer.server.spool import Spool
from retracer.server.tasks import SqliteTaskStore, TaskState
from retracer.server.worker import TaskObserver, Worker
from testing.server.live import Served, settings_mapping
from tests.server.client import create_task, get

TOKEN = "worker-secret"


@pytest.fixture
def front(
    serve: Callable[[Config], Served], config_factory: Callable[..., Config], tmp_path: Path
) -> Served:
    data = settings_mapping(tmp_path)
    data["worker"] = {"token": TOKEN}
    return serve(config_factory(data))


def test_the_endpoints_need_the_worker_token(front: Served) -> None:
    task_id = create_task(front.url)[0]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = requests.get(f"{front.url}/internal/tasks/{task_id}/files", headers=headers)
        assert response.status_code == 401
        assert response.text == "This endpoint is for retrace workers; the worker token is wrong.\n"


def test_without_a_token_there_are_no_endpoints(served: Served) -> None:
    task_id = create_task(served.url)[0]
    response = requests.get(
        f"{served.url}/internal/tasks/{task_id}/files", headers={"Authorization": "Bearer "}
    )
    assert response.status_code == 404


def test_a_worker_downloads_verified_files_and_hands_back_results(
    front: Served, tmp_path: Path
) -> None:
    task_id = create_task(front.url)[0]
    store = SqliteTaskStore.in_data_dir(tmp_path / "data")
    remote = FrontEnd(front.url, TOKEN)
    folder = tmp_path / "worker" / task_id / "crash"
    remote.fetch(task_id, folder)
    spooled = tmp_path / "data" / "spool" / "tasks" / task_id / "crash"
    names = sorted(path.name for path in spooled.iterdir())
    assert sorted(path.name for path in folder.iterdir()) == names
    for name in names:
        assert (folder / name).read_bytes() == (spooled / name).read_bytes()

    # Results are refused while the task is not held, or when their bytes changed.
    owner = "host-b/1/1"
    with pytest.raises(TaskTakenOver):
        remote.put_result(task_id, owner, "backtrace", b"frames")
    assert store.claim(task_id, 60, owner=owner) is not None
    altered = requests.put(
        f"{front.url}/internal/tasks/{task_id}/results/backtrace",
        data=b"frames, cut",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Owner": owner,
                 "X-Content-SHA256": hashlib.sha256(b"frames").hexdigest()},
    )  # fmt: skip
    assert altered.status_code == 400
    assert altered.text == "The result 'backtrace' did not match its SHA-256; send it again.\n"
    remote.put_result(task_id, owner, "backtrace", b"frames")
    remote.put_result(task_id, owner, "log", b"Retrace finished successfully\n")
    with pytest.raises(TaskTakenOver):
        remote.finish(task_id, "someone-else", True, None)
    remote.finish(task_id, owner, True, None)
    task = store.get(task_id)
    assert task.state is TaskState.FINISHED_SUCCESS
    folder_of_task = spooled.parent
    assert (folder_of_task / "backtrace").read_text() == "frames"
    assert (folder_of_task / "log").read_text() == "Retrace finished successfully\n"
    assert not (spooled / "coredump").exists()  # removed once finished, as locally
    assert not (folder_of_task.stat().st_mode & 0o200)  # sealed


def test_a_folder_gone_from_the_front_end_is_said_so(front: Served, tmp_path: Path) -> None:
    task_id = create_task(front.url)[0]
    spooled = tmp_path / "data" / "spool" / "tasks" / task_id
    for path in sorted(spooled.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    spooled.rmdir()
    with pytest.raises(ProblemGone):
        FrontEnd(front.url, TOKEN).fetch(task_id, tmp_path / "worker")


def test_a_worker_passes_on_a_release_whose_mirror_another_holds(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    data = settings_mapping(tmp_path)
    held = {**data["releases"][0], "id": "testos-1-aarch64", "repositories": [str(tmp_path)]}
    data["releases"].append(held)
    worker = Worker(config_factory(data))
    worker.pass_on_pause = 0
    store = SqliteTaskStore.in_data_dir(tmp_path / "data")
    store.insert("800000001", "hash", arch="x86_64", release="testos-1-x86_64")
    # No live worker holds testos-1-x86_64: this one takes it (and fails with a reason).
    assert worker._holds_release(store, "800000001")
    store.beat("elsewhere", arches=("x86_64",), releases=("testos-1-x86_64",))
    assert not worker._holds_release(store, "800000001")
    queue = JobQueue(config_factory(data).queue, tmp_path / "data")
    assert queue.waiting(["x86_64"]) == {"800000001"}  # back in its queue, for the holder
    store.insert("800000002", "hash", arch="x86_64", release="testos-1-aarch64")
    assert worker._holds_release(store, "800000002")  # its mirror is here


def test_a_remote_workers_log_reaches_the_front_end_at_each_stage(
    front: Served, config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    task_id, password = create_task(front.url)
    store = SqliteTaskStore.in_data_dir(tmp_path / "data")  # the front end's
    owner = "host-b/1/1"
    assert store.claim(task_id, 60, owner=owner) is not None
    remote = FrontEnd(front.url, TOKEN)
    worker_config = config_factory(settings_mapping(tmp_path / "worker"))
    spool = Spool.in_data_dir(worker_config.data_dir, worker_config.server)
    remote.fetch(task_id, spool.problem_dir(task_id))
    observer = TaskObserver(store, spool, task_id, remote, owner)

    observer.log("inspecting the core: 0.20 s")
    observer.stage(Stage.PREPARING)

    # Still running, and the front end's log (which its task pages show live) already
    # has the worker's lines; /log itself answers once the task has finished.
    assert store.get(task_id).state is TaskState.RUNNING
    assert store.get(task_id).stage is Stage.PREPARING
    front_log = tmp_path / "data" / "spool" / "tasks" / task_id / "log"
    assert front_log.read_text() == "inspecting the core: 0.20 s\n"
    assert get(front.url, f"/{task_id}/log", password).status_code == 404
