"""A 32-bit crash (testos-1-i386, i686 packages) retraced by `retracer retrace` on x86_64.

The configuration serves both releases, as a host retracing both would. The last test
checks the i386 image's own dnf against a repository that also has x86_64 builds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from retracer.builder.environment import BaseImages
from retracer.builder.retrace import Analyzer
from retracer.builder.sandbox import RunSpec, Sandbox
from retracer.server.config import Config, config_from_mapping
from retracer.sync.settings import ReleaseSettings
from testing.testos import Testos
from tests.sync.two_arch import two_arch_repository


@pytest.fixture(scope="module")
def report(
    retrace_config: Config,
    testos: Testos,
    testos_i386: Testos,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The JSON report of the i386 crasher crash."""
    path = tmp_path_factory.mktemp("i386") / "retracer.yaml"
    settings = {
        "data_dir": str(retrace_config.data_dir),
        "builder": {"podman_url": retrace_config.builder.podman_url},
        "releases": [testos.release_config(), testos_i386.release_config()],
    }
    path.write_text(yaml.safe_dump(settings))
    crash = testos_i386.crashes["crasher"]
    command = [
        str(Path(sys.executable).parent / "retracer"), "--config", str(path),
        "retrace", "--report", "--quiet", str(crash.problem_dir),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result: dict[str, Any] = json.loads(run.stdout)
    return result


def test_frames_are_the_old_library_versions(report: dict[str, Any], testos_i386: Testos) -> None:
    crash = testos_i386.crashes["crasher"]
    (thread,) = [t for t in report["threads"] if t["crashed"]]
    top = thread["frames"][0]

    assert report["release"] == "testos-1-i386"
    assert report["signal"]["name"] == "SIGSEGV"
    assert top["function"] == crash.crash_function
    assert f"{top['file']}:{top['line']}".endswith(crash.crash_site)
    assert top["locals"]  # the 32-bit debuginfo gives the frame's variables
    functions = [f["function"] for f in thread["frames"]]
    assert "main" in functions
    assert crash.newer_function not in functions


def test_installed_packages_are_the_i686_builds(report: dict[str, Any]) -> None:
    packages = set(report["packages"])
    modules = {m["path"]: m for m in report["modules"]}

    assert report["package"] == "crasher-1.0-1.i686"
    assert {"crasher-1.0-1.i686", "crasher-debuginfo-1.0-1.i686"} <= packages
    assert {"libcrash-2.0-1.i686", "libcrash-debuginfo-2.0-1.i686"} <= packages
    assert all(nevra.endswith(".i686") for nevra in packages)
    assert modules["/usr/lib/libcrash.so.2"]["debuginfo"] == "libcrash-debuginfo-2.0-1.i686"


def test_environment_dnf_installs_i686_where_the_repository_has_both_arches(
    analyzer: Analyzer, testos_i386: Testos, tmp_path: Path
) -> None:
    # A base_image release gets gdb and elfutils installed by name. The i386 image runs
    # on the x86_64 kernel, where its dnf would pick an x86_64 build if one were there.
    repository = two_arch_repository(tmp_path, "gdb")
    bootstrap = config_from_mapping({"releases": [testos_i386.release_config()]}, tmp_path)
    with Sandbox(analyzer.settings) as sandbox:
        environments = BaseImages(sandbox, analyzer.settings, analyzer.state_dir)
        bootstrapped = environments.base_image(bootstrap.releases[0])
        release = ReleaseSettings(
            id="testos-1-i386",
            os_release=testos_i386.os_release,
            repositories=(repository,),
            base_image=bootstrapped,
        )
        image = environments.base_image(release)
        try:
            output = sandbox.run(
                RunSpec(
                    image=image,
                    command=["cat", "/usr/share/two-arch-gdb/arch"],
                    step="test",
                    timeout=60,
                )
            )
        finally:
            sandbox.close()  # returns once the container is removed: the image is unused
            with Sandbox(analyzer.settings) as cleaner:
                cleaner.remove_image(image)

    assert output.stdout.strip() == "i686", output.stderr
