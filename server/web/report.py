"""The task page's view of a retrace report: :func:`read_report` is the one reader.

The report is the JSON the worker stores as ``backtrace.json``. Only this function
knows its keys, so when the report becomes typed elsewhere, this is the one place to
follow it. Every value stays a plain string or number: the templates escape them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FrameRow:
    level: int | None
    function: str
    site: str  # "file:line", or "" without debuginfo
    module: str
    build_id: str
    offset: str  # hexadecimal offset in the module, or ""
    without_debuginfo: bool
    # (name, value as gdb printed it) of the frame's arguments and variables.
    locals: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ThreadView:
    num: int | None
    lwp: int | None
    name: str
    crashed: bool
    frames: tuple[FrameRow, ...]


@dataclass(frozen=True)
class ModuleRow:
    path: str
    build_id: str
    package: str
    debuginfo: str
    # Why a package or its debuginfo is missing, in a sentence; "" when both were found.
    missing: str


@dataclass(frozen=True)
class ReportView:
    signal: str
    crash_thread: int | None
    abort_message: str
    threads: tuple[ThreadView, ...]  # the crashed thread first
    modules: tuple[ModuleRow, ...]
    packages: tuple[str, ...]


def read_report(text: str) -> ReportView:
    """Shape ``backtrace.json`` for the page; unknown or missing keys become blanks."""
    data = json.loads(text)
    without_debuginfo = {
        str(entry.get("build_id")) for entry in data.get("missing_debuginfo") or ()
    }
    modules = tuple(_module(entry) for entry in data.get("modules") or ())
    threads = [_thread(entry, without_debuginfo) for entry in data.get("threads") or ()]
    threads.sort(key=lambda thread: not thread.crashed)
    signal = data.get("signal") or {}
    signal_text = " ".join(
        str(part) for part in (signal.get("name"), signal.get("number")) if part is not None
    )
    return ReportView(
        signal=signal_text,
        crash_thread=data.get("crash_thread"),
        abort_message=str(data.get("abort_message") or ""),
        threads=tuple(threads),
        modules=modules,
        packages=tuple(str(p) for p in data.get("packages") or ()),
    )


def _thread(entry: dict[str, Any], without_debuginfo: set[str]) -> ThreadView:
    return ThreadView(
        num=entry.get("num"),
        lwp=entry.get("lwp"),
        name=str(entry.get("name") or ""),
        crashed=bool(entry.get("crashed")),
        frames=tuple(_frame(frame, without_debuginfo) for frame in entry.get("frames") or ()),
    )


def _frame(frame: dict[str, Any], without_debuginfo: set[str]) -> FrameRow:
    file, line = frame.get("file"), frame.get("line")
    site = f"{file}:{line}" if file and line is not None else str(file or "")
    offset = frame.get("offset")
    build_id = str(frame.get("build_id") or "")
    return FrameRow(
        level=frame.get("level"),
        function=str(frame.get("function") or "??"),
        site=site,
        module=str(frame.get("module") or ""),
        build_id=build_id,
        offset=f"{offset:#x}" if isinstance(offset, int) else "",
        without_debuginfo=bool(build_id) and build_id in without_debuginfo,
        locals=tuple((str(k), str(v)) for k, v in (frame.get("locals") or {}).items()),
    )


def _module(entry: dict[str, Any]) -> ModuleRow:
    package, debuginfo = entry.get("package"), entry.get("debuginfo")
    if not package:
        missing = "No package in this server's repository ships this build-id."
    elif not debuginfo:
        missing = "No debuginfo package in this server's repository ships this build-id."
    else:
        missing = ""
    return ModuleRow(
        path=str(entry.get("path") or ""),
        build_id=str(entry.get("build_id") or ""),
        package=str(package or ""),
        debuginfo=str(debuginfo or ""),
        missing=missing,
    )
