"""Fuzz target: the host-side reader of a core's ELF header (builder.core).

Whatever the bytes, it returns a CoreHeader or raises CoreRejected with one sentence,
and it never reads more than the header and a bounded program header table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retracer.builder.core import read_core_header
from retracer.builder.errors import CoreRejected
from testing.server.archives import elf_core
from tests.fuzz.mutations import FUZZ_SETTINGS, corpus, keep_if_failing, mutated

TARGET = "core"

SEEDS = [
    elf_core(),
    elf_core(machine=3, elf_class=1),
    elf_core(machine=183, phnum=3, size=8192),
    elf_core(e_type=2),
]


def read(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        core = Path(scratch) / "core"
        core.write_bytes(data)
        try:
            header = read_core_header(core)
        except CoreRejected as error:
            assert "\n" not in error.reason and error.reason.endswith("."), error.reason
            return
        assert header.size == len(data)
        assert 0 < header.program_headers <= 0xFFFE


@pytest.mark.parametrize("path", corpus(TARGET), ids=lambda p: p.name)
def test_corpus(path: Path) -> None:
    read(path.read_bytes())


@FUZZ_SETTINGS
@given(data=mutated(SEEDS))
def test_mutated_core(data: bytes) -> None:
    keep_if_failing(TARGET, data, read)


@FUZZ_SETTINGS
@given(
    machine=st.sampled_from([3, 62, 183, 21, 22, 243, 0, 0xFFFF]),
    elf_class=st.sampled_from([1, 2]),
    e_type=st.integers(0, 0xFFFF),
    phentsize=st.integers(0, 0xFFFF),
    phnum=st.integers(0, 0xFFFF),
    phoff=st.integers(0, 1 << 32),
    size=st.integers(0, 1 << 16),
)
def test_any_header_fields(
    machine: int, elf_class: int, e_type: int, phentsize: int, phnum: int, phoff: int, size: int
) -> None:
    data = elf_core(machine, elf_class, size, e_type=e_type, phentsize=phentsize, phnum=phnum,
                    phoff=phoff if elf_class == 2 else phoff & 0xFFFFFFFF)  # fmt: skip
    keep_if_failing(TARGET, data, read)
