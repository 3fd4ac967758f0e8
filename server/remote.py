"""A remote worker's side of the front end's /internal endpoints (:mod:`.workers`).

:class:`FrontEnd` downloads a task's problem files into this host's own spool
(streamed to a temporary name, SHA-256 checked, then renamed into place) and hands
the results, the log and the outcome back. Transport failures raise FrontEndUnreachable;
the worker then leaves the task to its lease, so another attempt (here or elsewhere)
starts over from the front end's files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import requests

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# Connect and read timeouts: a read waits at most this long for the next bytes.
TIMEOUTS = (10.0, 120.0)


class FrontEndUnreachable(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TaskTakenOver(Exception):
    """The task is no longer this worker's (its lease ran out and another took it)."""


class ProblemGone(Exception):
    """The front end no longer has the task's problem files."""


class FrontEnd:
    def __init__(self, url: str, token: str) -> None:
        self._url = url.rstrip("/")
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def fetch(self, task_id: str, folder: Path) -> None:
        """Download the problem files into ``folder`` (made anew).

        Raises:
            ProblemGone: the front end has no such folder (any more).
            FrontEndUnreachable: the transfer failed or a file came altered.
        """
        listing = self._call("GET", f"/internal/tasks/{task_id}/files").json()["files"]
        folder.mkdir(parents=True, exist_ok=True)
        for entry in listing:
            self._download(task_id, entry["name"], entry["sha256"], folder)
        log.info("task %s: %d problem files downloaded", task_id, len(listing))

    def put_result(self, task_id: str, owner: str, name: str, data: bytes) -> None:
        """Hand back one result file of the task ``owner`` holds.

        Raises:
            TaskTakenOver: ``owner`` no longer holds the task.
            FrontEndUnreachable: the transfer failed.
        """
        self._call(
            "PUT",
            f"/internal/tasks/{task_id}/results/{name}",
            data=data,
            headers={"X-Content-SHA256": hashlib.sha256(data).hexdigest(), "X-Owner": owner},
        )

    def finish(self, task_id: str, owner: str, success: bool, reason: str | None) -> None:
        """Have the front end seal and record the task (same errors as put_result)."""
        body = {"owner": owner, "success": success, "reason": reason}
        self._call("POST", f"/internal/tasks/{task_id}/finish", json=body)

    def _download(self, task_id: str, name: str, sha256: str, folder: Path) -> None:
        if "/" in name or name.startswith("."):
            raise FrontEndUnreachable(f"the front end listed a bad file name {name!r}")
        temporary = folder / f".{name}.part"
        digest = hashlib.sha256()
        response = self._call("GET", f"/internal/tasks/{task_id}/files/{name}", stream=True)
        try:
            with temporary.open("wb") as file:
                for chunk in response.iter_content(CHUNK):
                    digest.update(chunk)
                    file.write(chunk)
                file.flush()
                os.fsync(file.fileno())
        except requests.RequestException as error:
            temporary.unlink(missing_ok=True)
            raise FrontEndUnreachable(f"{name} was cut off: {error}") from error
        finally:
            response.close()
        if digest.hexdigest() != sha256:
            temporary.unlink(missing_ok=True)
            raise FrontEndUnreachable(f"{name} did not match its SHA-256")
        temporary.rename(folder / name)

    def _call(self, method: str, path: str, **kwargs: object) -> requests.Response:
        try:
            response = self._session.request(method, self._url + path, timeout=TIMEOUTS,
                                             **kwargs)  # type: ignore[arg-type]  # fmt: skip
        except requests.RequestException as error:
            raise FrontEndUnreachable(str(error)) from error
        if response.status_code == 404 and "/files" in path:
            raise ProblemGone(response.text.strip())
        if response.status_code == 409:
            raise TaskTakenOver(response.text.strip())
        if response.status_code >= 400:
            raise FrontEndUnreachable(f"{response.status_code} {response.text.strip()}")
        return response
