"""Bad crashes fail cleanly, each with one sentence a person can act on.

Most are refused by :func:`read_problem`, the first step of every retrace (and of
every upload), before any container starts: those cases need neither the analyzer
nor podman. The others run the real analyzer.
"""

from __future__ import annotations

import dataclasses
import gc
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from retracer.builder.errors import BuilderError
from retracer.builder.problem import read_problem
from retracer.builder.retrace import Analyzer
from retracer.server.config import Config, config_from_mapping
from retracer.sync.errors import SyncError
from retracer.sync.settings import ReleaseSettings
from testing.testos import Testos

ProblemCopy = Callable[[str], Path]


def core_header(e_type: int = 4, phnum: int = 1, note_size: int = 0x100) -> bytes:
    """A 64-bit little-endian ELF header with one PT_NOTE program header."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", e_type, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0
    )
    note = struct.pack("<IIQQQQQQ", 4, 0, 0x1000, 0, 0, note_size, 0, 4)
    return header + note * phnum


def failure(analyzer: Analyzer, problem: Path) -> str:
    with pytest.raises((BuilderError, SyncError)) as caught:
        analyzer.retrace(problem)
    return sentence(caught.value.reason)


def refusal(releases: tuple[ReleaseSettings, ...], problem: Path) -> str:
    """Why the problem directory's own check refuses it."""
    with pytest.raises((BuilderError, SyncError)) as caught:
        read_problem(problem, releases)
    return sentence(caught.value.reason)


def sentence(reason: str) -> str:
    assert "\n" not in reason and reason.endswith(".")
    return reason


@pytest.fixture
def releases(testos: Testos, tmp_path: Path) -> tuple[ReleaseSettings, ...]:
    """The configured testos release, with no podman service behind it."""
    return config_from_mapping({"releases": [testos.release_config()]}, tmp_path).releases


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda core: core.write_bytes(b""), "The core cannot be used: it is empty."),
        (
            lambda core: core.write_bytes(b"MZ\x90\x00 not an ELF file at all" * 10),
            "The core cannot be used: it is not an ELF file.",
        ),
        (
            lambda core: core.write_bytes(core_header(e_type=2) + bytes(4096)),
            "The core cannot be used: it is an ELF file but not a core dump.",
        ),
        (
            lambda core: core.write_bytes(core.read_bytes()[: core.stat().st_size // 3]),
            "The core cannot be used: it is truncated: segment",
        ),
        (
            lambda core: core.write_bytes(core_header(phnum=1000)[:200]),
            "The core cannot be used: it is truncated: its program headers run past the end",
        ),
    ],
    ids=["empty", "not-elf", "elf-not-core", "truncated", "truncated-headers"],
)
def test_hostile_core_is_refused_with_a_reason(
    releases: tuple[ReleaseSettings, ...],
    problem_copy: ProblemCopy,
    damage: Callable[[Path], object],
    reason: str,
) -> None:
    problem = problem_copy("crasher")
    damage(problem / "coredump")
    assert refusal(releases, problem).startswith(reason)


def test_core_with_a_huge_note_is_refused(
    releases: tuple[ReleaseSettings, ...], problem_copy: ProblemCopy
) -> None:
    problem = problem_copy("crasher")
    core = problem / "coredump"
    with core.open("wb") as file:
        file.write(core_header(note_size=200 << 20))
        file.truncate((200 << 20) + 0x2000)  # sparse: the note "fits" in the file
    assert refusal(releases, problem) == (
        "The core cannot be used: its notes are implausibly large (209715200 bytes)."
    )


def test_core_with_no_modules_fails_in_the_sandbox(
    analyzer: Analyzer, problem_copy: ProblemCopy
) -> None:
    problem = problem_copy("crasher")
    (problem / "coredump").write_bytes(core_header() + bytes(0x2000))
    assert failure(analyzer, problem).startswith("The core cannot be used: ")


def test_unknown_release_lists_the_supported_ones(
    releases: tuple[ReleaseSettings, ...], problem_copy: ProblemCopy
) -> None:
    problem = problem_copy("crasher")
    (problem / "os_release").write_text("Fedora release 41 (Forty One)\n")
    (problem / "os_info").unlink()
    assert refusal(releases, problem) == (
        "Unknown release 'fedora-41-x86_64'; this server supports: testos-1-x86_64."
    )


def test_package_not_in_the_repository(analyzer: Analyzer, problem_copy: ProblemCopy) -> None:
    problem = problem_copy("crasher")
    (problem / "package").write_text("crasher-9.9-1\n")
    assert failure(analyzer, problem) == (
        "Package crasher-9.9-1 is not in the repository of testos-1-x86_64."
    )


@pytest.mark.parametrize(
    ("member", "content", "reason"),
    [
        ("executable", None, "The problem file 'executable' is missing."),
        ("executable", "usr/bin/crasher",
         "The problem file 'executable' must hold an absolute path."),
        ("package", "x" * 200, "The problem file 'package' is longer than 128 bytes."),
        ("package", "a\nb",
         "The problem file 'package' must hold one line of printable text."),
    ],
)  # fmt: skip
def test_bad_problem_files(
    releases: tuple[ReleaseSettings, ...],
    problem_copy: ProblemCopy,
    member: str,
    content: str | None,
    reason: str,
) -> None:
    problem = problem_copy("crasher")
    if content is None:
        (problem / member).unlink()
    else:
        (problem / member).write_text(content)
    assert refusal(releases, problem) == reason


def test_podman_down_is_one_clear_sentence(
    retrace_config: Config, testos: Testos, tmp_path: Path
) -> None:
    # A socket file nobody listens on: what a stopped podman service leaves behind.
    url = f"unix://{tmp_path}/podman.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(tmp_path / "podman.sock"))
    settings = dataclasses.replace(retrace_config.builder, podman_url=url)
    with Analyzer(settings, retrace_config.releases, tmp_path / "state") as analyzer:
        reason = failure(analyzer, testos.crashes["crasher"].problem_dir)
    assert reason == f"The podman service at {url} cannot be reached: Connection refused."
    # The failed connection must not leak its socket (warnings are errors here).
    gc.collect()
