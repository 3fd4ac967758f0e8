"""The task page's reading of backtrace.json, and its escaping of what a core holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from flask import render_template

from retracer.server.app import create_app
from retracer.server.config import Config
from retracer.server.tasks import Task, TaskState
from retracer.server.web.report import read_report
from testing.server.live import settings_mapping

HOSTILE = "<script>alert(1)</script>"
REPORT = {
    "signal": {"number": 6, "name": "SIGABRT"},
    "crash_thread": 2,
    "abort_message": f"Assertion `{HOSTILE}' failed.",
    "threads": [
        {"num": 1, "lwp": 10, "name": "main", "crashed": False,
         "frames": [{"level": 0, "function": "poll", "file": None, "line": None, "pc": 1,
                     "module": "/usr/lib64/libc.so.6", "build_id": "aa", "offset": 16}]},
        {"num": 2, "lwp": 11, "name": "\x1b[2Jworker", "crashed": True,
         "frames": [{"level": 0, "function": "quiet_for_each", "file": None, "line": None,
                     "pc": 2, "module": "/usr/lib64/libquiet.so.1", "build_id": "bb",
                     "offset": 32, "locals": {"link": '"javascript:alert(2)"'}},
                    {"level": 1, "function": "main", "file": "main.c", "line": 7, "pc": 3,
                     "module": "/usr/bin/app", "build_id": "cc", "offset": 48}]},
    ],
    "modules": [
        {"path": "/usr/lib64/libquiet.so.1", "build_id": "bb", "package": "libquiet-1.0-1.x86_64",
         "debuginfo": None},
        {"path": "/usr/lib64/libgone.so", "build_id": "dd", "package": None, "debuginfo": None},
    ],
    "missing_debuginfo": [{"path": "/usr/lib64/libquiet.so.1", "build_id": "bb"}],
    "packages": ["libquiet-1.0-1.x86_64"],
}  # fmt: skip


def test_the_crashed_thread_comes_first_and_missing_debuginfo_is_marked() -> None:
    view = read_report(json.dumps(REPORT))
    assert [thread.num for thread in view.threads] == [2, 1]
    top, caller = view.threads[0].frames
    assert top.without_debuginfo and not caller.without_debuginfo
    assert (caller.site, caller.offset) == ("main.c:7", "0x30")
    assert top.locals == (("link", '"javascript:alert(2)"'),)
    reasons = [module.missing for module in view.modules]
    assert reasons == [
        "No debuginfo package in this server's repository ships this build-id.",
        "No package in this server's repository ships this build-id.",
    ]


def test_strings_from_the_core_are_escaped(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    app = create_app(config_factory(settings_mapping(tmp_path)))
    task = Task("123456789", TaskState.FINISHED_SUCCESS, "done", 0.0, 1.0, None, 1)
    with app.test_request_context("/tasks/123456789"):
        page = render_template(
            "_result.html", task=task, report=read_report(json.dumps(REPORT)), failure=None
        )
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" in page  # kept as text (a browser shows no control characters)
    assert 'href="javascript' not in page
