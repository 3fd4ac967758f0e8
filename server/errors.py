"""Errors raised by the HTTP interface, the task store and the configuration loader,
and the HTTP status each stands for (:func:`status_of`).

Nothing here imports Flask: the task store and the configuration loader raise these
too. :mod:`retracer.server.error_replies` turns them into responses.

Exception tree::

    ServerError                  base; ``reason`` is one sentence a person can act on
    ├── ConfigError              the configuration file is missing, malformed or invalid
    ├── ServerBusy               503: as many tasks are running, queued or uploading as allowed
    ├── UploadSlotsBusy          503: every upload slot stayed busy while this upload waited
    ├── StoreUnavailable         503: the task store (SQLite or PostgreSQL) failed or is unreachable
    ├── QueueUnavailable         503: the queue (Redis or SQLite) failed or is unreachable
    ├── TooManyCreates           429: this client address created too many tasks recently
    ├── TooManyUploads           429: this client address has too many uploads in progress
    ├── MethodNotAllowed         405: the path exists but not for this method
    ├── UnsupportedMediaType     415: the Content-Type is not a supported archive type
    ├── LengthRequired           411: /create needs a Content-Length
    ├── UploadTooLarge           413: the packed or unpacked archive exceeds its cap
    ├── InsufficientStorage      507: storing the upload would leave too little free space
    ├── UploadRejected           403: the upload cannot be accepted as a problem directory
    │   ├── ArchiveRejected      a member is unsafe, unknown, duplicated, oversize or missing
    │   ├── TaskTypeRejected     the X-Task-Type is not a coredump task
    │   └── CrashRejected        the files are not a crash this server retraces (bad core,
    │                            unknown release or architecture, garbled text file)
    ├── UploadIncomplete         400: the client sent fewer bytes than its Content-Length
    ├── UploadStalled            408: the client stopped sending its body
    ├── UnpackFailed             400: the archive is corrupt, truncated or not an archive
    ├── TaskNotFound             404: no task has this id
    ├── ResultNotReady           404: the backtrace or log does not exist (yet)
    ├── NoExploitableInfo        404: the client's "no exploitable information"
    ├── PackageUnknown           404: /checkpackage knows no such package
    ├── PasswordRefused          403: the password is missing, wrong or already used
    ├── TooManyAttempts          429: too many wrong passwords from this client recently
    ├── FormRefused              403: a web form came without its CSRF token
    ├── NoFileChosen             400: the upload form came without an archive
    ├── TaskSealed               a finished task's files were about to change
    ├── WorkerRefused            401: a remote worker's token is missing or wrong
    ├── ResultRejected           400: a worker's result arrived cut off, altered or misnamed
    └── NotTheOwner              409: the task is no longer held by the worker that reports

Errors of the other packages (``BuilderError``, ``SyncError``) carry a ``reason`` of the
same shape; :func:`status_of` maps them to HTTP too. The archive's own refusals
(:class:`~retracer.builder.errors.ArchiveError`) reach HTTP clients as the server's
ArchiveRejected, UploadTooLarge and UnpackFailed (:func:`upload_refusal`).
"""

from __future__ import annotations

from pathlib import Path

from retracer.builder.errors import (
    ArchiveError,
    ArchiveTooLarge,
    ArchiveUnreadable,
    BuilderError,
    MemberRejected,
)
from retracer.sync.errors import SyncError, UnknownRelease


class ServerError(Exception):
    """Base of every error raised by ``retracer.server``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(ServerError):
    def __init__(self, file: Path | str, key: str | None, why: str) -> None:
        self.file = str(file)
        self.key = key
        where = f"{self.file}: key {key!r}" if key else self.file
        super().__init__(f"Configuration error in {where}: {why}.")


class ServerBusy(ServerError):
    def __init__(self, active: int, limit: int) -> None:
        self.active = active
        self.limit = limit
        super().__init__(
            f"The server is full ({active} of {limit} tasks running or queued); try again later."
        )


class UploadSlotsBusy(ServerError):
    def __init__(self, slots: int, waited: float) -> None:
        self.slots = slots
        super().__init__(
            f"All {slots} upload slots stayed busy for {waited:g} s; try again in a minute."
        )


class StoreUnavailable(ServerError):
    """``detail`` is the driver's own message, for logs."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__("The task store is unavailable; try again in a minute.")


class QueueUnavailable(ServerError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__("The task queue is unavailable; try again in a minute.")


class TooManyCreates(ServerError):
    def __init__(self, allowed: int, window: float, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"This address created {allowed} tasks in the last {window:g} s, the most allowed;"
            f" try again in {retry_after:.0f} s."
        )


class TooManyUploads(ServerError):
    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        super().__init__(
            f"This address already has {allowed} uploads in progress, the most allowed;"
            " wait for one to finish."
        )


class MethodNotAllowed(ServerError):
    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed
        super().__init__(f"The method {method} is not allowed here; use {', '.join(allowed)}.")


class UnsupportedMediaType(ServerError):
    def __init__(self, content_type: str, supported: tuple[str, ...]) -> None:
        self.content_type = content_type
        shown = content_type or "no Content-Type"
        super().__init__(
            f"The Content-Type {shown!r} is not supported; send one of {', '.join(supported)}."
        )


class LengthRequired(ServerError):
    def __init__(self) -> None:
        super().__init__("The upload needs a Content-Length header (chunked bodies are refused).")


class UploadTooLarge(ServerError):
    def __init__(self, what: str, limit_mib: int) -> None:
        self.what = what
        self.limit_mib = limit_mib
        super().__init__(f"The {what} archive is larger than this server's {limit_mib} MiB limit.")


class InsufficientStorage(ServerError):
    def __init__(self) -> None:
        super().__init__("The server does not have enough free disk space to store this upload.")


class UploadRejected(ServerError):
    """The upload is not an acceptable problem directory (HTTP 403)."""


class ArchiveRejected(UploadRejected):
    """The problem format refused a member; its sentence is the reason."""

    def __init__(self, refused: MemberRejected) -> None:
        self.member = refused.member
        super().__init__(refused.reason)


class TaskTypeRejected(UploadRejected):
    def __init__(self, task_type: str) -> None:
        self.task_type = task_type
        super().__init__(
            f"This server retraces only coredumps (X-Task-Type 0), not X-Task-Type {task_type!r}."
        )


class CrashRejected(UploadRejected):
    """The analyzer's own check refused the unpacked files; its sentence is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class UploadStalled(ServerError):
    def __init__(self, received: int, expected: int, seconds: float) -> None:
        self.received = received
        self.expected = expected
        super().__init__(
            f"The upload stalled: nothing arrived for {seconds:g} s after {received} of"
            f" {expected} bytes."
        )


class UploadIncomplete(ServerError):
    def __init__(self, received: int, expected: int) -> None:
        self.received = received
        self.expected = expected
        super().__init__(
            f"The upload ended after {received} of the {expected} bytes its Content-Length"
            " announced."
        )


class UnpackFailed(ServerError):
    """The archive cannot be read; the problem format's sentence is the reason."""

    def __init__(self, refused: ArchiveUnreadable) -> None:
        super().__init__(refused.reason)


class TaskNotFound(ServerError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"There is no task {task_id!r} on this server.")


class ResultNotReady(ServerError):
    def __init__(self, task_id: str, what: str, why: str) -> None:
        self.task_id = task_id
        self.what = what
        super().__init__(f"The {what} of task {task_id} is not available: {why}.")


class NoExploitableInfo(ServerError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"There is no exploitability information for task {task_id}.")


class PackageUnknown(ServerError):
    def __init__(self, nvr: str, arch: str) -> None:
        self.nvr = nvr
        self.arch = arch
        super().__init__(f"The package {nvr}.{arch} is not in this server's repositories.")


class PasswordRefused(ServerError):
    """HTTP 403: the ``why`` is the sentence, e.g. the password-rotation hint."""

    def __init__(self, why: str) -> None:
        super().__init__(why)


class TooManyAttempts(ServerError):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            "Too many wrong passwords or unknown task ids from this address;"
            f" try again in {retry_after:.0f} s."
        )


class FormRefused(ServerError):
    def __init__(self) -> None:
        super().__init__("This form has expired or came from another site; reload the page.")


class NoFileChosen(ServerError):
    def __init__(self) -> None:
        super().__init__("Choose a problem directory archive (.tar.xz) to upload.")


class TaskSealed(ServerError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"Task {task_id} has finished; its files are read-only.")


class WorkerRefused(ServerError):
    def __init__(self) -> None:
        super().__init__("This endpoint is for retrace workers; the worker token is wrong.")


class ResultRejected(ServerError):
    pass


class NotTheOwner(ServerError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"Task {task_id} is no longer held by this worker.")


_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (ServerBusy, 503),
    (UploadSlotsBusy, 503),
    (StoreUnavailable, 503),
    (QueueUnavailable, 503),
    (TooManyCreates, 429),
    (TooManyUploads, 429),
    (MethodNotAllowed, 405),
    (UnsupportedMediaType, 415),
    (LengthRequired, 411),
    (UploadTooLarge, 413),
    (InsufficientStorage, 507),
    (UploadRejected, 403),
    (UploadIncomplete, 400),
    (UploadStalled, 408),
    (UnpackFailed, 400),
    (TaskNotFound, 404),
    (ResultNotReady, 404),
    (NoExploitableInfo, 404),
    (PackageUnknown, 404),
    (PasswordRefused, 403),
    (TooManyAttempts, 429),
    (FormRefused, 403),
    (NoFileChosen, 400),
    (MemberRejected, 403),
    (ArchiveTooLarge, 413),
    (ArchiveError, 400),
    (UnknownRelease, 404),
    (WorkerRefused, 401),
    (ResultRejected, 400),
    (NotTheOwner, 409),
    (SyncError, 503),
    (BuilderError, 503),
    (ServerError, 500),
)


def status_of(error: Exception) -> int:
    """The HTTP status for an error of any retracer package."""
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def upload_refusal(error: ArchiveError) -> ServerError:
    """The server's error for an archive the problem format refused (same sentence)."""
    if isinstance(error, MemberRejected):
        return ArchiveRejected(error)
    if isinstance(error, ArchiveTooLarge):
        return UploadTooLarge("unpacked", error.limit_mib)
    if isinstance(error, ArchiveUnreadable):
        return UnpackFailed(error)
    raise TypeError(f"no server error for {type(error).__name__}")
