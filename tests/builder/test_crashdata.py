"""Crash data beyond the text, from real retraces of every testos crash: satyr's
core_backtrace, the duphash and crash function, and the exploitable rating.

The expected values are worked out by hand from satyr's rules (see
retracer.builder.satyr) and each crash's raw crash thread, as follows.

- crasher, threadcrash, quietcrash: no exit frame and nothing removable, so the
  duphash takes raw frames 0-2 (threadcrash's 1 and 2 are libc's unnamed thread
  start frames).
- exploit-write, -nullread, -illegal, -fpe: two frames (the function, main).
- exploit-jump: frame 0 is the invalid pc 0x414141414141 (no module, no name): kept,
  since only a *zero* address without a name is dropped; so frames 0-2.
- cxxabort: the outermost exit frame is ``abort`` (in libc.so, frame 2), removed
  with everything above; the two unnamed libstdc++ frames and
  ``std::terminate()`` follow (gdb's name carries "()", so satyr's
  ``std::terminate`` entry does not match): frames 3-5, no crash function.
- exploit-assert: ``abort`` (frame 2) cuts as above; ``__assert_fail`` (frame 4,
  file in libc) is removed with the unnamed frame above it: frames 5-6.
- exploit-heap: ``abort`` (frame 2) cuts; glibc without symbols names only
  ``free``, which satyr does not list (it lists ``__libc_free``): frames 3-5.
- exploit-stackguard: ``__stack_chk_fail`` in libc.so (frame 5) is the outermost
  exit frame: frames 6-8 (the function, then the smashed stack's frames).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from retracer.builder.model import RetraceResult
from testing.testos import Testos

Retraced = Callable[[str], RetraceResult]

# crash -> (raw crash-thread frames the duphash takes, the crash function)
VECTORS: dict[str, tuple[tuple[int, ...], str | None]] = {
    "crasher": ((0, 1, 2), "crash_v20_walk_list"),
    "threadcrash": ((0, 1, 2), "threadcrash_v10_faulter"),
    "quietcrash": ((0, 1, 2), "quietcrash_v10_on_item"),
    "cxxabort": ((3, 4, 5), None),
    "exploit-write": ((0, 1), "exploits_write"),
    "exploit-jump": ((0, 1, 2), None),
    "exploit-nullread": ((0, 1), "exploits_nullread"),
    "exploit-assert": ((5, 6), "exploits_assert"),
    "exploit-stackguard": ((6, 7, 8), "exploits_stackguard"),
    "exploit-heap": ((3, 4, 5), None),
    "exploit-illegal": ((0, 1), "exploits_illegal"),
    "exploit-fpe": ((0, 1), "exploits_fpe"),
}
SIGNALS = {"cxxabort": 6, "exploit-assert": 6, "exploit-stackguard": 6, "exploit-heap": 6,
           "exploit-illegal": 4, "exploit-fpe": 8}  # fmt: skip
# crash -> (rating, the start of the reason)
RATINGS = {
    "exploit-write": (6, "Write to an invalid address"),
    "exploit-jump": (7, "Jump or call to an invalid address"),
    "exploit-nullread": (1, "NULL pointer read"),
    "exploit-assert": (1, "abort() from a failed assertion"),
    "exploit-stackguard": (6, "Stack buffer overflow caught by the stack protector"),
    "exploit-heap": (6, "Heap corruption detected by glibc"),
    "exploit-illegal": (5, "Illegal instruction"),
    "exploit-fpe": (1, "Arithmetic exception (SIGFPE)"),
}


def line_of(frame: dict[str, object]) -> str:
    """satyr's duphash line of one core frame, written out again from its rule."""
    if frame.get("build_id"):
        return f"{frame['build_id']}+0x{frame['build_id_offset']:x}\n"
    if frame.get("function_name"):
        return f"  {frame['function_name']}\n"
    return f"0x{frame['address']:x}\n"


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_core_backtrace_duphash_and_crash_function(
    retraced: Retraced, testos: Testos, name: str
) -> None:
    crash = testos.crashes[name]
    report = retraced(name).report
    core_backtrace = report.core_backtrace()

    assert core_backtrace["signal"] == SIGNALS.get(name, 11)
    assert core_backtrace["executable"] == crash.executable
    threads = core_backtrace["stacktrace"]
    assert len(threads) == len(report.threads)
    (crashed,) = [t for t in threads if t.get("crash_thread")]
    assert all(set(t) <= {"crash_thread", "frames"} for t in threads)
    modules = {m.path: m.build_id for m in report.modules}
    for frame in crashed["frames"]:
        assert set(frame) <= {"address", "build_id", "build_id_offset", "function_name",
                              "file_name"}  # fmt: skip
        assert isinstance(frame["address"], int)
        if "build_id" in frame:
            assert modules[frame["file_name"]] == frame["build_id"]
            assert 0 <= frame["build_id_offset"] < 1 << 32
    executable_frames = [f for f in crashed["frames"] if f.get("file_name") == crash.executable]
    assert executable_frames and all(len(f["build_id"]) == 40 for f in executable_frames)

    taken, function = VECTORS[name]
    component = crash.package.rsplit("-", 2)[0]
    text = component + "Thread\n" + "".join(line_of(crashed["frames"][i]) for i in taken)
    assert report.duphash == hashlib.sha1(text.encode()).hexdigest()
    assert report.crash_function == function
    assert report.to_json()["duphash"] == report.duphash


@pytest.mark.parametrize("name", sorted(RATINGS))
def test_each_exploitable_class_gets_its_rating(retraced: Retraced, name: str) -> None:
    report = retraced(name).report
    rating, reason = RATINGS[name]

    assert report.exploitable.rating == rating
    assert report.exploitable.reason.startswith(reason)
    lines = report.exploitable_text().splitlines()
    assert lines[0].startswith("Likely crash reason: ")
    assert lines[1] == f"Exploitable rating (0-8 scale): {rating}"
    assert report.to_json()["exploitable"] == {
        "rating": rating,
        "reason": report.exploitable.reason,
    }
