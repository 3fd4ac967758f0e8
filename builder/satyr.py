"""satyr's core stacktrace: its JSON shape, its normalisation, the duphash, the crash function.

The facts come from reading satyr (lib/core_stacktrace.c, core_thread.c, core_frame.c,
generic_thread.c, normalize.c, normalize_hash.gperf) and ABRT
(abrt-action-analyze-backtrace.c, abrt-action-analyze-c.c); the code is our own.

JSON (``sr_core_stacktrace_to_json``): ``{"signal": N, "executable": path,
"stacktrace": [thread, ...]}``; a thread is ``{"crash_thread": true, "frames": [...]}``
(the key only on the crash thread; a thread with no frames is ``{}``); a frame holds
``address``, ``build_id``, ``build_id_offset``, ``function_name``, ``file_name`` (the
path of the module holding the address) and ``fingerprint``, each only when known.
retracer computes no fingerprints (satyr derives them from a disassembly of the
whole function), so that key never appears.

Duphash (``sr_thread_get_duphash(thread, 3, component, SR_DUPHASH_NORMAL)``, as ABRT
calls it): normalise a copy of the crash thread, then SHA-1 (lower-case hex) of the
component name, ``"Thread\\n"`` and one line for each of the first three frames:
``<build_id>+0x<offset hex>`` when the build-id is known, else two spaces and the
function name, else ``0x<address hex>``.

Crash function (abrt-action-analyze-c): the function name of the first frame of the
normalised crash thread.

Normalisation (``sr_normalize_core_thread``), in order:

1. the outermost exit frame (abort, raise, exit, ``__stack_chk_fail``... see
   :func:`is_exit_frame`) is removed with every frame above it;
2. the prefixes ``__GI_`` and ``IA__`` (before ``gdk``, ``g_``, ``gtk``) are removed;
3. glibc's CPU-specific variants (``__memcpy_sse2``...) get their plain name;
4. frames of glibc's checks (``__assert_fail``, malloc's, ``__*_chk``) are removed
   with every frame above them; frames that never cause a crash (``_start``,
   ``__libc_start_main``, ``clone``, ``start_thread``, C++ terminate handlers...)
   are removed alone; the removable list is satyr's glibc, libstdc++, Linux and GLib
   entries (its application-specific entries are left out);
5. a first or last frame with address 0 and no function name is removed;
6. consecutive frames of the same (known) function become one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

DUPHASH_FRAMES = 3


@dataclass(frozen=True)
class CoreFrame:
    address: int | None
    build_id: str | None
    build_id_offset: int | None
    function_name: str | None
    file_name: str | None

    def to_json(self) -> dict[str, Any]:
        fields = {
            "address": self.address,
            "build_id": self.build_id,
            "build_id_offset": self.build_id_offset,
            "function_name": self.function_name,
            "file_name": self.file_name,
        }
        return {key: value for key, value in fields.items() if value is not None}

    def duphash_line(self) -> str:
        if self.build_id:
            return f"{self.build_id}+0x{self.build_id_offset or 0:x}\n"
        if self.function_name:
            return f"  {self.function_name}\n"
        return f"0x{self.address or 0:x}\n"


@dataclass(frozen=True)
class CoreThread:
    crash_thread: bool
    frames: tuple[CoreFrame, ...]

    def to_json(self) -> dict[str, Any]:
        if not self.frames:
            return {}
        body: dict[str, Any] = {"crash_thread": True} if self.crash_thread else {}
        body["frames"] = [frame.to_json() for frame in self.frames]
        return body


def core_stacktrace(
    signal: int | None, executable: str, threads: Sequence[CoreThread]
) -> dict[str, Any]:
    return {
        "signal": signal or 0,
        "executable": executable,
        "stacktrace": [thread.to_json() for thread in threads],
    }


def duphash(thread: CoreThread, component: str) -> str:
    return hashlib.sha1(duphash_text(thread, component).encode()).hexdigest()


def duphash_text(thread: CoreThread, component: str) -> str:
    frames = normalize(thread.frames)[:DUPHASH_FRAMES]
    return component + "Thread\n" + "".join(frame.duphash_line() for frame in frames)


def crash_function(thread: CoreThread) -> str | None:
    frames = normalize(thread.frames)
    return frames[0].function_name if frames else None


def normalize(frames: Sequence[CoreFrame]) -> tuple[CoreFrame, ...]:
    result = list(frames)
    exits = [i for i, frame in enumerate(result) if is_exit_frame(frame)]
    if exits:
        result = result[exits[-1] + 1 :]
    result = [_renamed(frame) for frame in result]
    kept: list[CoreFrame] = []
    for frame in result:
        if _calls(frame, _REMOVABLE_WITH_ABOVE) or is_exit_frame(frame):
            kept.clear()
        elif not _calls(frame, _REMOVABLE):
            kept.append(frame)
    if kept and kept[0].address == 0 and not kept[0].function_name:
        kept.pop(0)
    if kept and kept[-1].address == 0 and not kept[-1].function_name:
        kept.pop()
    merged: list[CoreFrame] = []
    for frame in kept:
        if merged and merged[-1].function_name and merged[-1].function_name == frame.function_name:
            continue
        merged.append(frame)
    return tuple(merged)


def is_exit_frame(frame: CoreFrame) -> bool:
    return _calls(frame, _EXIT_FRAMES)


# Function name -> substrings of file_name, one of which must match; () matches any
# file name, even none (satyr's sr_core_frame_calls_func with no file names).
_EXIT_FRAMES: dict[str, tuple[str, ...]] = {
    "__run_exit_handlers": (),
    "raise": ("libc.so", "libc-", "libpthread.so"),
    "__GI_raise": (),
    "exit": (),
    "abort": ("libc.so", "libc-"),
    "__GI_abort": (),
    "__chk_fail": ("libc.so",),
    "__stack_chk_fail": ("libc.so",),
    "kill": (),
}
# Here a file name is required ("" matches any): satyr's call_match.
_REMOVABLE_WITH_ABOVE: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "__assert_fail",
            "__assert_fail_base",
            "__chk_fail",
            "__longjmp_chk",
            "__malloc_assert",
            "__strcat_chk",
            "__strcpy_chk",
            "__strncpy_chk",
            "__vsnprintf_chk",
            "___vsnprintf_chk",
            "__snprintf_chk",
            "___snprintf_chk",
            "__vasprintf_chk",
            "__vsprintf_chk",
            "___sprintf_chk",
            "__fwprintf_chk",
            "__asprintf_chk",
            "___printf_chk",
            "___fprintf_chk",
            "__vswprintf_chk",
        ),
        ("",),
    ),
    **dict.fromkeys(
        ("malloc_consolidate", "malloc_printerr", "_int_malloc", "_int_free", "_int_realloc"),
        ("malloc.c", "libc"),
    ),
    **dict.fromkeys(
        (
            "_int_memalign",
            "__libc_free",
            "__libc_malloc",
            "__libc_memalign",
            "__libc_realloc",
            "__posix_memalign",
            "__libc_calloc",
        ),
        ("malloc.c",),
    ),
    "__libc_fatal": ("libc",),
}
_REMOVABLE: dict[str, tuple[str, ...]] = {
    # glibc
    "_start": ("",),
    "__libc_start_main": ("libc",),
    "clone": ("clone.S", "libc"),
    "poll": ("libc",),
    "_IO_new_fclose": ("iofclose.c", "libc"),
    "_IO_vfprintf_internal": ("vfprintf.c", "libc"),
    "_IO_default_xsputn": ("genops.c", "libc"),
    "_IO_wdefault_xsputn": ("wgenops.c", "libc"),
    "__libc_message": ("libc_fatal.c", "libc"),
    "start_thread": ("pthread_create.c", "libpthread"),
    # libstdc++
    "__gnu_cxx::__verbose_terminate_handler": ("vterminate.cc",),
    "__cxxabiv1::__terminate": ("eh_terminate.cc",),
    "std::terminate": ("eh_terminate.cc",),
    "__cxxabiv1::__cxa_throw": ("eh_throw.cc",),
    "__cxxabiv1::__cxa_rethrow": ("eh_throw.cc",),
    "__verbose_terminate_handler": ("vterminate.cc",),
    "__cxxabiv1::__cxa_pure_virtual": ("pure.cc",),
    # Linux
    "__kernel_vsyscall": ("",),
    # GLib
    "g_log": ("gmessages.c", "libglib"),
    "g_logv": ("gmessages.c", "libglib"),
    "g_assertion_message": ("gtestutils.c", "libglib"),
    "g_assertion_message_expr": ("gtestutils.c", "libglib"),
    "g_free": ("gmem.c", "libglib"),
    "g_main_context_dispatch": ("gmain.c", "libglib"),
    "g_main_context_iterate": ("gmain.c", "libglib"),
    "g_main_dispatch": ("gmain.c", "libglib"),
    "g_main_loop_run": ("gmain.c", "libglib"),
    "g_thread_abort": ("libglib",),
    "_g_log_abort": ("gmessages.c", "libglib"),
    "g_log_default_handler": ("gmessages.c", "libglib"),
    "g_log_writer_default": ("gmessages.c", "libglib"),
    "g_log_structured_array": ("gmessages.c", "libglib"),
    "g_log_structured": ("gmessages.c", "libglib"),
}
_CPU_SPECIFIC = [
    "memchr",
    "memcmp",
    "memcpy",
    "memmove",
    "memset",
    "rawmemchr",
    "strcasecmp",
    "strcasecmp_l",
    "strcat",
    "strchr",
    "strchrnul",
    "strcmp",
    "strcpy",
    "strcspn",
    "strlen",
    "strncmp",
    "strncpy",
    "strpbrk",
    "strrchr",
    "strspn",
    "strstr",
    "strtok",
]
_CPU_SUFFIXES = ("_sse2", "_sse2_bsf", "_ssse3", "_ssse3_rep", "_ssse3_back", "_sse42", "_ia32")


def _calls(frame: CoreFrame, table: dict[str, tuple[str, ...]]) -> bool:
    name = frame.function_name
    if name is None or name not in table:
        return False
    files = table[name]
    if not files:
        return True
    return frame.file_name is not None and any(part in frame.file_name for part in files)


def _renamed(frame: CoreFrame) -> CoreFrame:
    name = frame.function_name
    if name is None:
        return frame
    for prefix, strip in (("IA__gdk", 4), ("IA__g_", 4), ("IA__gtk", 4), ("__GI_", 5)):
        if name.startswith(prefix):
            name = name[strip:]
    for plain in _CPU_SPECIFIC:
        for suffix in _CPU_SUFFIXES:
            if name == f"__{plain}{suffix}" and _in_file(
                frame, (plain, "/sysdeps" if suffix == "_ia32" else "/sysdeps/", "libc.so")
            ):
                name = plain
    return replace(frame, function_name=name) if name != frame.function_name else frame


def _in_file(frame: CoreFrame, parts: tuple[str, ...]) -> bool:
    return frame.file_name is not None and any(part in frame.file_name for part in parts)
