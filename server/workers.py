"""The endpoints remote workers call: a worker host that shares no disk with the front
end downloads a task's problem files here and hands back its results and log.

Every request carries ``Authorization: Bearer <worker.token>``; without a token in
the configuration the endpoints do not exist. Files travel streamed, each with its
SHA-256 (in the listing going out, in ``X-Content-SHA256`` coming in), and a result
whose bytes do not match is refused, so a cut connection never leaves half a file.

    GET  /internal/tasks/<id>/files          {"files": [{"name", "size", "sha256"}]}
    GET  /internal/tasks/<id>/files/<name>   the file's bytes
    PUT  /internal/tasks/<id>/results/<name> one result file (or ``log``)
    POST /internal/tasks/<id>/finish         {"owner", "success", "reason"}: seal, record

Finishing happens here, on the host of the spool, in one request: the outcome is
written, the core removed (unless ``keep_core``), the folder sealed and the task
marked finished for its owner. A worker that dies before that leaves the task to its
lease, and the next worker downloads the same files again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, Flask, Response, current_app, request

from retracer.server.config import Config
from retracer.server.errors import NotTheOwner, ResultNotReady, ResultRejected, WorkerRefused
from retracer.server.spool import Spool
from retracer.server.tasks import TaskStore

log = logging.getLogger(__name__)

bp = Blueprint("workers", __name__, url_prefix="/internal")
CHUNK = 1 << 20
# What a worker may hand back: the results, the log and the saved outcome.
ACCEPTED = frozenset({"backtrace", "backtrace.json", "core_backtrace", "exploitable", "log"})
OUTCOME = "outcome.json"


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str


class WorkerDesk:
    """What the endpoints do, apart from HTTP: the spool and store side of each."""

    def __init__(
        self,
        config: Config,
        store: TaskStore,
        spool: Spool,
        offload: Callable[[Callable[[], Any]], Any],
    ) -> None:
        self._config = config
        self._store = store
        self._spool = spool
        self._offload = offload

    def listing(self, task_id: str) -> list[FileEntry]:
        folder = self._folder(task_id)

        def entries() -> list[FileEntry]:
            paths = sorted(folder.iterdir())
            return [_entry(path) for path in paths if path.is_file() and not path.is_symlink()]

        return list(self._offload(entries))

    def open(self, task_id: str, name: str) -> IO[bytes]:
        path = self._folder(task_id) / name
        if "/" in name or name.startswith(".") or not path.is_file() or path.is_symlink():
            raise ResultNotReady(task_id, name, "the task has no such problem file")
        return path.open("rb")

    def receive(
        self, task_id: str, owner: str, name: str, body: IO[bytes], sha256: str | None
    ) -> None:
        """Store one result of the task ``owner`` holds, if its bytes match the checksum
        it was sent with."""
        if name not in ACCEPTED:
            raise ResultRejected(f"{name!r} is not a result a worker may upload.")
        self._require_owner(task_id, owner)
        digest = hashlib.sha256()
        parts = []
        while chunk := body.read(CHUNK):
            digest.update(chunk)
            parts.append(chunk)
        if sha256 is None or not hmac.compare_digest(digest.hexdigest(), sha256.lower()):
            raise ResultRejected(f"The result {name!r} did not match its SHA-256; send it again.")
        text = b"".join(parts).decode(errors="replace")
        self._offload(lambda: self._spool.write_result(task_id, name, text))

    def finish(self, task_id: str, owner: str, success: bool, reason: str | None) -> None:
        """Seal the folder and record the outcome, for the worker holding the task."""
        self._require_owner(task_id, owner)

        def seal() -> None:
            outcome = json.dumps({"success": success, "reason": reason})
            self._spool.write_result(task_id, OUTCOME, outcome)
            if not self._config.server.keep_core:
                self._spool.remove_core(task_id)
            self._spool.seal(task_id)

        if not self._spool.is_sealed(task_id):
            self._offload(seal)
        if not self._store.finish(task_id, success, reason, owner=owner):
            raise NotTheOwner(task_id)
        log.info("task %s finished by a remote worker: %s", task_id, reason or "success")

    def _require_owner(self, task_id: str, owner: str) -> None:
        """Only the worker holding the task's lease may write its results."""
        if self._store.running_owners().get(task_id) != owner:
            self._store.get(task_id)  # TaskNotFound for an unknown id
            raise NotTheOwner(task_id)

    def _folder(self, task_id: str) -> Path:
        self._store.get(task_id)  # TaskNotFound for an unknown id
        folder = self._spool.problem_dir(task_id)
        if not folder.is_dir():
            raise ResultNotReady(task_id, "problem files", "they were removed from the spool")
        return folder


def _entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return FileEntry(path.name, path.stat().st_size, digest.hexdigest())


def init_app(app: Flask, config: Config, desk: WorkerDesk) -> None:
    """Register the endpoints, only when a worker token is configured."""
    if config.worker.token:
        app.extensions["retracer.workers"] = (config.worker.token, desk)
        app.register_blueprint(bp)


def _desk() -> WorkerDesk:
    token, desk = current_app.extensions["retracer.workers"]
    presented = request.headers.get("Authorization", "")
    if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
        raise WorkerRefused()
    return desk


@bp.get("/tasks/<task_id>/files")
def files(task_id: str) -> Response:
    listing = _desk().listing(task_id)
    body = json.dumps({"files": [entry.__dict__ for entry in listing]})
    return Response(body, mimetype="application/json")


@bp.get("/tasks/<task_id>/files/<name>")
def problem_file(task_id: str, name: str) -> Response:
    file = _desk().open(task_id, name)

    def stream() -> Iterator[bytes]:
        with file:
            while chunk := file.read(CHUNK):
                yield chunk

    length = str(Path(file.name).stat().st_size)
    return Response(stream(), mimetype="application/octet-stream",
                    headers={"Content-Length": length})  # fmt: skip


@bp.put("/tasks/<task_id>/results/<name>")
def result(task_id: str, name: str) -> Response:
    _desk().receive(
        task_id,
        request.headers.get("X-Owner", ""),
        name,
        request.stream,
        request.headers.get("X-Content-SHA256"),
    )
    return Response("Stored.\n", status=201, mimetype="text/plain")


@bp.post("/tasks/<task_id>/finish")
def finish(task_id: str) -> Response:
    desk = _desk()
    try:
        data = json.loads(request.get_data() or b"{}")
        owner, success, reason = str(data["owner"]), bool(data["success"]), data.get("reason")
    except (ValueError, KeyError, TypeError) as error:
        raise ResultRejected("The finish request must be JSON with owner and success.") from error
    desk.finish(task_id, owner, success, None if reason is None else str(reason))
    return Response("Finished.\n", mimetype="text/plain")
