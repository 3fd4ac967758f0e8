"""The queue and the worker, as processes: ``retracer serve`` spawns ``retracer worker``.

The builder points at a podman socket that does not exist, so the real analyzer
fails fast with its own reason: a true failure path, with nothing mocked.
"""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path

import pytest
import requests

from retracer.server.config import config_from_mapping
from retracer.server.errors import TaskSealed
from retracer.server.jobs import JobQueue
from retracer.server.spool import Spool
from retracer.server.tasks import SqliteTaskStore, TaskState
from retracer.server.worker import Worker
from testing.podman_service import PodmanService
from testing.server.live import ServeFactory, settings_mapping
from tests.server.client import create_task, get, wait_finished


def no_podman(tmp_path: Path) -> str:
    return (
        f"The podman service at unix://{tmp_path}/no-podman.sock cannot be reached:"
        " No such file or directory."
    )


def wait_for_line(file: Path, text: str, timeout: float = 30) -> None:
    """Wait until ``text`` appears in a log file (polling, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if file.exists() and text in file.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear in {file} within {timeout} s")


@pytest.fixture(params=["sqlite", "redis"])
def queue_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "redis":
        return {"backend": "redis", "redis_url": request.getfixturevalue("redis_url")}
    return {"backend": "sqlite"}


def test_a_failing_retrace_reports_the_analyzers_reason(
    serve_process: ServeFactory, tmp_path: Path, queue_settings: dict[str, str]
) -> None:
    data = {**settings_mapping(tmp_path), "queue": queue_settings}
    url = serve_process(data).start()
    task_id, password = create_task(url)
    status, password = wait_finished(url, task_id, password)
    assert status == "FINISHED_FAILURE"

    backtrace = get(url, f"/{task_id}/backtrace", password)
    assert backtrace.status_code == 404
    reason = no_podman(tmp_path)
    assert backtrace.text == (
        f"The backtrace of task {task_id} is not available: the retrace failed ({reason[:-1]}).\n"
    )
    log = get(url, f"/{task_id}/log", backtrace.headers["X-Task-Password"])
    assert log.status_code == 200
    assert log.text.endswith(f"Retrace failed: {reason}\n")

    crash = tmp_path / "data" / "spool" / "tasks" / task_id / "crash"
    assert not (crash / "coredump").exists()  # deleted after the retrace (keep_core: false)
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'retracer_tasks_finished_total{result="failure"} 1.0' in metrics


def test_abrt_profile_says_retrace_job_failed(serve_process: ServeFactory, tmp_path: Path) -> None:
    data = settings_mapping(tmp_path, protocol_profile="abrt", keep_core=True)
    url = serve_process(data).start()
    task_id, password = create_task(url)
    status, _ = wait_finished(url, task_id, password)
    answer = get(url, f"/{task_id}", password)
    assert (status, answer.text) == ("FINISHED_FAILURE", "Retrace job failed")
    assert (tmp_path / "data" / "spool" / "tasks" / task_id / "crash" / "coredump").exists()


def test_accepted_tasks_survive_kill_9_and_complete_after_restart(
    serve_process: ServeFactory, tmp_path: Path, queue_settings: dict[str, str]
) -> None:
    data = {**settings_mapping(tmp_path), "queue": queue_settings}
    server = serve_process(data)
    url = server.start("--no-worker")
    tasks = [create_task(url) for _ in range(3)]
    server.kill()

    url = server.start()
    for task_id, password in tasks:
        status, _ = wait_finished(url, task_id, password)
        assert status == "FINISHED_FAILURE"


def test_a_task_whose_worker_died_is_run_again(serve_process: ServeFactory, tmp_path: Path) -> None:
    data = settings_mapping(tmp_path, task_lease_seconds=1)
    server = serve_process(data)
    url = server.start("--no-worker")
    task_id, password = create_task(url)
    server.kill()
    # A worker took the task and died: RUNNING, with a lease nobody renews.
    store = SqliteTaskStore.in_data_dir(tmp_path / "data")
    # Claimed a minute ago with a one-second lease: it ran out long since.
    assert store.claim(task_id, lease_seconds=1, now=time.time() - 60) is not None

    url = server.start()
    status, _ = wait_finished(url, task_id, password)
    assert status == "FINISHED_FAILURE"
    assert store.get(task_id).attempts == 2


def test_finished_tasks_are_read_only(serve_process: ServeFactory, tmp_path: Path) -> None:
    data = settings_mapping(tmp_path)
    server = serve_process(data)
    url = server.start()
    task_id, password = create_task(url)
    wait_finished(url, task_id, password)
    config = config_from_mapping(data, tmp_path)
    folder = tmp_path / "data" / "spool" / "tasks" / task_id
    before = {p: (p.stat().st_mtime_ns, p.stat().st_mode) for p in folder.rglob("*")}
    assert all(
        not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) for _, mode in before.values()
    )

    spool = Spool.in_data_dir(config.data_dir, config.server)
    with pytest.raises(TaskSealed, match=f"Task {task_id} has finished; its files are read-only."):
        spool.append_log(task_id, "one more line")
    store = SqliteTaskStore.in_data_dir(config.data_dir)
    assert store.finish(task_id, True, None) is False
    # The queue delivers the same id again (a lost-message recovery, say): nothing changes.
    JobQueue(config.queue, config.data_dir).put(task_id)
    wait_for_line(server.log_file, f"task {task_id} is finished or held by another worker")
    assert store.get(task_id).state is TaskState.FINISHED_FAILURE
    assert {p: (p.stat().st_mtime_ns, p.stat().st_mode) for p in folder.rglob("*")} == before


def test_housekeeping_expires_old_tasks_and_orphans(
    serve_process: ServeFactory,
    tmp_path: Path,
    podman_service: PodmanService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = settings_mapping(
        tmp_path, podman_url=podman_service.url, finished_task_max_age_hours=0.0001
    )
    url = serve_process(data).start()
    finished, password = create_task(url)
    wait_finished(url, finished, password)
    config = config_from_mapping(data, tmp_path)
    orphan = tmp_path / "data" / "spool" / "tasks" / "555555555"
    orphan.mkdir()

    with caplog.at_level(logging.WARNING):
        # An hour on: the finished task is past its age (0.36 s).
        Worker(config).housekeeping(now=time.time() + 3600)
    assert not caplog.records, "housekeeping reached podman and cleaned up without a warning"
    assert get(url, f"/{finished}", password).status_code == 404
    assert not (tmp_path / "data" / "spool" / "tasks" / finished).exists()
    assert not orphan.exists()
