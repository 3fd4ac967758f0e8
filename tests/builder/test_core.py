"""The one check of a crash (builder.problem + builder.core), without containers:
the same function guards uploads and ``retracer retrace``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from retracer.builder.core import read_core_header
from retracer.builder.errors import CoreRejected, ProblemRejected
from retracer.builder.problem import read_problem
from retracer.server.config import config_from_mapping
from retracer.sync.errors import UnknownRelease
from testing.server.archives import PROBLEM, abrt_archive, elf_core

RELEASES = [
    {
        "id": "testos-1-x86_64",
        "os_release": "TestOS release 1 (Demo)",
        "repositories": ["/nonexistent"],
        "bootstrap": {},
    }
]


def problem_dir(tmp_path: Path, **files: bytes) -> Path:
    folder = tmp_path / "problem"
    folder.mkdir()
    for name, data in {**PROBLEM, **files}.items():
        (folder / name).write_bytes(data)
    return folder


def releases(tmp_path: Path) -> tuple:  # type: ignore[type-arg]
    return config_from_mapping({"releases": RELEASES}, tmp_path).releases


def test_program_header_table_is_read_in_bounded_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """65534 standard entries (3.6 MiB) are read a chunk at a time, never in one go."""
    core = tmp_path / "core"
    count = 0xFFFE
    entry = elf_core()[64:120]
    core.write_bytes(elf_core(phnum=count)[:64] + entry * count + bytes(4096))
    largest = 0
    real_open = Path.open

    def spying_open(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        file = real_open(self, *args, **kwargs)  # type: ignore[arg-type]
        read = file.read

        def bounded(size: int = -1) -> bytes:
            nonlocal largest
            data: bytes = read(size)
            largest = max(largest, len(data))
            return data

        file.read = bounded
        return file

    monkeypatch.setattr(Path, "open", spying_open)
    header = read_core_header(core)
    assert header.program_headers == count
    assert 0 < largest <= 4096 * 56


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"phentsize": 0xFFFF, "phnum": 0xFFFF}, "its program headers are 65535 bytes each"),
        ({"phentsize": 64}, "its program headers are 64 bytes each, not the standard 56"),
        ({"phnum": 0xFFFF}, "it has more than 65534 program headers"),
        ({"phnum": 0}, "it has no program headers"),
        ({"phoff": 1 << 40}, "it is truncated: its program headers run past the end"),
    ],
)
def test_hostile_program_header_tables_are_refused(
    tmp_path: Path, fields: dict[str, int], reason: str
) -> None:
    core = tmp_path / "core"
    core.write_bytes(elf_core(**fields))
    with pytest.raises(CoreRejected) as caught:
        read_core_header(core)
    assert caught.value.reason.startswith(f"The core cannot be used: {reason}")


def test_a_32_bit_core_without_an_i386_release_is_an_unknown_release(tmp_path: Path) -> None:
    folder = problem_dir(tmp_path, coredump=elf_core(machine=3, elf_class=1))
    with pytest.raises(UnknownRelease) as caught:
        read_problem(folder, releases(tmp_path))
    assert caught.value.reason == (
        "Unknown release 'testos-1-i386'; this server supports: testos-1-x86_64."
    )


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"executable": b"crasher"}, "The problem file 'executable' must hold an absolute path."),
        ({"rootdir": b"var/lib/mock"}, "The problem file 'rootdir' must hold an absolute path."),
        (
            {"os_release": b"TestOS release 1\x1b[31m"},
            "The problem file 'os_release' must hold one line of printable text.",
        ),
        (
            {"package": "crasher\u202e1-0.1".encode()},
            "The problem file 'package' must hold one line of printable text.",
        ),
        ({"package": b"p" * 129}, "The problem file 'package' is longer than 128 bytes."),
        ({"package": b"\xff\xfe"}, "The problem file 'package' is not UTF-8 text."),
        (
            {"packages": b"a-1-1.x86_64\n\x07\n"},
            "The problem file 'packages' must hold lines of printable text.",
        ),
    ],
)
def test_text_files_must_be_printable_and_paths_absolute(
    tmp_path: Path, files: dict[str, bytes], reason: str
) -> None:
    with pytest.raises(ProblemRejected) as caught:
        read_problem(problem_dir(tmp_path, **files), releases(tmp_path))
    assert caught.value.reason == reason


def test_retrace_command_runs_the_same_check(tmp_path: Path) -> None:
    """No podman is reachable: the check answers before anything is started."""
    archive = tmp_path / "crash.tar.xz"
    archive.write_bytes(abrt_archive({**PROBLEM, "coredump": elf_core(machine=3, elf_class=1)}))
    config = tmp_path / "retracer.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "builder": {"podman_url": f"unix://{tmp_path}/no-podman.sock"},
                "releases": RELEASES,
            }
        )
    )
    command = [sys.executable, "-m", "retracer.server.cli", "--config", str(config)]
    run = subprocess.run(
        [*command, "retrace", "--quiet", str(archive)], capture_output=True, text=True, timeout=60
    )
    assert (run.returncode, run.stderr) == (
        1,
        "retracer: Unknown release 'testos-1-i386'; this server supports: testos-1-x86_64.\n",
    )
