"""``retracer submit``: a plain HTTP client of the retrace protocol, like abrt-retrace-client.

It imports nothing from the server: it speaks only the retrace protocol, as
abrt-retrace-client does, and takes the member names from the problem format. A
problem directory is packed the way ABRT packs it (a tar of bare names, compressed
with ``xz -2``), uploaded as a stream with a known Content-Length, and then, with ``wait``, polled
until it finishes. Whatever password the server hands back is the one used next,
so both protocol profiles work.
"""

from __future__ import annotations

import lzma
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import requests

from retracer.builder.problem_format import PACKED_IF_PRESENT, PACKED_MEMBERS

CONTENT_TYPE = "application/x-xz-compressed-tar"
POLL_SECONDS = 2.0
TIMEOUT = (10.0, 60.0)  # connect, read: the ABRT client gives up on a silent server after 60 s


class SubmitError(Exception):
    """A submission failed; ``reason`` is one sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SubmitTimedOut(SubmitError):
    """``wait`` gave up: the task had not finished after ``timeout`` seconds."""

    def __init__(self, task_id: str, timeout: float) -> None:
        self.task_id = task_id
        self.timeout = timeout
        super().__init__(f"Task {task_id} did not finish within {timeout:g} s.")


@dataclass
class TaskHandle:
    """A created task; ``password`` follows the server's rotation."""

    task_id: str
    password: str


@dataclass(frozen=True)
class Outcome:
    status: str  # FINISHED_SUCCESS or FINISHED_FAILURE
    backtrace: str | None
    log: str


@dataclass
class RetraceClient:
    server: str
    session: requests.Session = field(default_factory=requests.Session)

    def create(self, archive: Path, progress: Callable[[int], None] | None = None) -> TaskHandle:
        """Upload an archive; ``progress(n)`` is called for every ``n`` bytes sent."""
        size = archive.stat().st_size
        with archive.open("rb") as file:
            body = _CountingFile(file, size, progress or (lambda n: None))
            response = self.session.post(
                f"{self.server}/create",
                data=body,
                headers={"Content-Type": CONTENT_TYPE, "X-Task-Type": "0"},
                timeout=TIMEOUT,
            )
        if response.status_code != 201:
            raise SubmitError(_refusal("upload", response))
        return TaskHandle(response.headers["X-Task-Id"], response.headers["X-Task-Password"])

    def status(self, task: TaskHandle) -> tuple[str, str]:
        """The ``X-Task-Status`` and the stage (or status message) of a task."""
        response = self._get(task, "")
        stage = response.headers.get("X-Task-Stage") or response.text.strip()
        return response.headers["X-Task-Status"], stage

    def document(self, task: TaskHandle, name: str) -> str:
        return self._get(task, f"/{name}").text

    def wait(
        self,
        task: TaskHandle,
        timeout: float,
        on_stage: Callable[[str], None] | None = None,
    ) -> Outcome:
        """Poll until the task finishes.

        Raises:
            SubmitTimedOut: it had not finished after ``timeout`` seconds.
            SubmitError: the server refused a request.
        """
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            status, stage = self.status(task)
            if stage != last and on_stage is not None:
                on_stage(stage)
            last = stage
            if status.startswith("FINISHED"):
                break
            if time.monotonic() > deadline:
                raise SubmitTimedOut(task.task_id, timeout)
            time.sleep(POLL_SECONDS)
        backtrace = self.document(task, "backtrace") if status == "FINISHED_SUCCESS" else None
        return Outcome(status, backtrace, self.document(task, "log"))

    def _get(self, task: TaskHandle, suffix: str) -> requests.Response:
        response = self.session.get(
            f"{self.server}/{task.task_id}{suffix}",
            headers={"X-Task-Password": task.password},
            timeout=TIMEOUT,
        )
        task.password = response.headers.get("X-Task-Password", task.password)
        if response.status_code != 200:
            raise SubmitError(_refusal(f"request for task {task.task_id}{suffix}", response))
        return response


@contextmanager
def archive_for(path: Path) -> Iterator[Path]:
    """``path`` itself if it is an archive, else a temporary ABRT-style archive of it."""
    if path.is_file():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="retracer-submit-") as scratch:
        archive = Path(scratch) / "problem.tar.xz"
        pack_problem_dir(path, archive)
        yield archive


def pack_problem_dir(problem_dir: Path, target: Path) -> None:
    """``tar`` of the bare problem file names, ``xz -2`` compressed, as ABRT does it."""
    missing = [name for name in PACKED_MEMBERS if not (problem_dir / name).is_file()]
    if missing:
        raise SubmitError(f"The problem directory {problem_dir} lacks {', '.join(missing)}.")
    present = [n for n in PACKED_IF_PRESENT if (problem_dir / n).is_file()]
    with (
        lzma.open(target, "wb", preset=2) as packed,
        tarfile.open(fileobj=packed, mode="w|", format=tarfile.GNU_FORMAT) as archive,
    ):
        for name in (*PACKED_MEMBERS, *present):
            info = archive.gettarinfo(str(problem_dir / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with (problem_dir / name).open("rb") as file:
                archive.addfile(info, file)


class _CountingFile:
    """A file for requests to stream: it has a length, so no chunked encoding."""

    def __init__(self, file: BinaryIO, size: int, progress: Callable[[int], None]) -> None:
        self._file = file
        self._size = size
        self._progress = progress

    def __len__(self) -> int:
        return self._size

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(max(size, 1 << 16))
        self._progress(len(data))
        return data


def _refusal(what: str, response: requests.Response) -> str:
    body = response.text.strip() or response.reason
    return f"The server refused the {what} with HTTP {response.status_code}: {body}"
