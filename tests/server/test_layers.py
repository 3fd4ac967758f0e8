"""The layering the code promises: what a module imports is what it needs."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["retracer.server.errors", "retracer.server.config", "retracer.server.tasks"],
)
def test_the_error_tree_and_its_users_do_not_import_flask(module: str) -> None:
    """The task store and the config loader run in workers and CLIs; the web
    framework belongs to the HTTP side only."""
    check = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('flask')))"
    run = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "[]"


def test_the_builder_does_not_import_the_server() -> None:
    """``retracer retrace`` unpacks an archive with the builder's own rules."""
    check = (
        "import sys, retracer.builder.cli, retracer.builder.problem_format;"
        " print(sorted(m for m in sys.modules if m.startswith('retracer.server')))"
    )
    run = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "[]"
