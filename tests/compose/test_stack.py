"""compose.yaml under podman-compose: a crash goes in over HTTP, its backtrace comes out.

The tests share one stack (see conftest.py) and run in file order; the last one
takes the stack down.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from retracer.server.submit import RetraceClient, SubmitError
from testing.testos import Testos
from testing.testos.problem import write_archive
from tests.compose.stack import Stack

pytestmark = [
    pytest.mark.compose,
    pytest.mark.skipif(shutil.which("podman-compose") is None, reason="needs podman-compose"),
]

ANALYZING = "Analyzing crash data"


def test_the_demo_crash_is_retraced(stack: Stack, testos: Testos) -> None:
    crash = testos.crashes["crasher"]
    client = RetraceClient(stack.url)  # the `retracer submit` client: follows rotation
    task = client.create(crash.archive)
    outcome = client.wait(task, timeout=300)
    assert outcome.status == "FINISHED_SUCCESS", f"{outcome.log}\n{stack.logs('worker')}"
    assert outcome.backtrace is not None
    assert crash.crash_function in outcome.backtrace  # crash_v20_walk_list
    assert crash.newer_function not in outcome.backtrace


def test_a_task_survives_a_worker_restart(stack: Stack, testos: Testos, tmp_path: Path) -> None:
    # Without its base image the worker bootstraps one first (about 15 s), which
    # leaves plenty of time to restart it in the middle of the task.
    for image in stack.retrace_images():
        subprocess.run(["podman", "rmi", image], capture_output=True, check=True)
    crash = testos.crashes["crasher"]
    # Another core of the same crash (a byte appended): the first test's core would
    # reuse that task's result at once.
    problem = tmp_path / "problem"
    shutil.copytree(crash.problem_dir, problem)
    with (problem / "coredump").open("ab") as core:
        core.write(b"\0")
    write_archive(problem, tmp_path / "crasher.tar.xz")
    client = RetraceClient(stack.url)
    task = client.create(tmp_path / "crasher.tar.xz")
    deadline = time.monotonic() + 120
    while True:
        status, stage = client.status(task)
        if stage == ANALYZING:
            break
        assert status == "PENDING", f"finished before the restart: {status} {stage}"
        assert time.monotonic() < deadline, f"the worker never started the task: {stage}"
        time.sleep(0.2)

    stack.compose("restart", "worker")

    # The dead worker's lease runs out and housekeeping (every minute) queues the task again.
    try:
        outcome = client.wait(task, timeout=300)
    except SubmitError as error:
        raise AssertionError(f"{error.reason}\n{stack.logs('worker')}") from error
    assert outcome.status == "FINISHED_SUCCESS", f"{outcome.log}\n{stack.logs('worker')}"
    assert outcome.log.count(ANALYZING) == 2, outcome.log  # the restart cut the first attempt short
    assert outcome.backtrace is not None
    assert crash.crash_function in outcome.backtrace


def test_down_leaves_no_retrace_containers(stack: Stack) -> None:
    stack.compose("down")
    assert stack.containers() == []
    assert stack.retrace_containers() == []
