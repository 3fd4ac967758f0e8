"""The pages in a real browser: Debian's chromium driven by Playwright, against
``retracer serve`` with its worker retracing the testos crashes for real."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from testing.testos import Testos
from tests.server.client import XZ_TAR, wait_finished
from tests.web.conftest import ADMIN_TOKEN, Site

pytestmark = pytest.mark.browser
RETRACE_TIMEOUT_MS = 600_000


def upload_through_form(page: Page, site: Site, archive: Path) -> tuple[str, str]:
    """Upload on the front page; returns the task id and password the page shows."""
    page.goto(site.url)
    page.set_input_files("input[name=archive]", str(archive))
    page.click("form.upload button[type=submit]")
    expect(page.locator("h1")).to_contain_text("created")
    return page.inner_text("#task-id"), page.inner_text("#task-password")


def unlock(page: Page, site: Site, task_id: str, password: str) -> None:
    page.goto(f"{site.url}/tasks/{task_id}")
    page.fill("input[name=password]", password)
    page.click("form.unlock button[type=submit]")


def create_with_api(site: Site, archive: Path) -> tuple[str, str]:
    response = requests.post(
        f"{site.url}/create", data=archive.read_bytes(), headers={"Content-Type": XZ_TAR},
        timeout=60,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.headers["X-Task-Id"], response.headers["X-Task-Password"]


def test_submitter_uploads_unlocks_watches_and_downloads(
    browser: Browser, site: Site, testos: Testos
) -> None:
    crash = testos.crashes["crasher"]
    uploader = browser.new_context().new_page()
    uploader.goto(site.url)
    site.capture(uploader, "front-page")
    task_id, password = upload_through_form(uploader, site, crash.archive)
    assert re.fullmatch(r"\d{9}", task_id)
    site.capture(uploader, "task-created")

    # Someone else, sent the link and the password: a browser without any cookie.
    page = browser.new_context(accept_downloads=True).new_page()
    page.goto(f"{site.url}/tasks/{task_id}")
    site.capture(page, "task-locked")
    unlock(page, site, task_id, password)
    expect(page.locator("#status")).to_be_visible()
    page.evaluate("window.retracerTestMarker = 'still the same page'")

    expect(page.locator("#status")).to_have_text("FINISHED_SUCCESS", timeout=RETRACE_TIMEOUT_MS)
    assert page.evaluate("window.retracerTestMarker") == "still the same page"
    crashed = page.locator("table.frames").first
    row = crashed.locator("tr", has=page.locator("td.function", has_text=crash.crash_function))
    expect(row.locator("td.site")).to_contain_text(crash.crash_site)
    assert crash.crash_site == "libcrash.c:18"
    expect(page.locator("#log")).to_contain_text("Retrace finished successfully")
    site.capture(page, "task-finished")

    with page.expect_download() as download_info:
        page.click("#download-json")
    report = json.loads(Path(download_info.value.path()).read_text())
    functions = [f["function"] for t in report["threads"] for f in t["frames"]]
    assert crash.crash_function in functions
    assert crash.newer_function not in functions


def test_hostile_strings_run_no_script(browser: Browser, site: Site, testos: Testos) -> None:
    page = browser.new_context().new_page()
    dialogs: list[str] = []
    console: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("console", lambda message: console.append(message.text))
    upload_through_form(page, site, testos.crashes["hostile"].archive)
    page.click("a.button")  # this browser holds the password from the upload

    expect(page.locator("#status")).to_have_text(
        re.compile("FINISHED_(SUCCESS|FAILURE)"), timeout=RETRACE_TIMEOUT_MS
    )
    expect(page.locator("#status")).to_have_text("FINISHED_SUCCESS")
    for details in page.locator("details.locals").all():
        details.evaluate("details => { details.open = true }")
    site.capture(page, "hostile-task")

    expect(page.locator("#abort-message")).to_contain_text('"<script>alert(2)</script>"')
    expect(page.locator("#result")).to_contain_text("javascript:alert(document.domain)")
    expect(page.locator("#result")).to_contain_text("<img src=x onerror=alert(3)>")
    expect(page.locator("#result")).to_contain_text("hostile_v10_render")
    assert page.evaluate("document.scripts.length") == 1  # task.js, nothing the core brought
    assert page.locator("main img, main a[href^='javascript:']").count() == 0
    assert dialogs == []
    assert not [line for line in console if "alert" in line or "Refused" in line], console


def test_wrong_password_and_strangers_cookie_see_nothing(
    browser: Browser, site: Site, testos: Testos
) -> None:
    task_id, password = create_with_api(site, testos.crashes["crasher"].archive)
    _, other_password = create_with_api(site, testos.crashes["threadcrash"].archive)

    page = browser.new_context().new_page()
    unlock(page, site, task_id, "not-the-password")
    expect(page.locator(".error")).to_have_text(f"The password for task {task_id} is wrong.")
    api_answer = requests.get(
        f"{site.url}/{task_id}", headers={"X-Task-Password": "not-the-password"}, timeout=5
    )
    assert api_answer.text.strip() == f"The password for task {task_id} is wrong."
    assert page.locator("#status, #log, #result").count() == 0
    site.capture(page, "wrong-password")

    # A stranger's cookie: the valid password of another task, sent for this one.
    stranger = browser.new_context()
    stranger.add_cookies(
        [{"name": "retracer-task", "value": other_password, "url": f"{site.url}/tasks/{task_id}"}]
    )
    page = stranger.new_page()
    response = page.goto(f"{site.url}/tasks/{task_id}")
    assert response is not None and response.status == 403
    assert page.locator("#status, #log, #result").count() == 0
    progress = page.request.get(f"{site.url}/tasks/{task_id}/progress")
    assert progress.status == 403 and "status" not in progress.json()

    # The owner's password still works: the refusals spent nothing.
    owner = requests.get(f"{site.url}/{task_id}", headers={"X-Task-Password": password}, timeout=5)
    assert owner.status_code == 200, owner.text


def test_dashboard_shows_the_tasks_and_refuses_without_the_token(
    browser: Browser, site: Site, testos: Testos
) -> None:
    task_id, password = create_with_api(site, testos.crashes["crasher"].archive)
    wait_finished(site.url, task_id, password, timeout=600)

    page = browser.new_context().new_page()
    response = page.goto(f"{site.url}/admin")
    assert response is not None and response.status == 403
    assert page.locator("#tasks-today").count() == 0
    page.fill("input[name=token]", "not-the-token")
    page.click("form.admin-login button[type=submit]")
    expect(page.locator(".error")).to_have_text("The admin token is wrong.")
    assert page.locator("#tasks-today").count() == 0

    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("form.admin-login button[type=submit]")
    expect(page.locator("#tasks-today")).to_be_visible()
    site.capture(page, "dashboard")
    metrics = requests.get(f"{site.url}/metrics", timeout=5).text
    created_today = int(page.inner_text("#tasks-today"))
    assert f"retracer_tasks_created_last_day {float(created_today)}" in metrics
    assert created_today >= 1
    expect(page.locator("svg.chart").first).to_be_visible()
    expect(page.locator("main")).to_contain_text(testos.release_id)
    expect(page.locator("#step-times")).to_contain_text("running gdb")
    images = re.match(r"(\d+) images", page.inner_text("#environment-cache"))
    assert images is not None
    assert f"retracer_environment_cache_images {float(images.group(1))}" in metrics
    finished = re.match(r"(\d+) succeeded", page.inner_text("#finished"))
    assert finished is not None
    succeeded = int(finished.group(1))
    assert f'retracer_tasks_finished_total{{result="success"}} {float(succeeded)}' in metrics


def test_every_page_works_without_javascript(browser: Browser, site: Site, testos: Testos) -> None:
    # A core no other test here uploads: a repeated one would finish at once (its
    # result is reused), and the page would never show the pending state.
    crash = testos.crashes["cxxabort"]
    page = browser.new_context(java_script_enabled=False).new_page()
    upload_through_form(page, site, crash.archive)
    page.click("a.button")
    expect(page.locator("#live-note")).to_contain_text("Reload the page")
    deadline = time.monotonic() + RETRACE_TIMEOUT_MS / 1000
    while page.inner_text("#status") == "PENDING" and time.monotonic() < deadline:
        page.reload()  # what a person without JavaScript does
    expect(page.locator("#status")).to_have_text("FINISHED_SUCCESS")
    expect(page.locator("table.frames").first).to_contain_text(crash.crash_function)
