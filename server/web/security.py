"""What keeps the pages safe: headers, CSRF tokens and the cookies that carry secrets.

- Every response gets a strict Content-Security-Policy (scripts, styles, images only
  from this server; no inline script, no framing, forms post only here) and
  ``X-Content-Type-Options: nosniff``.
- CSRF: a double-submit token. The first page with a form sets a random token in an
  HttpOnly, SameSite=Strict cookie and puts the same value in the form; a POST is
  refused unless both match. Another site can neither read the cookie nor, with
  SameSite=Strict, make the browser send it.
- A task's cookie holds that task's current password, on the path ``/tasks/<id>`` so
  the browser sends it for that task only; the admin cookie holds a digest of the
  admin token, on ``/admin``. Both are HttpOnly, SameSite=Strict, and Secure when the
  request came over TLS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import Flask, Request, g, request
from werkzeug.wrappers import Response

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
CSRF_COOKIE = "retracer-csrf"
CSRF_FIELD = "csrf_token"
TASK_COOKIE = "retracer-task"
ADMIN_COOKIE = "retracer-admin"


class CsrfRefused(Exception):
    """A form came without the token this browser was given."""


def init_app(app: Flask) -> None:
    app.after_request(_protect)


def _protect(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    token = g.pop("new_csrf_token", None)
    if token:
        _set_cookie(response, CSRF_COOKIE, token, path="/")
    return response


def csrf_token() -> str:
    """The token to put in this page's forms (made and set as a cookie when missing)."""
    token = request.cookies.get(CSRF_COOKIE) or g.get("new_csrf_token")
    if not token:
        token = secrets.token_urlsafe(32)
        g.new_csrf_token = token
    return token


def check_csrf(req: Request) -> None:
    """Raises CsrfRefused unless the form's token matches the cookie's."""
    cookie = req.cookies.get(CSRF_COOKIE, "")
    field = req.form.get(CSRF_FIELD, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), field.encode()):
        raise CsrfRefused()


def set_task_cookie(response: Response, task_id: str, password: str) -> None:
    _set_cookie(response, TASK_COOKIE, password, path=f"/tasks/{task_id}")


def forget_task_cookie(response: Response, task_id: str) -> None:
    response.delete_cookie(
        TASK_COOKIE, path=f"/tasks/{task_id}", secure=request.is_secure, httponly=True,
        samesite="Strict",
    )  # fmt: skip


def admin_digest(token: str) -> str:
    return hashlib.sha256(b"retracer-admin\0" + token.encode()).hexdigest()


def set_admin_cookie(response: Response, token: str) -> None:
    _set_cookie(response, ADMIN_COOKIE, admin_digest(token), path="/admin")


def is_admin_token(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def is_admin(req: Request, token: str) -> bool:
    """The admin token from an ``Authorization: Bearer`` header or the admin cookie."""
    header = req.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return is_admin_token(header[len("Bearer ") :], token)
    cookie = req.cookies.get(ADMIN_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), admin_digest(token).encode())


def _set_cookie(response: Response, name: str, value: str, path: str) -> None:
    response.set_cookie(
        name, value, path=path, httponly=True, samesite="Strict", secure=request.is_secure
    )
