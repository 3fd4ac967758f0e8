"""The pages' rules, checked without a browser: headers, CSRF, cookies, the upload
form's answers beside /create's, and password rotation through the same Gatekeeper."""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from retracer.server.app import create_app
from retracer.server.config import Config
from retracer.server.tasks import SqliteTaskStore
from retracer.server.web.security import CSRF_COOKIE, CSRF_FIELD, TASK_COOKIE
from testing.server.archives import abrt_archive
from testing.server.live import ThreadServer, settings_mapping
from tests.server.client import XZ_TAR

AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(config_factory: Callable[..., Config], tmp_path: Path) -> AppFactory:
    def make(**server: Any) -> Flask:
        return create_app(config_factory(settings_mapping(tmp_path, **server)))

    return make


def csrf(client: FlaskClient, page: str = "/", **options: Any) -> str:
    """Open a page with a form, as a browser would, and return the form's token."""
    text = client.get(page, **options).get_data(as_text=True)
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', text)
    assert found, text
    return found.group(1)


def upload_form(
    client: FlaskClient, body: bytes, filename: str, token: str | None, **options: Any
) -> TestResponse:
    data: dict[str, Any] = {"archive": (io.BytesIO(body), filename)}
    if token is not None:
        data[CSRF_FIELD] = token
    return client.post("/upload", data=data, content_type="multipart/form-data", **options)


def page_error(page: str) -> str:
    found = re.search(r'<p class="error"[^>]*>([^<]*)</p>', page)
    assert found, page
    return html.unescape(found.group(1))


def cookie_header(response: TestResponse, name: str) -> str:
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]
    return header


def created_id(response: TestResponse) -> str:
    found = re.search(r'id="task-id">(\d+)<', response.get_data(as_text=True))
    assert found
    return found.group(1)


def test_pages_carry_a_strict_policy_and_no_inline_script(make_app: AppFactory) -> None:
    client = make_app().test_client()
    token = csrf(client)
    created = upload_form(client, abrt_archive(), "crash.tar.xz", token)
    for response in (client.get("/"), created, client.get(f"/tasks/{created_id(created)}")):
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "default-src 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        scripts = re.findall(r"<script[^>]*>", response.get_data(as_text=True))
        assert all(" src=" in tag for tag in scripts), scripts


def test_forms_without_the_csrf_token_are_refused(
    make_app: AppFactory, config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    app = make_app(admin_token="secret")
    client = app.test_client()
    csrf(client)  # the browser has the cookie, but the form lacks the field

    refused = upload_form(client, abrt_archive(), "crash.tar.xz", token=None)
    assert refused.status_code == 403
    assert SqliteTaskStore.in_data_dir(tmp_path / "data").ids() == set()

    created = upload_form(client, abrt_archive(), "crash.tar.xz", csrf(client))
    task_id, password = created_id(created), cookie_header(created, TASK_COOKIE)
    fresh = app.test_client()
    csrf(fresh)
    unlock = fresh.post(f"/tasks/{task_id}", data={"password": password.split(";")[0]})
    assert unlock.status_code == 403
    assert not [h for h in unlock.headers.getlist("Set-Cookie") if h.startswith(TASK_COOKIE)]
    admin = fresh.post("/admin", data={"token": "secret"})
    assert admin.status_code == 403
    assert "retracer-admin" not in " ".join(admin.headers.getlist("Set-Cookie"))


@pytest.mark.parametrize(
    ("body", "filename", "content_type", "status"),
    [
        (b"not an archive", "notes.txt", "text/plain", 415),
        (b"\xfd7zXZ\x00 truncated", "crash.tar.xz", XZ_TAR, 400),
        (abrt_archive({"coredump": b"core", "../escape": b"x"}), "crash.tar.xz", XZ_TAR, 403),
        (bytes(2 << 20), "huge.tar.xz", XZ_TAR, 413),
    ],
)
def test_the_upload_form_answers_like_create(
    config_factory: Callable[..., Config],
    tmp_path: Path,
    body: bytes,
    filename: str,
    content_type: str,
    status: int,
) -> None:
    server = ThreadServer(config_factory(settings_mapping(tmp_path, max_packed_size_mib=1)))
    url = server.start().url
    try:
        api = requests.post(
            f"{url}/create", data=body, headers={"Content-Type": content_type}, timeout=30
        )
        browser = requests.Session()
        front = browser.get(url, timeout=30).text
        token = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', front)
        assert token
        form = browser.post(
            f"{url}/upload",
            data={CSRF_FIELD: token.group(1)},
            files={"archive": (filename, body, content_type)},
            timeout=30,
        )
    finally:
        server.stop()
    assert (api.status_code, form.status_code) == (status, status)
    assert page_error(form.text) == api.text.strip()


def test_the_task_cookie_is_scoped_httponly_strict_and_secure_over_tls(
    make_app: AppFactory,
) -> None:
    app = make_app()
    for base_url, secure in (("http://localhost", False), ("https://localhost", True)):
        client = app.test_client()
        front = client.get("/", base_url=base_url)
        token = cookie_header(front, CSRF_COOKIE)
        assert "HttpOnly" in token and "SameSite=Strict" in token
        assert ("Secure" in token) is secure
        token_value = csrf(client, base_url=base_url)
        created = upload_form(client, abrt_archive(), "c.tar.xz", token_value, base_url=base_url)
        header = cookie_header(created, TASK_COOKIE)
        assert f"Path=/tasks/{created_id(created)}" in header
        assert "HttpOnly" in header and "SameSite=Strict" in header
        assert ("Secure" in header) is secure


def test_seed_profile_rotates_the_cookie_through_the_gatekeeper(make_app: AppFactory) -> None:
    client = make_app().test_client()
    created = upload_form(client, abrt_archive(), "crash.tar.xz", csrf(client))
    task_id = created_id(created)
    first = client.get_cookie(TASK_COOKIE, path=f"/tasks/{task_id}")
    assert first is not None

    page = client.get(f"/tasks/{task_id}")
    assert page.status_code == 200 and 'id="status"' in page.get_data(as_text=True)
    second = client.get_cookie(TASK_COOKIE, path=f"/tasks/{task_id}")
    assert second is not None and second.value != first.value

    spent = client.get(f"/{task_id}", headers={"X-Task-Password": first.value})
    assert spent.status_code == 403
    assert "already used" in spent.get_data(as_text=True)
    api = client.get(f"/{task_id}", headers={"X-Task-Password": second.value})
    assert api.status_code == 200
    # The API spent the cookie's password: the page now asks for one again.
    stale = client.get(f"/tasks/{task_id}")
    assert stale.status_code == 403 and 'id="status"' not in stale.get_data(as_text=True)


def test_abrt_profile_keeps_the_cookie(make_app: AppFactory) -> None:
    client = make_app(protocol_profile="abrt").test_client()
    created = upload_form(client, abrt_archive(), "crash.tar.xz", csrf(client))
    task_id = created_id(created)
    for _ in range(3):
        page = client.get(f"/tasks/{task_id}")
        assert page.status_code == 200
        assert not page.headers.getlist("Set-Cookie")


def test_the_dashboard_is_off_without_a_token(make_app: AppFactory) -> None:
    client = make_app().test_client()
    assert client.get("/admin").status_code == 404
    assert client.get("/admin", headers={"Authorization": "Bearer "}).status_code == 404


def test_the_form_takes_the_archive_type_from_its_name(make_app: AppFactory) -> None:
    """Browsers label .tar.xz files variously (often application/octet-stream)."""
    client = make_app().test_client()
    token = csrf(client)
    archive = (io.BytesIO(abrt_archive()), "crash.tar.xz", "application/octet-stream")
    data = {CSRF_FIELD: token, "archive": archive}
    created = client.post("/upload", data=data, content_type="multipart/form-data")
    assert created.status_code == 201, created.get_data(as_text=True)


def test_a_download_before_the_end_says_why(make_app: AppFactory) -> None:
    client = make_app().test_client()
    created = upload_form(client, abrt_archive(), "crash.tar.xz", csrf(client))
    task_id = created_id(created)
    early = client.get(f"/tasks/{task_id}/download/backtrace.json")
    assert early.status_code == 404
    assert page_error(early.get_data(as_text=True)) == (
        f"The backtrace.json of task {task_id} is not available: the task has not finished yet."
    )
    assert client.get(f"/tasks/{task_id}/download/core").status_code == 404
