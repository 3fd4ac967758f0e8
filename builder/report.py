"""Turn the gdb driver's output into the backtrace text and the JSON report.

The report's shape::

    {"release": "...", "executable": "...", "package": "...",
     "signal": {"number": 11, "name": "SIGSEGV"}, "crash_thread": 1,
     "abort_message": str | null, "throw_site": {function, file, line} | null,
     "threads": [{"num", "lwp", "name", "crashed",
                  "frames": [{"level", "function", "file", "line", "pc",
                              "module", "build_id", "offset", "locals"}]}],
     "modules": [{"path", "build_id", "package", "debuginfo"}],
     "missing_debuginfo": [{"path", "build_id"}], "packages": ["NEVRA", ...]}
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from retracer.builder.errors import SandboxFailed
from retracer.builder.model import Module, ResolvedModule
from retracer.images.gdb_report import MARKER


@dataclass(frozen=True)
class GdbReport:
    backtrace: str
    data: dict[str, Any]


def parse_gdb_output(stdout: str) -> GdbReport:
    """Split the driver's stdout into text and data.

    Raises:
        SandboxFailed: the driver printed no report (gdb died or was killed).
    """
    text, marker, tail = stdout.rpartition(MARKER)
    if not marker:
        raise SandboxFailed("gdb", "gdb printed no report")
    try:
        data = json.loads(tail)
    except ValueError as error:
        raise SandboxFailed("gdb", "gdb printed a malformed report") from error
    if not isinstance(data, dict) or not isinstance(data.get("threads"), list):
        raise SandboxFailed("gdb", "gdb printed a malformed report")
    return GdbReport(backtrace=text, data=data)


def locate_frames(data: dict[str, Any], modules: Sequence[Module]) -> None:
    """Add each frame's module path, build-id and offset, from the mapped ranges."""
    ordered = sorted((m for m in modules if m.size), key=lambda m: m.start)
    starts = [m.start for m in ordered]
    for thread in data["threads"]:
        for frame in thread.get("frames", []):
            pc = frame.get("pc")
            index = bisect.bisect_right(starts, pc) - 1 if isinstance(pc, int) else -1
            module = ordered[index] if index >= 0 else None
            if module is not None and pc < module.start + module.size:
                frame.update(module=module.path, build_id=module.build_id, offset=pc - module.start)
            else:
                frame.update(module=frame.get("library"), build_id=None, offset=None)
            frame.pop("library", None)


def describe_modules(resolved: Sequence[ResolvedModule]) -> list[dict[str, Any]]:
    return [
        {
            "path": r.module.path,
            "build_id": r.module.build_id,
            "package": r.binary.nevra if r.binary else None,
            "debuginfo": r.debuginfo.nevra if r.debuginfo else None,
        }
        for r in resolved
    ]
