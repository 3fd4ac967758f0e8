"""The pages: the front page with the upload form, a task's page and the dashboard.

Views go through the same :class:`~retracer.server.service.RetraceService` methods as
the protocol's: an upload is ``create``, unlocking a task is ``authenticate`` (so the
seed profile's single-use passwords rotate the same way, the cookie following each
new password), results are ``status`` and ``document``. Errors become a page (or a
JSON body for the live view's requests) with the same sentence the API gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from flask import (
    Blueprint,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from retracer.server.api import client
from retracer.server.auth import Access
from retracer.server.config import Config
from retracer.server.errors import (
    FormRefused,
    LengthRequired,
    NoFileChosen,
    PasswordRefused,
    ServerError,
    TaskNotFound,
    TooManyAttempts,
    UploadTooLarge,
    status_of,
)
from retracer.server.service import RetraceService
from retracer.server.spool import SUPPORTED_FORMATS, Upload
from retracer.server.tasks import Task
from retracer.server.web import charts, security
from retracer.server.web.report import read_report

bp = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/web/static",
)

# Room for the multipart framing around the archive in an upload form's body.
FORM_OVERHEAD_BYTES = 64 * 1024
SUFFIX_TYPES = (
    (".tar.xz", "application/x-xz-compressed-tar"),
    (".txz", "application/x-xz-compressed-tar"),
    (".tar.gz", "application/gzip"),
    (".tgz", "application/gzip"),
    (".tar", "application/x-tar"),
    (".xz", "application/x-xz"),
    (".gz", "application/gzip"),
)
DOWNLOADS = {"backtrace": "backtrace.txt", "backtrace.json": "backtrace.json", "log": "log.txt"}
UNLOCK_FIRST = "Unlock this task with its password first."


@dataclass(frozen=True)
class Unlocked:
    access: Access
    # The password the browser must send next: the new one in the seed profile.
    cookie: str


def service() -> RetraceService:
    result: RetraceService = current_app.extensions["retracer"]
    return result


def config() -> Config:
    result: Config = current_app.extensions["retracer.web"]
    return result


@bp.app_context_processor
def template_helpers() -> dict[str, Any]:
    return {"csrf_token": security.csrf_token, "csrf_field": security.CSRF_FIELD}


# The front page and the upload form


@bp.get("/")
def index() -> Response:
    return _index_page()


@bp.post("/upload")
def upload() -> Response:
    """The form's twin of ``/create``: the same service call, checks and sentences."""
    try:
        created = service().create("POST", _form_upload(), client())
    except ServerError as error:
        return _index_page(error.reason, status_of(error))
    response = _page(
        "created.html", status=201, task_id=created.task_id, password=created.password,
        profile=config().server.protocol_profile,
    )  # fmt: skip
    security.set_task_cookie(response, created.task_id, created.password)
    return response


def _form_upload() -> Upload:
    """The archive in the form, as the Upload ``/create`` would have received.

    Raises:
        LengthRequired, UploadTooLarge: before the form is read, as ``/create`` would.
        FormRefused: the CSRF token is missing or wrong.
    """
    limit_mib = service().capacity().max_packed_size
    if request.content_length is None:
        raise LengthRequired()
    if request.content_length > (limit_mib << 20) + FORM_OVERHEAD_BYTES:
        raise UploadTooLarge("packed", limit_mib)
    _check_csrf()
    archive = request.files.get("archive")
    if archive is None or not archive.filename:
        raise NoFileChosen()
    stream: IO[bytes] = archive.stream
    size = stream.seek(0, 2)
    stream.seek(0)
    return Upload(
        stream=stream,
        content_type=_content_type(archive.filename, archive.mimetype),
        content_length=size,
        task_type=None,
    )


def _content_type(filename: str, sent: str) -> str:
    """What the browser said when it is a supported type, else what the name says."""
    if sent in SUPPORTED_FORMATS:
        return sent
    lowered = filename.lower()
    for suffix, content_type in SUFFIX_TYPES:
        if lowered.endswith(suffix):
            return content_type
    return sent


def _index_page(error: str | None = None, status: int = 200) -> Response:
    capacity = service().capacity()
    return _page(
        "index.html", status=status, error=error, capacity=capacity,
        server_url=request.host_url.rstrip("/"), profile=config().server.protocol_profile,
    )  # fmt: skip


# A task's page


@bp.get("/tasks/<task_id>")
def task_page(task_id: str) -> Response:
    password = request.cookies.get(security.TASK_COOKIE)
    if not password:
        return _locked(task_id, None, 200)
    return _with_task(task_id, password, _show_task, _locked_page)


@bp.post("/tasks/<task_id>")
def unlock(task_id: str) -> Response:
    try:
        _check_csrf()
    except FormRefused as error:
        return _locked(task_id, error.reason, 403)
    password = request.form.get("password", "").strip()
    if not password:
        return _locked(task_id, "Enter the task's password.", 403)

    def to_page(task_id: str, unlocked: Unlocked) -> Response:
        response = redirect(url_for("web.task_page", task_id=task_id), code=303)
        security.set_task_cookie(response, task_id, unlocked.cookie)
        return response

    return _with_task(task_id, password, to_page, _locked_page)


@bp.get("/tasks/<task_id>/progress")
def progress(task_id: str) -> Response:
    """The live view's poll: status, stage, log so far, and the result once finished."""
    password = request.cookies.get(security.TASK_COOKIE)
    if not password:
        return _json_error(UNLOCK_FIRST, 403)

    def answer(task_id: str, unlocked: Unlocked) -> Response:
        task = unlocked.access.task
        status = service().status(task)
        body: dict[str, Any] = {
            "status": status.status,
            "stage": status.stage,
            "queue_position": status.queue_position,
            "finished": task.state.finished,
            "log": service().live_log(task),
        }
        if task.state.finished:
            body["result_html"] = render_template("_result.html", **_result(task))
        return jsonify(body)

    return _with_task(task_id, password, answer, _json_refusal)


@bp.get("/tasks/<task_id>/download/<name>")
def download(task_id: str, name: str) -> Response:
    if name not in DOWNLOADS:
        raise TaskNotFound(task_id)
    password = request.cookies.get(security.TASK_COOKIE)
    if not password:
        return _locked(task_id, UNLOCK_FIRST, 403)

    def send(task_id: str, unlocked: Unlocked) -> Response:
        try:
            text = service().document(unlocked.access.task, name)
        except ServerError as error:
            return _page("message.html", status=status_of(error), message=error.reason)
        mimetype = "application/json" if name.endswith(".json") else "text/plain"
        response = Response(text, mimetype=mimetype)
        response.headers["Content-Disposition"] = (
            f'attachment; filename="{task_id}-{DOWNLOADS[name]}"'
        )
        return response

    return _with_task(task_id, password, send, _locked_page)


def _with_task(
    task_id: str,
    password: str,
    view: Callable[[str, Unlocked], Response],
    refused: Callable[[str, ServerError], Response],
) -> Response:
    """Authenticate through the Gatekeeper, run ``view``, and move the cookie along."""
    try:
        access = service().authenticate(task_id, password, client())
    except (PasswordRefused, TooManyAttempts, TaskNotFound) as error:
        response = refused(task_id, error)
        security.forget_task_cookie(response, task_id)
        return response
    unlocked = Unlocked(access, access.next_password or password)
    try:
        response = view(task_id, unlocked)
    except ServerError as error:
        response = refused(task_id, error)
    if access.next_password:
        security.set_task_cookie(response, task_id, access.next_password)
    return response


def _show_task(task_id: str, unlocked: Unlocked) -> Response:
    task = unlocked.access.task
    status = service().status(task)
    return _page("task.html", progress=status, log=service().live_log(task), **_result(task))


def _result(task: Task) -> dict[str, Any]:
    """What _result.html needs: the report of a finished task, or why there is none."""
    if not task.state.finished:
        return {"task": task, "report": None, "failure": None}
    try:
        report = read_report(service().document(task, "backtrace.json"))
    except ServerError as error:
        return {"task": task, "report": None, "failure": task.reason or error.reason}
    return {"task": task, "report": report, "failure": None}


def _locked(task_id: str, error: str | None, status: int) -> Response:
    return _page("locked.html", status=status, task_id=task_id, error=error)


def _locked_page(task_id: str, error: ServerError) -> Response:
    return _locked(task_id, error.reason, status_of(error))


def _json_refusal(task_id: str, error: ServerError) -> Response:
    return _json_error(error.reason, status_of(error))


def _json_error(reason: str, status: int) -> Response:
    response = jsonify({"reason": reason})
    response.status_code = status
    return response


# The operator's dashboard


@bp.route("/admin", methods=["GET", "POST"])
def admin() -> Response:
    token = config().server.admin_token
    if not token:
        return _page("message.html", status=404, message="The dashboard is off on this server.")
    if request.method == "POST":
        try:
            _check_csrf()
        except FormRefused as error:
            return _page("admin_login.html", status=403, error=error.reason)
        given = request.form.get("token", "")
        if not security.is_admin_token(given, token):
            return _page("admin_login.html", status=403, error="The admin token is wrong.")
        response = redirect(url_for("web.admin"), code=303)
        security.set_admin_cookie(response, token)
        return response
    if not security.is_admin(request, token):
        return _page("admin_login.html", status=403, error=None)
    stats = service().statistics()
    hours = [time.strftime("%H:00", time.gmtime(stats.now - (23 - i) * 3600)) for i in range(24)]
    days = [time.strftime("%m-%d", time.gmtime(stats.now - (13 - i) * 86400)) for i in range(14)]
    return _page(
        "admin.html",
        stats=stats,
        workers=config().server.workers,
        workers_alive=service().workers_alive(),
        per_hour=charts.columns(stats.created_per_hour, hours),
        per_day=charts.columns(stats.created_per_day, days),
        reasons=charts.rows(stats.failure_reasons),
        releases=charts.rows(stats.per_release),
        arches=charts.rows(stats.per_arch),
    )


def _check_csrf() -> None:
    try:
        security.check_csrf(request)
    except security.CsrfRefused as error:
        raise FormRefused() from error


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return Response(render_template(template, **context), status=status, mimetype="text/html")
