"""The ABRT retrace protocol: one blueprint, one small view per endpoint.

The endpoints are those abrt-retrace-client uses (listed in the README under
"Commands"); tests/server/test_protocol.py pins the wire contract.

Views parse the request, call one :class:`~retracer.server.service.RetraceService`
method and shape the response; errors propagate to the handler in
:mod:`retracer.server.error_replies`. Authenticated views get their task from
:func:`authenticated`, which also attaches the next password (seed profile) to
whatever response follows, errors included.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import Blueprint, Response, current_app, g, request

from retracer.server.auth import PASSWORD_HEADER
from retracer.server.clients import client_address
from retracer.server.service import RetraceService
from retracer.server.spool import Upload
from retracer.server.tasks import Task

bp = Blueprint("api", __name__)

TASK = "/<task_id>"
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def service() -> RetraceService:
    result: RetraceService = current_app.extensions["retracer"]
    return result


def client() -> str:
    """The requesting client's address (see :mod:`retracer.server.clients`)."""
    return client_address(
        request.remote_addr, request.headers.get("X-Forwarded-For"), service().trusted_proxies
    )


def text(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, headers=headers, mimetype="text/plain")


def authenticated(view: Callable[[Task], Response]) -> Callable[[str], Response]:
    """Check the task's password and pass the Task to ``view`` instead of its id."""

    @functools.wraps(view)
    def wrapper(task_id: str) -> Response:
        access = service().authenticate(task_id, request.headers.get(PASSWORD_HEADER), client())
        g.next_password = access.next_password
        return view(access.task)

    return wrapper


@bp.after_request
def hand_over_next_password(response: Response) -> Response:
    next_password = g.pop("next_password", None)
    if next_password:
        response.headers[PASSWORD_HEADER] = next_password
    return response


@bp.get("/settings")
def settings() -> Response:
    capacity = service().capacity()
    lines = [
        f"running_tasks {capacity.running_tasks}",
        f"max_running_tasks {capacity.max_running_tasks}",
        f"max_packed_size {capacity.max_packed_size}",
        f"max_unpacked_size {capacity.max_unpacked_size}",
        f"supported_formats {' '.join(capacity.supported_formats)}",
        f"supported_releases {' '.join(capacity.supported_releases)}",
    ]
    if capacity.workers_per_arch:
        lines.append(f"workers_alive {_pairs(capacity.workers_per_arch)}")
    if capacity.workers_per_release:
        lines.append(f"workers_releases {_pairs(capacity.workers_per_release)}")
    return text("".join(f"{line}\n" for line in lines))


def _pairs(counts: tuple[tuple[str, int], ...]) -> str:
    """``x86_64:2 i386:2``: one word per name, so the line stays one ``key value``."""
    return " ".join(f"{name}:{count}" for name, count in counts)


@bp.get("/checkpackage")
def checkpackage() -> Response:
    service().check_package(
        request.headers.get("X-Package-NVR", ""),
        request.headers.get("X-Package-Arch", ""),
        request.headers.get("X-OS-Release") or None,
    )
    # 302 means "known"; a Location header would make the client follow it and fail.
    return text("The package is available.\n", status=302)


@bp.route("/create", methods=_METHODS)
def create() -> Response:
    upload = Upload(
        stream=request.stream,
        content_type=request.mimetype,
        content_length=request.content_length,
        task_type=request.headers.get("X-Task-Type"),
    )
    created = service().create(request.method, upload, client())
    headers = {"X-Task-Id": created.task_id, PASSWORD_HEADER: created.password}
    return text(f"Task {created.task_id} created.\n", status=201, headers=headers)


@bp.get(TASK)
@authenticated
def status(task: Task) -> Response:
    answer = service().status(task)
    headers = {"X-Task-Status": answer.status, "X-Task-Stage": answer.stage}
    if answer.queue_position is not None:
        headers["X-Task-Queue-Position"] = str(answer.queue_position)
    return text(answer.body, headers=headers)


@bp.get(f"{TASK}/backtrace")
@authenticated
def backtrace(task: Task) -> Response:
    return text(service().document(task, "backtrace"))


@bp.get(f"{TASK}/backtrace.json")
@authenticated
def report(task: Task) -> Response:
    return Response(service().document(task, "backtrace.json"), mimetype="application/json")


@bp.get(f"{TASK}/core_backtrace")
@authenticated
def core_backtrace(task: Task) -> Response:
    """satyr's core stacktrace JSON, the form uReports carry."""
    return Response(service().document(task, "core_backtrace"), mimetype="application/json")


@bp.get(f"{TASK}/log")
@authenticated
def task_log(task: Task) -> Response:
    return text(service().document(task, "log"))


@bp.get(f"{TASK}/exploitable")
@authenticated
def exploitable(task: Task) -> Response:
    return text(service().exploitable(task))
