"""A front end whose workers are elsewhere (`retracer serve --no-worker`) expires old
tasks itself: no remote worker holds its spool, so nobody else would."""

from __future__ import annotations

from pathlib import Path

import requests

from testing.server.live import ServeFactory, settings_mapping
from tests.server.client import create_task
from tests.server.faults import wait_until


def test_serve_without_a_worker_expires_old_tasks(
    serve_process: ServeFactory, tmp_path: Path
) -> None:
    # Unfinished tasks expire 0.36 s after creation; expiry runs every 0.2 s.
    data = settings_mapping(
        tmp_path, unfinished_task_max_age_hours=0.0001, housekeeping_seconds=0.2
    )
    url = serve_process(data).start("--no-worker")
    task_id, password = create_task(url)
    folder = tmp_path / "data" / "spool" / "tasks" / task_id
    assert folder.is_dir()

    def gone() -> bool:
        answer = requests.get(f"{url}/{task_id}", headers={"X-Task-Password": password}, timeout=5)
        return answer.status_code == 404

    wait_until(gone, 30, "the task's expiry")
    assert not folder.exists()
