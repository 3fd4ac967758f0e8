"""The gdb driver's output on the host: the per-run marker, the caps, the escaping."""

from __future__ import annotations

import json

import pytest

from retracer.builder.errors import SandboxFailed
from retracer.builder.report import split_output
from retracer.builder.sandbox import _read_capped
from retracer.images.gdb_report import capped, escape_controls

MARKER = "----- retracer report 5f0c1d2e -----"


def test_a_marker_printed_by_the_core_does_not_split_the_output() -> None:
    # The old fixed marker in the core's memory, printed in the text (a local) and
    # again in the JSON after the real marker: only this run's marker, which is
    # random, splits the output.
    fixed = "----- retracer report -----"
    text = f'#0 f (s=0x1 "{fixed}")\n'
    document = {"threads": [], "local": fixed + "\n" + fixed}
    stdout = f"{text}{MARKER}\n{json.dumps(document)}\n"
    found, data = split_output(stdout, MARKER)
    assert found == text
    assert data == document


@pytest.mark.parametrize(
    "stdout",
    ["no marker at all", f"{MARKER}\nnot json", f"{MARKER}\n[1, 2]", f"x{MARKER}", ""],
)
def test_no_or_malformed_report_is_a_sandbox_failure(stdout: str) -> None:
    with pytest.raises(SandboxFailed) as caught:
        split_output(stdout, MARKER)
    assert "gdb printed" in caught.value.reason


def test_control_characters_are_escaped_but_newlines_and_tabs_kept() -> None:
    raw = "a\x1b[31mred\x1b[0m\tb\nc\x00d\x7f\x9b"
    assert escape_controls(raw) == "a\\x1b[31mred\\x1b[0m\tb\nc\\x00d\\x7f\\x9b"


def test_text_over_the_cap_is_cut_at_a_line_with_a_note() -> None:
    text = "".join(f"line {n}\n" for n in range(100_000))
    cut = capped(text, 1 << 16)
    assert len(cut.encode()) <= (1 << 16) + 100
    assert cut.endswith("\n[gdb output truncated at 0.0625 MiB]\n")
    assert cut.splitlines()[-2].startswith("line ")
    assert capped("short\n", 1 << 16) == "short\n"


def test_output_beyond_the_cap_is_not_read() -> None:
    read: list[int] = []

    def chunks():  # type: ignore[no-untyped-def]
        for n in range(1000):
            read.append(n)
            yield b"x" * 1024

    assert len(_read_capped(chunks(), 4096)) == 4096
    assert len(read) == 5  # stops at the first chunk past the cap
    assert _read_capped(iter([b"ab", b"cd"]), None) == b"abcd"
