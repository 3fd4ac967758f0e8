"""gdb driver run inside the retrace sandbox: ``gdb -nx -batch -x gdb_report.py``.

It loads the executable and the core named by the environment, then prints the
text ABRT shows (every thread's full backtrace, shared libraries, registers,
disassembly around the faulting pc, the abort message) followed by a marker line
and one JSON document describing the same threads and frames as data, with an
exploitable rating (see :mod:`retracer.images.exploitable`, which gdb loads from
beside this file). It uses only gdb and the standard library: it runs in the
release's own gdb.

With ``RETRACER_SYSROOT`` (the view of the crash's packages, see
``builder/environment.py``), gdb reads every file through that folder: the sysroot
for the executable and the libraries, its ``usr/lib/debug`` for debug data. The
folder's name is taken out of what is printed, so the output names the files as
the crashed machine did.

With ``RETRACER_ROOT_READY`` (a pipe), the driver first waits for one line on it:
its container starts before the view exists, and the line says the view is in place.
End-of-file instead means the run is not wanted, and the driver exits at once.

The marker is random per run (``RETRACER_MARKER``), so no core can forge it; the
text has its control characters escaped and is cut at ``RETRACER_TEXT_CAP`` bytes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys

MAX_FRAMES = 256
MAX_THREADS = 4096
MAX_VALUE = 200
# Control characters other than newline and tab (C0, DEL and C1): a core's strings
# must not reach a terminal or a web page as escape sequences.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def capped(text: str, cap: int) -> str:
    """``text`` cut at ``cap`` bytes of UTF-8, with a line saying so."""
    data = text.encode()
    if len(data) <= cap:
        return text
    kept = data[:cap].decode(errors="ignore")
    return f"{kept.rsplit(chr(10), 1)[0]}\n[gdb output truncated at {cap / (1 << 20):g} MiB]\n"


def execute(command: str) -> str:
    try:
        return str(gdb.execute(command, to_string=True))
    except gdb.error as error:
        return f"({command}: {error})\n"


def unrooted(text: str, sysroot: str) -> str:
    """``text`` with the sysroot's prefix taken off every path."""
    return text.replace(f"{sysroot}/", "/") if sysroot else text


def setup(sysroot: str) -> None:
    for setting in (
        "pagination off",
        "width 0",
        "height 0",
        "confirm off",
        "print frame-arguments scalars",
        "print elements 128",
        "debuginfod enabled off",  # no network in the sandbox anyway
        "auto-load off",  # scripts shipped by packages never run (also set by -iex)
    ):
        execute(f"set {setting}")
    if sysroot:
        execute(f"set sysroot {sysroot}")
        # First the crash's debug data, then whatever was set before (the base image's,
        # a debuginfod cache).
        before = str(gdb.parameter("debug-file-directory") or "")
        execute(f"set debug-file-directory {sysroot}/usr/lib/debug:{before}".rstrip(":"))
        # The crash's libthread_db, beside its libc, before the base image's.
        libdirs = ":".join(f"{sysroot}{d}" for d in ("/usr/lib64", "/usr/lib", "/lib64", "/lib"))
        execute(f"set libthread-db-search-path $pdir:{libdirs}:$sdir")


def load(executable: str, core: str, sysroot: str) -> None:
    if executable and os.path.isfile(f"{sysroot}{executable}"):
        gdb.execute(f"file {sysroot}{executable}", to_string=True)
    gdb.execute(f"core-file {core}", to_string=True)


def signal_info() -> dict[str, object]:
    try:
        number = int(gdb.parse_and_eval("$_siginfo.si_signo"))
    except gdb.error:
        return {"number": None, "name": None}
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = None
    return {"number": number, "name": name}


def abort_message() -> str | None:
    """glibc's __abort_msg (set by assert and malloc checks): struct {unsigned size; char msg[]}."""
    try:
        pointer = int(gdb.parse_and_eval("*(unsigned long *)&__abort_msg"))
        if pointer == 0:
            return None
        return str(gdb.parse_and_eval(f"(char *)({pointer} + 4)").string()).strip() or None
    except (gdb.error, gdb.MemoryError, UnicodeDecodeError):
        return None


def short(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def frame_locals(frame: gdb.Frame) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        block = frame.block()
    except RuntimeError:
        return values
    while block is not None and not block.is_global:
        for symbol in block:
            if (symbol.is_variable or symbol.is_argument) and symbol.name not in values:
                try:
                    values[symbol.name] = short(symbol.value(frame))
                except (gdb.error, RuntimeError) as error:
                    values[symbol.name] = f"<{error}>"
        if block.function is not None:
            break
        block = block.superblock
    return values


def describe_frame(level: int, frame: gdb.Frame) -> dict[str, object]:
    sal = frame.find_sal()
    pc = frame.pc()
    return {
        "level": level,
        "function": frame.name(),
        "pc": pc,
        "file": sal.symtab.filename if sal.symtab else None,
        "line": sal.line or None,
        "library": unrooted_path(gdb.solib_name(pc)),
        "locals": frame_locals(frame),
    }


def unrooted_path(path: str | None) -> str | None:
    return unrooted(path, os.environ.get("RETRACER_SYSROOT", "")) if path else path


def describe_thread(thread: gdb.InferiorThread, crashed_num: int) -> dict[str, object]:
    thread.switch()
    frames: list[dict[str, object]] = []
    frame = gdb.newest_frame()
    while frame is not None and len(frames) < MAX_FRAMES:
        frames.append(describe_frame(len(frames), frame))
        try:
            frame = frame.older()
        except gdb.error:
            break
    return {
        "num": thread.num,
        "lwp": thread.ptid[1],
        "name": thread.name,
        "crashed": thread.num == crashed_num,
        "frames": frames,
    }


def throw_site(frames: list[dict[str, object]]) -> dict[str, object] | None:
    """Where an uncaught C++ exception was thrown: the caller of __cxa_throw."""
    for index, frame in enumerate(frames[:-1]):
        if frame["function"] in ("__cxa_throw", "__cxa_rethrow"):
            caller = frames[index + 1]
            return {k: caller[k] for k in ("function", "file", "line")}
    return None


def disassembly() -> str:
    text = execute("disassemble")
    lines = text.splitlines()
    marked = [i for i, line in enumerate(lines) if line.startswith("=>")]
    if not marked:
        return execute("x/16i $pc")
    here = marked[0]
    return "\n".join(lines[max(0, here - 16) : here + 16]) + "\n"


def root_is_ready() -> bool:
    """Wait until the host says the sysroot is in place; False: the run is not wanted."""
    pipe = os.environ.get("RETRACER_ROOT_READY")
    if not pipe:
        return True
    with open(pipe, encoding="ascii", errors="replace") as ready:
        return ready.readline(64).strip() == "ready"


def main() -> None:
    if not root_is_ready():
        return
    marker = os.environ["RETRACER_MARKER"]
    text_cap = int(os.environ.get("RETRACER_TEXT_CAP", str(16 << 20)))
    sysroot = os.environ.get("RETRACER_SYSROOT", "")
    setup(sysroot)
    load(os.environ.get("RETRACER_EXECUTABLE", ""), os.environ["RETRACER_CORE"], sysroot)
    crashed = gdb.selected_thread()
    crashed_num = crashed.num if crashed is not None else 1
    info = signal_info()
    message = abort_message()
    observed = exploitable.observe(gdb, crashed_num)

    threads = [
        describe_thread(t, crashed_num)
        for t in sorted(gdb.selected_inferior().threads(), key=lambda t: t.num)[:MAX_THREADS]
    ]
    crash_thread = next((t for t in threads if t["crashed"]), threads[0] if threads else None)
    thrown = throw_site(crash_thread["frames"]) if crash_thread else None  # type: ignore[arg-type]
    frames: list[dict[str, object]] = crash_thread["frames"] if crash_thread else []  # type: ignore[assignment]
    functions = [str(f["function"]) for f in frames if f["function"]]
    rating = exploitable.rate(observed, functions, message)

    for thread in gdb.selected_inferior().threads():
        if thread.num == crashed_num:
            thread.switch()
    sections = [
        execute("thread apply all -ascending backtrace full"),
        "Shared libraries:\n" + execute("info sharedlibrary"),
        "Registers of the crashed thread:\n" + execute("info registers"),
        "Disassembly around the faulting instruction:\n" + disassembly(),
    ]
    if message:
        sections.append(f"Abort message: {message}\n")
    if thrown:
        sections.append(
            "Uncaught C++ exception thrown in {function} at {file}:{line}\n".format(**thrown)
        )
    print(capped(escape_controls(unrooted("\n".join(sections), sysroot)), text_cap), end="")
    print(marker)
    print(
        json.dumps(
            {
                "signal": info,
                "crash_thread": crashed_num,
                "abort_message": message,
                "throw_site": thrown,
                "fault": observed.as_json(),
                "exploitable": rating.as_json(),
                "threads": threads,
            }
        )
    )


if __name__ == "__main__":  # gdb -x runs the script as __main__
    # Imported here, not above: only gdb's embedded Python has the gdb module, and
    # the rating lives beside this file (gdb does not put it on the path).
    import gdb

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import exploitable

    main()
