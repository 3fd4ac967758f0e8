"""``retracer submit``: packs like ABRT, uploads, follows password rotation, reports."""

from __future__ import annotations

import lzma
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests

from retracer.server.submit import SubmitError, pack_problem_dir
from testing.server.archives import PROBLEM
from testing.server.live import Served, ServeFactory, settings_mapping


@pytest.fixture
def problem_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "problem"
    folder.mkdir()
    for name, data in {**PROBLEM, "architecture": b"x86_64", "os_info": b"ID=testos"}.items():
        (folder / name).write_bytes(data)
    return folder


def submit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retracer.server.cli", "submit", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_archive_is_a_tar_of_bare_names_compressed_with_xz(
    problem_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "problem.tar.xz"
    pack_problem_dir(problem_dir, target)
    assert target.read_bytes().startswith(b"\xfd7zXZ\x00")
    with lzma.open(target) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive}  # type: ignore[union-attr]
    assert members == PROBLEM  # architecture and os_info stay home, as with ABRT


def test_a_problem_dir_without_a_core_is_refused_locally(problem_dir: Path, tmp_path: Path) -> None:
    (problem_dir / "coredump").unlink()
    with pytest.raises(SubmitError, match=r"problem lacks coredump\.$"):
        pack_problem_dir(problem_dir, tmp_path / "x.tar.xz")


def test_submit_prints_the_task_credentials(served: Served, problem_dir: Path) -> None:
    run = submit(str(problem_dir), "--server", served.url)
    assert run.returncode == 0, run.stderr
    found = re.fullmatch(r"task (\d+) password (\S+)\n", run.stderr)
    assert found, run.stderr
    task_id, password = found.groups()
    # The printed credentials are the task's: they open it on the server.
    status = requests.get(
        f"{served.url}/{task_id}", headers={"X-Task-Password": password}, timeout=10
    )
    assert status.status_code == 200, status.text
    assert status.headers["X-Task-Status"] == "PENDING"


def test_submit_wait_exits_3_when_the_task_does_not_finish_in_time(
    served: Served, problem_dir: Path
) -> None:
    # No worker runs beside this server: the task stays queued.
    run = submit(str(problem_dir), "--server", served.url, "--wait", "--timeout", "0")
    assert run.returncode == 3, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"retracer: Task \d+ did not finish within 0 s\.", last), last


def test_submit_wait_reports_a_failure_with_its_reason(
    serve_process: ServeFactory, tmp_path: Path, problem_dir: Path
) -> None:
    url = serve_process(settings_mapping(tmp_path)).start()
    run = submit(str(problem_dir), "--server", url, "--wait", "--timeout", "60")
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.endswith(
        f"Retrace failed: The podman service at unix://{tmp_path}/no-podman.sock cannot be"
        " reached: No such file or directory."
    )


def test_submit_reports_a_refusal_in_one_line(served: Served, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar.xz"
    bogus.write_bytes(b"not an archive" * 100)
    run = submit(str(bogus), "--server", served.url)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "retracer: The server refused the upload with HTTP 400: The archive cannot be unpacked:"
        " the upload is not xz, gzip or tar data."
    )
