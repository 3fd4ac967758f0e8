"""Fuzzing with hypothesis: byte-level mutations of seed inputs, and the corpus.

Each target replays every file of its ``corpus/<target>/`` folder (inputs that once
broke it, checked in), then lets hypothesis mutate seeds for a bounded number of
examples: ``RETRACER_FUZZ_EXAMPLES`` (default 150, a few seconds) sets how many.
An input that breaks a target is written to its corpus folder before the test
fails, so it can be checked in as a regression case.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = int(os.environ.get("RETRACER_FUZZ_EXAMPLES", "150"))

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # the corpus folder is the memory that matters, and it is checked in
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def corpus(target: str) -> list[Path]:
    return sorted((CORPUS / target).glob("*.bin"))


def keep_if_failing(target: str, data: bytes, check: Callable[[bytes], None]) -> None:
    """Run ``check(data)``; if it fails, save ``data`` in the corpus, then fail."""
    try:
        check(data)
    except BaseException:
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(data).hexdigest()[:16]
        (folder / f"{name}.bin").write_bytes(data)
        raise


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A seed with a few random edits: flips, overwrites with edge values, inserts,
    deletions, truncation, and a splice of another seed."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "edge", "insert", "delete", "cut", "splice"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "edge" and data:
            value = draw(st.sampled_from([b"\0", b"\xff", b"\x7f", b"\x80", b"7", b" ", b"\n"]))
            width = draw(st.integers(1, 12))
            data[at : at + width] = value * width
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "cut":
            del data[at:]
        elif kind == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, max(0, len(other) - 1)))
            data[at:] = other[start:]
    return bytes(data)
