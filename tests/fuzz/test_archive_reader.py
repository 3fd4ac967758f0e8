"""Fuzz target: the archive reader and member checks (builder.archive + unpack_problem).

Whatever the bytes, unpacking ends in a few ways only: success, or an ArchiveError
with one sentence, which the server answers with a 4xx status; nothing but known
problem files is written.
"""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retracer.builder.errors import ArchiveError
from retracer.builder.problem_format import ARCHIVE_MEMBER_LIMITS, UnpackLimits, unpack_problem
from retracer.server.errors import status_of, upload_refusal
from testing.server import hostile
from testing.server.archives import Member, regular, tar
from tests.fuzz.mutations import FUZZ_SETTINGS, corpus, keep_if_failing, mutated

TARGET = "archive"
LIMITS = UnpackLimits(max_unpacked_mib=2, xz_memory_limit_mib=16)

TARS = [
    tar(regular()),
    tar(regular(), format=tarfile.PAX_FORMAT),
    tar([*regular(), Member("rootdir", b"/mock"), Member("packages", b"a-1-1.x86_64\n")]),
    hostile.pax_global_chain(12),
    hostile.gnu_longname_chain(12),
    hostile.bad_sparse_map(),
    hostile.negative_size(),
    hostile.garbled_size_field(),
]


def unpack(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        crash = Path(scratch) / "crash"
        try:
            unpack_problem(io.BytesIO(data), crash, LIMITS)
        except ArchiveError as error:
            refusal = upload_refusal(error)
            assert refusal.reason == error.reason
            assert 400 <= status_of(refusal) < 500, error.reason
            assert "\n" not in error.reason and error.reason.endswith("."), error.reason
        if crash.exists():
            assert {p.name for p in crash.iterdir()} <= set(ARCHIVE_MEMBER_LIMITS)


@pytest.mark.parametrize("path", corpus(TARGET), ids=lambda p: p.name)
def test_corpus(path: Path) -> None:
    unpack(path.read_bytes())


@FUZZ_SETTINGS
@given(
    tar_data=mutated(TARS),
    compression=st.sampled_from(["none", "xz", "gzip"]),
)
def test_mutated_tar_in_any_compression(tar_data: bytes, compression: str) -> None:
    if compression == "xz":
        data = lzma.compress(tar_data, preset=0)
    elif compression == "gzip":
        data = gzip.compress(tar_data, compresslevel=1)
    else:
        data = tar_data
    keep_if_failing(TARGET, data, unpack)


@FUZZ_SETTINGS
@given(data=mutated([lzma.compress(t, preset=0) for t in TARS[:3]] + [hostile.huge_xz_dictionary()]
                    + [gzip.compress(t) for t in TARS[:3]]))  # fmt: skip
def test_mutated_compressed_stream(data: bytes) -> None:
    keep_if_failing(TARGET, data, unpack)
