"""The store's environment gives gdb exactly what a dnf install of the same NEVRAs does.

The comparison runs the same gdb driver on the same core twice: once as a retrace
does (base image, store and view mounted read-only, gdb's sysroot on the view), once
in an image where the base image's own dnf installed the crash's package set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest

from retracer.builder.environment import VIEW_IN_SANDBOX, BaseImages
from retracer.builder.model import RetraceResult
from retracer.builder.problem import read_problem
from retracer.builder.report import split_output
from retracer.builder.retrace import DRIVER_IN_SANDBOX, Analyzer
from retracer.builder.sandbox import Sandbox
from testing.testos import Testos

MARKER = "----- exactness -----"


@pytest.fixture
def dnf_image(analyzer: Analyzer) -> Iterator[Callable[[RetraceResult], str]]:
    """Makes the image a dnf install of a retrace's package set gives (removed after)."""
    made: list[str] = []

    def install(result: RetraceResult) -> str:
        problem_release = next(r for r in analyzer.releases if r.id == result.release_id)
        image = f"localhost/{analyzer.settings.name_prefix}-exactness:{len(made)}"
        with Sandbox(analyzer.settings) as sandbox:
            base_images = BaseImages(sandbox, analyzer.settings, analyzer.state_dir)
            base = base_images.base_image(problem_release)
            nevras = [p.nevra for p in result.package_set.packages]
            base_images._install(problem_release, base, nevras, image)
        made.append(image)
        return image

    yield install
    with Sandbox(analyzer.settings) as sandbox:
        for image in made:
            sandbox.remove_image(image)


# shapes: Fedora-shaped debuginfo. dnf installs the dwz multifile's package as a
# dependency of the two -debuginfo packages; the store gets it from the index's debug
# companions, and gdb finds it under the view's debug-file-directory.
@pytest.mark.parametrize("name", ["crasher", "threadcrash", "cxxabort", "shapes"])
def test_the_backtrace_is_the_one_a_dnf_installed_environment_gives(
    name: str,
    analyzer: Analyzer,
    testos: Testos,
    retraced: Callable[[str], RetraceResult],
    dnf_image: Callable[[RetraceResult], str],
) -> None:
    crash = testos.crashes[name]
    result = retraced(name)
    image = dnf_image(result)
    problem = read_problem(crash.problem_dir, analyzer.releases)
    # The retrace's own gdb run, moved to the installed image with no store or view.
    spec = analyzer._gdb_spec(_Unmounted(), image, crash.core, problem, MARKER)  # type: ignore[arg-type]
    environment = {k: v for k, v in spec.environment.items() if k != "RETRACER_SYSROOT"}
    spec = dataclasses.replace(spec, environment=environment)
    with Sandbox(analyzer.settings) as sandbox:
        output = sandbox.run(spec)
    installed_text, _ = split_output(output.stdout, MARKER)

    assert crash.crash_function in installed_text
    if name == "shapes":  # a type of the multifile, printed in both
        assert "swatch_chroma = 37 " in installed_text
    assert DRIVER_IN_SANDBOX not in installed_text
    assert VIEW_IN_SANDBOX not in result.backtrace
    assert result.backtrace == installed_text


class _Unmounted:
    """Environments for a spec with nothing of the store mounted."""

    def gdb_mounts(self) -> list[object]:
        return []
