"""The gdb driver in the sandbox never runs the auto-load scripts packages ship."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from retracer.builder.model import RetraceResult
from retracer.builder.problem import read_problem
from retracer.builder.retrace import Analyzer
from retracer.builder.sandbox import BindMount, Sandbox
from testing.testos import Testos

# Where gdb looks for crasher's Python auto-load script (in its default safe path).
AUTO_LOAD = "/usr/share/gdb/auto-load/usr/bin/crasher-gdb.py"
SENTINEL = "AUTO-LOADED-SCRIPT-RAN"


def test_a_packaged_auto_load_script_does_not_run(
    analyzer: Analyzer,
    testos: Testos,
    retraced: Callable[[str], RetraceResult],
) -> None:
    crash = testos.crashes["crasher"]
    image = retraced("crasher").environment_image
    script = analyzer.state_dir / "tmp" / "crasher-gdb.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    # Straight to the descriptor: the driver captures what gdb commands print.
    script.write_text(f"import os\nos.write(2, b{SENTINEL!r})\n")
    script.chmod(0o644)
    problem = read_problem(crash.problem_dir, analyzer.releases)
    spec = analyzer._gdb_spec(image, crash.core, problem, "----- marker -----")
    spec = dataclasses.replace(spec, mounts=[*spec.mounts, BindMount(script, AUTO_LOAD)])
    try:
        with Sandbox(analyzer.settings) as sandbox:
            output = sandbox.run(spec)
    finally:
        script.unlink()
    assert "----- marker -----" in output.stdout, output.stderr
    assert crash.crash_function in output.stdout
    assert SENTINEL not in output.stdout + output.stderr
