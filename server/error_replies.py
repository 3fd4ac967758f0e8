"""The one place where any retracer error becomes an HTTP response: one plain sentence,
with the status :func:`retracer.server.errors.status_of` gives it."""

from __future__ import annotations

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from retracer.builder.errors import BuilderError
from retracer.server.errors import (
    MethodNotAllowed,
    ServerError,
    TooManyAttempts,
    TooManyCreates,
    UploadSlotsBusy,
    UploadStalled,
    status_of,
)
from retracer.sync.errors import SyncError


def init_app(app: Flask) -> None:
    """Register the one handler that turns every error into a plain one-sentence reply."""
    app.register_error_handler(ServerError, _reply)
    app.register_error_handler(BuilderError, _reply)
    app.register_error_handler(SyncError, _reply)
    app.register_error_handler(HTTPException, _reply)


def _reply(error: Exception) -> Response:
    headers: dict[str, str] = {}
    if isinstance(error, HTTPException):
        status = error.code or 500
        reason = f"{error.name}: {_sentence(error.description or '')}"
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    else:
        status = status_of(error)
        reason = getattr(error, "reason", "internal error")
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = ", ".join(error.allowed)
    if isinstance(error, TooManyAttempts | TooManyCreates):
        headers["Retry-After"] = f"{max(1, round(error.retry_after))}"
    if isinstance(error, UploadStalled | UploadSlotsBusy):
        headers["Connection"] = "close"  # the rest of the body will not be read
    return Response(f"{reason}\n", status=status, headers=headers, mimetype="text/plain")


def _sentence(text: str) -> str:
    """Werkzeug's descriptions are sometimes several sentences; keep the first."""
    first = text.split(". ")[0].strip()
    return first if first.endswith(".") else f"{first}."
