"""`retracer retrace` as CI pipelines run it: the installed command in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from retracer.server.config import Config
from testing.testos import Testos


def retracer(
    config: Config, testos: Testos, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "retracer.yaml"
    settings = {
        "data_dir": str(config.data_dir),
        "builder": {"podman_url": config.builder.podman_url},
        "releases": [testos.release_config()],
    }
    path.write_text(yaml.safe_dump(settings))
    command = [str(Path(sys.executable).parent / "retracer"), "--config", str(path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_prints_the_backtrace(retrace_config: Config, testos: Testos, tmp_path: Path) -> None:
    crash = testos.crashes["crasher"]
    run = retracer(retrace_config, testos, tmp_path, "retrace", str(crash.problem_dir))
    assert run.returncode == 0, run.stderr
    assert crash.crash_function in run.stdout
    assert "running gdb:" in run.stderr  # progress goes to stderr, not into the backtrace


def test_prints_the_report(retrace_config: Config, testos: Testos, tmp_path: Path) -> None:
    crash = testos.crashes["crasher"]
    run = retracer(
        retrace_config, testos, tmp_path, "retrace", "--report", "--quiet", str(crash.problem_dir)
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["package"] == "crasher-1.0-1.x86_64"
    assert report["crash_function"] == crash.crash_function
    assert run.stderr == ""


def test_json_is_satyrs_core_backtrace(
    retrace_config: Config, testos: Testos, tmp_path: Path
) -> None:
    crash = testos.crashes["crasher"]
    run = retracer(
        retrace_config, testos, tmp_path, "retrace", "--json", "--quiet", str(crash.problem_dir)
    )
    assert run.returncode == 0, run.stderr
    core_backtrace = json.loads(run.stdout)
    assert core_backtrace["signal"] == 11
    assert core_backtrace["executable"] == "/usr/bin/crasher"
    (crashed,) = [t for t in core_backtrace["stacktrace"] if t.get("crash_thread")]
    assert crashed["frames"][0]["function_name"] == crash.crash_function


def test_failure_exits_non_zero_with_the_reason(
    retrace_config: Config, testos: Testos, tmp_path: Path
) -> None:
    problem = tmp_path / "problem"
    problem.mkdir()
    for member in testos.crashes["crasher"].problem_dir.iterdir():
        (problem / member.name).write_bytes(member.read_bytes())
    (problem / "coredump").write_bytes(b"garbage")
    run = retracer(retrace_config, testos, tmp_path, "retrace", "--quiet", str(problem))
    assert run.returncode == 1
    assert run.stderr == "retracer: The core cannot be used: it is not an ELF file.\n"
    assert run.stdout == ""


def test_retraces_the_archive_abrt_uploads(
    retrace_config: Config, testos: Testos, tmp_path: Path
) -> None:
    crash = testos.crashes["crasher"]
    run = retracer(retrace_config, testos, tmp_path, "retrace", "--quiet", str(crash.archive))
    assert run.returncode == 0, run.stderr
    assert crash.crash_function in run.stdout


def test_hostile_archive_is_refused_like_an_upload(
    retrace_config: Config, testos: Testos, tmp_path: Path
) -> None:
    archive = tmp_path / "hostile.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("coredump")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        tar.addfile(link)
    run = retracer(retrace_config, testos, tmp_path, "retrace", "--quiet", str(archive))
    assert run.returncode == 1
    # The very sentence /create answers the same archive with (tests/server/test_uploads).
    assert run.stderr == (
        "retracer: The archive member 'coredump' is a symbolic link;"
        " only regular files are accepted.\n"
    )
    assert run.stdout == ""
