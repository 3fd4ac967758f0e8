"""The typed report of one retrace, built once from the gdb driver's output.

:func:`split_output` separates the driver's text from its JSON at the run's random
marker; :func:`build_report` checks that JSON field by field (it comes from a gdb
that read an untrusted core) and builds a :class:`Report`. Everything else is
generated from the Report:

- :meth:`Report.to_json`, served as ``backtrace.json``::

    {"release", "executable", "package", "signal": {"number", "name"}, "crash_thread",
     "abort_message", "throw_site": {function, file, line} | null,
     "threads": [{"num", "lwp", "name", "crashed",
                  "frames": [{"level", "function", "file", "line", "pc",
                              "module", "build_id", "offset", "locals"}]}],
     "modules": [{"path", "build_id", "package", "debuginfo"}],
     "missing_debuginfo": [{"path", "build_id"}],
     "debuginfo_sources": {path: "package NEVRA" | "debuginfod URL" | null},
     "packages": ["NEVRA", ...],
     "environment_cached", "exploitable": {"rating", "reason"},
     "fault": {"signal", "address", "pc", "pc_readable", "instruction"},
     "duphash", "crash_function"}

- :meth:`Report.core_backtrace`, satyr's core stacktrace JSON (see
  :mod:`retracer.builder.satyr`), served as ``core_backtrace``;
- :meth:`Report.exploitable_text`, the two lines served at ``/<id>/exploitable``.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from retracer.builder import satyr
from retracer.builder.errors import SandboxFailed
from retracer.builder.model import Module as MappedModule
from retracer.builder.model import ResolvedModule
from retracer.images.exploitable import Fault, Rating

T = TypeVar("T")


@dataclass(frozen=True)
class Frame:
    level: int
    function: str | None
    file: str | None  # the source file, when gdb knows it
    line: int | None
    pc: int | None
    # The mapped file holding pc, its build-id and pc's offset from its start.
    module: str | None
    build_id: str | None
    offset: int | None
    locals: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "function": self.function,
            "file": self.file,
            "line": self.line,
            "pc": self.pc,
            "module": self.module,
            "build_id": self.build_id,
            "offset": self.offset,
            "locals": dict(self.locals),
        }


@dataclass(frozen=True)
class Thread:
    num: int
    lwp: int | None
    name: str | None
    crashed: bool
    frames: tuple[Frame, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "num": self.num,
            "lwp": self.lwp,
            "name": self.name,
            "crashed": self.crashed,
            "frames": [frame.to_json() for frame in self.frames],
        }


@dataclass(frozen=True)
class Module:
    """A module of the crashed process and the packages that ship it and its debuginfo."""

    path: str
    build_id: str
    package: str | None
    debuginfo: str | None
    # Where its debuginfo came from ("package NEVRA", "debuginfod URL"), or None.
    debuginfo_source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "build_id": self.build_id,
            "package": self.package,
            "debuginfo": self.debuginfo,
        }


@dataclass(frozen=True)
class ThrowSite:
    function: str | None
    file: str | None
    line: int | None


@dataclass(frozen=True)
class Report:
    release: str
    executable: str
    package: str  # NEVRA of the crashed package
    component: str  # its name, which prefixes the duphash as ABRT does
    signal_number: int | None
    signal_name: str | None
    crash_thread: int
    abort_message: str | None
    throw_site: ThrowSite | None
    threads: tuple[Thread, ...]
    modules: tuple[Module, ...]
    packages: tuple[str, ...]
    environment_cached: bool
    fault: Fault
    exploitable: Rating

    @property
    def crashed(self) -> Thread | None:
        return next((t for t in self.threads if t.crashed), None)

    @property
    def missing_debuginfo(self) -> tuple[Module, ...]:
        return tuple(m for m in self.modules if m.debuginfo_source is None)

    def core_backtrace(self) -> dict[str, Any]:
        return satyr.core_stacktrace(self.signal_number, self.executable, self._satyr_threads())

    @property
    def duphash(self) -> str | None:
        crashed = self._satyr_crash_thread()
        return satyr.duphash(crashed, self.component) if crashed is not None else None

    @property
    def crash_function(self) -> str | None:
        crashed = self._satyr_crash_thread()
        return satyr.crash_function(crashed) if crashed is not None else None

    def exploitable_text(self) -> str:
        return self.exploitable.text()

    def to_json(self) -> dict[str, Any]:
        site = self.throw_site
        return {
            "release": self.release,
            "executable": self.executable,
            "package": self.package,
            "signal": {"number": self.signal_number, "name": self.signal_name},
            "crash_thread": self.crash_thread,
            "abort_message": self.abort_message,
            "throw_site": (
                {"function": site.function, "file": site.file, "line": site.line} if site else None
            ),
            "threads": [thread.to_json() for thread in self.threads],
            "modules": [module.to_json() for module in self.modules],
            "missing_debuginfo": [
                {"path": m.path, "build_id": m.build_id} for m in self.missing_debuginfo
            ],
            "debuginfo_sources": {m.path: m.debuginfo_source for m in self.modules},
            "packages": list(self.packages),
            "environment_cached": self.environment_cached,
            "exploitable": self.exploitable.as_json(),
            "fault": self.fault.as_json(),
            "duphash": self.duphash,
            "crash_function": self.crash_function,
        }

    def _satyr_threads(self) -> list[satyr.CoreThread]:
        return [
            satyr.CoreThread(
                crash_thread=thread.crashed,
                frames=tuple(
                    satyr.CoreFrame(
                        address=frame.pc,
                        build_id=frame.build_id,
                        build_id_offset=frame.offset,
                        function_name=frame.function,
                        # satyr's file_name of a core frame is the module's path.
                        file_name=frame.module if frame.build_id else None,
                    )
                    for frame in thread.frames
                ),
            )
            for thread in self.threads
        ]

    def _satyr_crash_thread(self) -> satyr.CoreThread | None:
        return next((t for t in self._satyr_threads() if t.crash_thread), None)


@dataclass(frozen=True)
class Facts:
    """What the analyzer knows besides gdb's output."""

    release: str
    executable: str
    package: str
    component: str
    mapped: tuple[MappedModule, ...]
    resolved: tuple[ResolvedModule, ...]
    packages: tuple[str, ...]
    environment_cached: bool
    # Where each module's debuginfo came from, by path (see builder/debuginfod.py).
    debuginfo_sources: dict[str, str | None]


def split_output(stdout: str, marker: str) -> tuple[str, dict[str, Any]]:
    """The driver's text and its JSON document, separated at this run's ``marker``.

    Raises:
        SandboxFailed: the driver printed no report (gdb died or was killed), or a
            malformed one.
    """
    text, found, tail = stdout.partition(f"{marker}\n")
    if not found:
        raise SandboxFailed("gdb", "gdb printed no report")
    try:
        data = json.loads(tail)
    except (ValueError, RecursionError) as error:
        raise SandboxFailed("gdb", "gdb printed a malformed report") from error
    if not isinstance(data, dict):
        raise _malformed("the report is not an object")
    return text, data


def build_report(data: dict[str, Any], facts: Facts) -> Report:
    """The Report from the driver's JSON and the analyzer's facts.

    Raises:
        SandboxFailed: a field is missing or of the wrong type.
    """
    signal = _object(data, "signal")
    fault = _object(data, "fault")
    rating = _object(data, "exploitable")
    site = data.get("throw_site")
    locate = _Locator(facts.mapped)
    threads = tuple(_thread(thread, locate) for thread in _list(data, "threads", dict, "a thread"))
    rating_value = _field(rating, "rating", int)
    if not 0 <= rating_value <= 8:
        raise _malformed("the exploitable rating is outside 0-8")
    return Report(
        release=facts.release,
        executable=facts.executable,
        package=facts.package,
        component=facts.component,
        signal_number=_optional(signal, "number", int),
        signal_name=_optional(signal, "name", str),
        crash_thread=_field(data, "crash_thread", int),
        abort_message=_optional(data, "abort_message", str),
        throw_site=(
            ThrowSite(
                _optional(site, "function", str),
                _optional(site, "file", str),
                _optional(site, "line", int),
            )
            if isinstance(site, dict)
            else None
        ),
        threads=threads,
        modules=tuple(
            Module(
                r.module.path,
                r.module.build_id,
                r.binary.nevra if r.binary else None,
                r.debuginfo.nevra if r.debuginfo else None,
                facts.debuginfo_sources.get(r.module.path),
            )
            for r in facts.resolved
        ),
        packages=facts.packages,
        environment_cached=facts.environment_cached,
        fault=Fault(
            signal=_optional(fault, "signal", int),
            address=_optional(fault, "address", int),
            pc=_optional(fault, "pc", int),
            pc_readable=_field(fault, "pc_readable", bool),
            instruction=_optional(fault, "instruction", str),
        ),
        exploitable=Rating(rating_value, _field(rating, "reason", str)),
    )


class _Locator:
    """Finds the mapped module holding an address."""

    def __init__(self, modules: Sequence[MappedModule]) -> None:
        self._ordered = sorted((m for m in modules if m.size), key=lambda m: m.start)
        self._starts = [m.start for m in self._ordered]

    def __call__(self, pc: int | None) -> MappedModule | None:
        if pc is None:
            return None
        index = bisect.bisect_right(self._starts, pc) - 1
        module = self._ordered[index] if index >= 0 else None
        return module if module is not None and pc < module.start + module.size else None


def _thread(data: dict[str, Any], locate: _Locator) -> Thread:
    return Thread(
        num=_field(data, "num", int),
        lwp=_optional(data, "lwp", int),
        name=_optional(data, "name", str),
        crashed=_field(data, "crashed", bool),
        frames=tuple(_frame(frame, locate) for frame in _list(data, "frames", dict, "a frame")),
    )


def _frame(data: dict[str, Any], locate: _Locator) -> Frame:
    pc = _optional(data, "pc", int)
    module = locate(pc)
    values = data.get("locals", {})
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise _malformed("a frame's locals are not strings")
    return Frame(
        level=_field(data, "level", int),
        function=_optional(data, "function", str),
        file=_optional(data, "file", str),
        line=_optional(data, "line", int),
        pc=pc,
        module=module.path if module else _optional(data, "library", str),
        build_id=module.build_id if module else None,
        offset=pc - module.start if module and pc is not None else None,
        locals=values,
    )


def _field(data: dict[str, Any], key: str, kind: type[T]) -> T:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _malformed(f"{key} is not {kind.__name__}")
    return value


def _optional(data: dict[str, Any], key: str, kind: type[T]) -> T | None:
    return None if data.get(key) is None else _field(data, key, kind)


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    return _field(data, key, dict)


def _list(data: dict[str, Any], key: str, kind: type[T], what: str) -> list[T]:
    items = _field(data, key, list)
    if not all(isinstance(item, kind) for item in items):
        raise _malformed(f"{what} is not an object")
    return items


def _malformed(why: str) -> SandboxFailed:
    return SandboxFailed("gdb", f"gdb printed a malformed report ({why})")
