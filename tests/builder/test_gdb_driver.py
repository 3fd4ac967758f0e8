"""The gdb driver in the sandbox never runs the auto-load scripts packages ship."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import ExitStack, closing

from retracer.builder.early import LateRoot
from retracer.builder.environment import VIEW_IN_SANDBOX, BaseImages, Environments
from retracer.builder.model import RetraceResult
from retracer.builder.problem import read_problem
from retracer.builder.retrace import Analyzer
from retracer.builder.sandbox import BindMount, Sandbox
from testing.testos import Testos

# Where gdb looks for crasher's Python auto-load script (in its default safe path),
# by its path on the crashed machine and by its path in the view gdb reads it from.
AUTO_LOAD = "/usr/share/gdb/auto-load/usr/bin/crasher-gdb.py"
AUTO_LOAD_IN_VIEW = f"/usr/share/gdb/auto-load{VIEW_IN_SANDBOX}/usr/bin/crasher-gdb.py"
SENTINEL = "AUTO-LOADED-SCRIPT-RAN"


def test_a_packaged_auto_load_script_does_not_run(
    analyzer: Analyzer,
    testos: Testos,
    retraced: Callable[[str], RetraceResult],
) -> None:
    crash = testos.crashes["crasher"]
    retraced("crasher")
    script = analyzer.state_dir / "tmp" / "crasher-gdb.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    # Straight to the descriptor: the driver captures what gdb commands print.
    script.write_text(f"import os\nos.write(2, b{SENTINEL!r})\n")
    script.chmod(0o644)
    problem = read_problem(crash.problem_dir, analyzer.releases)
    try:
        with Sandbox(analyzer.settings) as sandbox:
            base_images = BaseImages(sandbox, analyzer.settings, analyzer.state_dir)
            environments = Environments(base_images, analyzer.store, analyzer.state_dir)
            # The environment crasher's retrace above ran gdb in.
            environment = environments.last_used_for(problem.program, problem.release)
            assert environment is not None
            with ExitStack() as stack:
                stack.enter_context(closing(environment))
                spec = analyzer._gdb_spec(
                    environments, environment.image, crash.core, problem, "----- marker -----"
                )
                root = stack.enter_context(LateRoot(analyzer.state_dir / "tmp"))
                root.fill(environments.root_links(environment))
                spec = root.given_to(spec)
                spec = dataclasses.replace(
                    spec,
                    mounts=[
                        *spec.mounts,
                        BindMount(script, AUTO_LOAD),
                        BindMount(script, AUTO_LOAD_IN_VIEW),
                    ],
                )
                output = sandbox.run(spec)
    finally:
        script.unlink()
    assert "----- marker -----" in output.stdout, output.stderr
    assert crash.crash_function in output.stdout
    assert SENTINEL not in output.stdout + output.stderr
