"""satyr's core stacktrace shape, normalisation and duphash, against hand-made vectors.

Each expected digest was computed once with ``printf '<text>' | sha1sum`` from the
duphash text written beside it (component, "Thread\\n", one line per frame).
"""

from __future__ import annotations

from retracer.builder.satyr import (
    CoreFrame,
    CoreThread,
    core_stacktrace,
    crash_function,
    duphash,
    duphash_text,
    normalize,
)

LIBC = "/usr/lib64/libc.so.6"
APP = "/usr/bin/crasher"


def frame(
    function: str | None, file: str | None = APP, build_id: str | None = "abc", offset: int = 0x10,
    address: int = 0x1000,
) -> CoreFrame:  # fmt: skip
    return CoreFrame(address, build_id if file else None, offset if file else None, function, file)


def test_json_shape_is_satyrs() -> None:
    threads = [
        CoreThread(False, ()),
        CoreThread(True, (frame("f"), CoreFrame(0x4141, None, None, None, None))),
    ]
    assert core_stacktrace(11, APP, threads) == {
        "signal": 11,
        "executable": APP,
        "stacktrace": [
            {},
            {
                "crash_thread": True,
                "frames": [
                    {"address": 0x1000, "build_id": "abc", "build_id_offset": 0x10,
                     "function_name": "f", "file_name": APP},
                    {"address": 0x4141},
                ],
            },
        ],
    }  # fmt: skip


def test_duphash_of_a_plain_thread() -> None:
    thread = CoreThread(True, (frame("crash"), frame("a", offset=0x20), frame("b"), frame("c")))
    assert duphash_text(thread, "crasher") == "crasherThread\nabc+0x10\nabc+0x20\nabc+0x10\n"
    # printf 'crasherThread\nabc+0x10\nabc+0x20\nabc+0x10\n' | sha1sum
    assert duphash(thread, "crasher") == "cecb706c7c5e6d780b01cf9e330038a8e0fb2edd"


def test_lines_without_build_id_use_the_name_then_the_address() -> None:
    thread = CoreThread(True, (frame("f", file=None), frame(None, file=None, address=0xBEEF)))
    assert duphash_text(thread, "") == "Thread\n  f\n0xbeef\n"


def test_exit_frames_and_glibc_checks_are_cut_with_what_is_above() -> None:
    frames = (
        frame(None, LIBC),
        frame("raise", LIBC),
        frame("abort", LIBC),
        frame(None, LIBC),
        frame("__assert_fail", LIBC),
        frame("check", offset=0x30),
        frame("main"),
        frame("__libc_start_main", LIBC),
        frame("_start"),
    )
    assert [f.function_name for f in normalize(frames)] == ["check", "main"]
    assert crash_function(CoreThread(True, frames)) == "check"


def test_raise_outside_libc_is_no_exit_frame_and_prefixes_go() -> None:
    frames = (frame("raise", APP), frame("__GI_memcpy"), frame("__memcpy_sse2", LIBC))
    assert [f.function_name for f in normalize(frames)] == ["raise", "memcpy"]


def test_recursion_merges_and_null_frames_at_the_ends_go() -> None:
    frames = (
        CoreFrame(0, None, None, None, None),
        frame("walk"),
        frame("walk"),
        frame("main"),
        CoreFrame(0, None, None, None, None),
    )
    assert [f.function_name for f in normalize(frames)] == ["walk", "main"]
