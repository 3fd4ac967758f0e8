"""The sandbox's limits hold for real: network, memory, pids, time, cleanup.

Each runs in the x86_64 base image and in the i386 one (a 32-bit userland on this
x86_64 kernel), since an i386 release's retraces run in the latter.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from retracer.builder.errors import StepTimeout
from retracer.builder.retrace import Analyzer
from retracer.builder.sandbox import RunOutput, RunSpec, Sandbox
from retracer.builder.settings import SandboxLimits
from retracer.server.config import config_from_mapping
from testing.podman_service import PodmanService
from testing.testos import Testos


@pytest.fixture(scope="module", params=["testos", "testos_i386"])
def base_image(
    request: pytest.FixtureRequest, analyzer: Analyzer, tmp_path_factory: pytest.TempPathFactory
) -> str:
    release_config = request.getfixturevalue(request.param).release_config()
    config = config_from_mapping({"releases": [release_config]}, tmp_path_factory.mktemp("base"))
    return analyzer.base_image(config.releases[0])


FORK_MANY = """
import os, time
started = 0
try:
    for _ in range(100):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        started += 1
except OSError:
    pass
print("started", started)
"""


def run(analyzer: Analyzer, image: str, script: str, **limits: float) -> RunOutput:
    settings = analyzer.settings
    if limits:
        settings = dataclasses.replace(
            settings, limits=dataclasses.replace(settings.limits, **limits)
        )
    with Sandbox(settings) as sandbox:
        return sandbox.run(
            RunSpec(image=image, command=["bash", "-c", script], step="test", timeout=60)
        )


def test_userland_has_the_release_word_size(analyzer: Analyzer, base_image: str) -> None:
    output = run(analyzer, base_image, "getconf LONG_BIT; uname -m")
    expected = "32" if "testos-1-i386" in base_image else "64"
    assert output.stdout.split() == [expected, "x86_64"]


def test_no_network_but_loopback(analyzer: Analyzer, base_image: str) -> None:
    output = run(
        analyzer,
        base_image,
        "ls /sys/class/net; (echo > /dev/tcp/10.0.2.2/80) 2>/dev/null && echo CONNECTED; true",
    )
    assert output.stdout.split() == ["lo"]
    assert "CONNECTED" not in output.stdout


def test_runs_unprivileged_and_read_only(analyzer: Analyzer, base_image: str) -> None:
    output = run(
        analyzer,
        base_image,
        "id -u; grep CapEff /proc/self/status; touch /usr/x 2>&1;"
        " grep NoNewPrivs /proc/self/status",
    )
    lines = output.stdout.splitlines()
    assert lines[0] == "65534"
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    assert "Read-only file system" in output.stdout
    assert lines[-1].split() == ["NoNewPrivs:", "1"]


def test_memory_limit_holds(analyzer: Analyzer, base_image: str) -> None:
    # Touch 400 MiB under a 128 MiB cap.
    output = run(
        analyzer,
        base_image,
        'python3 -c \'x = b"a" * (400 << 20); print("survived", len(x))\'',
        memory_mib=128,
    )
    assert "survived" not in output.stdout
    assert output.oom_killed or output.exit_code == 137


def test_pids_limit_holds(analyzer: Analyzer, base_image: str) -> None:
    output = run(analyzer, base_image, f"python3 -c '{FORK_MANY}'", pids=20)
    started = int(output.stdout.split()[-1])
    assert started < 20


def test_hanging_gdb_is_stopped_at_the_timeout(analyzer: Analyzer, base_image: str) -> None:
    limits = SandboxLimits(gdb_timeout_seconds=3)
    settings = dataclasses.replace(analyzer.settings, limits=limits)
    with Sandbox(settings) as sandbox, pytest.raises(StepTimeout) as caught:
        sandbox.run(
            RunSpec(
                image=base_image,
                command=["gdb", "-nx", "-batch", "-ex", "shell sleep 120"],
                step="gdb",
                timeout=limits.gdb_timeout_seconds,
            )
        )
    assert caught.value.reason == "gdb timed out after 3 s."
    with Sandbox(settings) as sandbox:  # closing the first one waited for the removal
        assert sandbox.containers() == []


def test_clean_up_removes_containers_dead_workers_left(
    analyzer: Analyzer, base_image: str, podman_service: PodmanService
) -> None:
    def create(name: str, deadline: int) -> None:
        podman_service.cli(
            "create", "--name", name, "--label", f"io.retracer.deadline={deadline}",
            base_image, "true",
        )  # fmt: skip

    create("retracer-orphan-overdue", deadline=int(time.time()) - 3600)
    create("retracer-orphan-running", deadline=int(time.time()) + 3600)
    try:
        analyzer.clean_up()
        names = podman_service.cli("ps", "--all", "--format", "{{.Names}}").stdout.split()
        assert "retracer-orphan-overdue" not in names
        assert "retracer-orphan-running" in names
    finally:
        podman_service.cli("rm", "--force", "retracer-orphan-running", check=False)


def test_a_private_core_is_read_through_a_copy_in_the_state_dir(
    analyzer: Analyzer, testos: Testos, problem_copy: Callable[[str], Path]
) -> None:
    # The kernel writes cores 0600; gdb runs as nobody. When retracer runs in a
    # container only its data directory exists on the host, so the copy lives there.
    problem = problem_copy("crasher")
    (problem / "coredump").chmod(0o600)
    result = analyzer.retrace(problem)
    assert testos.crashes["crasher"].crash_function in result.backtrace
    assert list((analyzer.state_dir / "drivers").glob("gdb-*/gdb_report.py"))
    assert list((analyzer.state_dir / "tmp").iterdir()) == []
