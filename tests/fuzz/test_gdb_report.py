"""Fuzzing the host's parser of the gdb driver's output (split_output, build_report).

The driver runs in a gdb that read an untrusted core, so its output is untrusted
too: whatever it prints, the parser returns a Report whose every view works, or
raises SandboxFailed, never anything else.

The corpus (``corpus/gdb_report/``) holds real driver documents (the testos crashes
crasher, threadcrash and exploit-jump) and ``edge-*.json``, the kinds of input the
fuzzer broke the parser with when its type checks were taken out (a bool for an
int, frames that are not a list, a rating of 9...). Each file is checked as it is,
and hypothesis mutates the real documents.
CI runs ``RETRACER_FUZZ_EXAMPLES`` examples (see :mod:`tests.fuzz.mutations`). To fuzz
longer::

    RETRACER_FUZZ_EXAMPLES=200000 .venv/bin/pytest tests/fuzz -q

and copy any failing input hypothesis prints into the corpus with the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retracer.builder.errors import SandboxFailed
from retracer.builder.model import Module
from retracer.builder.report import Facts, Report, build_report, split_output
from tests.fuzz.mutations import EXAMPLES

CORPUS = Path(__file__).parent / "corpus" / "gdb_report"
MARKER = "----- retracer report 0123456789abcdef -----"
FACTS = Facts(
    release="testos-1-x86_64",
    executable="/usr/bin/crasher",
    package="crasher-1.0-1.x86_64",
    component="crasher",
    mapped=(
        Module("/usr/bin/crasher", "ab" * 20, 0x555555554000, 0x5000),
        Module("/usr/lib64/libcrash.so.2", "cd" * 20, 0x7FFFF7FB0000, 0x4000),
    ),
    resolved=(),
    packages=("crasher-1.0-1.x86_64",),
    environment_cached=True,
    debuginfo_sources={},
)


def parse(stdout: str) -> Report | None:
    """The parser's whole contract: a usable Report, or SandboxFailed (then None)."""
    try:
        text, data = split_output(stdout, MARKER)
        report = build_report(data, FACTS)
    except SandboxFailed:
        return None
    json.dumps(report.to_json())
    json.dumps(report.core_backtrace())
    assert report.exploitable_text().count("\n") == 2
    assert report.duphash is None or len(report.duphash) == 40
    assert MARKER not in text
    return report


def corpus() -> list[Path]:
    return sorted(CORPUS.iterdir())


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.name)
def test_corpus(path: Path) -> None:
    parse(f"text\n{MARKER}\n{path.read_text()}")


def test_real_documents_parse() -> None:
    for path in corpus():
        if path.name in ("crasher.json", "threadcrash.json", "exploit-jump.json"):
            assert parse(f"text\n{MARKER}\n{path.read_text()}") is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def mutated(value: Any) -> st.SearchStrategy[Any]:
    """The value, or a replacement of any JSON type, or (for containers) mutated parts."""
    if isinstance(value, dict):
        parts = st.fixed_dictionaries({k: mutated(v) for k, v in value.items()})
        dropped = st.sampled_from(sorted(value) or [""]).map(
            lambda key: {k: v for k, v in value.items() if k != key}
        )
        return st.one_of(parts, parts, dropped, json_values)
    if isinstance(value, list):
        return st.one_of(st.lists(st.sampled_from(value), max_size=6).flatmap(
            lambda items: st.tuples(*(mutated(item) for item in items)).map(list)
        ) if value else st.just([]), json_values)  # fmt: skip
    return st.one_of(st.just(value), st.just(value), json_values)


SEEDS = [json.loads(path.read_text()) for path in corpus() if path.suffix == ".json"]
documents = st.sampled_from(SEEDS).flatmap(mutated)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=documents, text=st.text(max_size=200))
def test_mutated_documents(document: Any, text: str) -> None:
    parse(f"{text}\n{MARKER}\n{json.dumps(document)}")


@settings(max_examples=EXAMPLES, deadline=None)
@given(stdout=st.text(max_size=400))
def test_any_text(stdout: str) -> None:
    parse(stdout)
    parse(f"{MARKER}\n{stdout}")
