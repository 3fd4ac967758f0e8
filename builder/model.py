"""Typed values the analyzer takes and returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from retracer.sync.model import Package, PackageSet

if TYPE_CHECKING:
    from retracer.builder.report import Report


class Stage(enum.Enum):
    """Where a task is in its whole life, from upload to result: the one vocabulary of
    the analyzer (which reports ANALYZING to CLEANING), the task store (which keeps the
    member's *name*) and the server. The values are the messages ABRT clients show;
    use :meth:`message`, since one of them names the architecture."""

    QUEUED = "Waiting for a free worker"
    # No live worker serves the core's architecture; the task waits, it does not fail.
    WAITING_FOR_ARCH = "Waiting for {article} {arch} worker"
    ANALYZING = "Analyzing crash data"
    PREPARING = "Preparing environment for backtrace generation"
    GENERATING = "Generating backtrace"
    CLEANING = "Cleaning environment after backtrace generation"
    FINISHING = "Finishing task"

    def message(self, arch: str | None = None) -> str:
        """The text shown to clients ("Waiting for an aarch64 worker")."""
        if not arch:
            return self.value.format(article="a", arch="suitable")
        # "an" before a letter whose spoken name starts with a vowel: an x86_64, an s390x.
        article = "an" if arch[0].lower() in "aefhilmnorsx" else "a"
        return self.value.format(article=article, arch=arch)


class RetraceObserver(Protocol):
    """Receives progress from a running retrace (the server records it on the task)."""

    def stage(self, stage: Stage) -> None: ...

    def log(self, line: str) -> None: ...


@dataclass(frozen=True)
class Module:
    """A file mapped into the crashed process, identified by its GNU build-id."""

    path: str
    build_id: str
    # Where it was mapped in the crashed process (0 when unknown).
    start: int = 0
    size: int = 0


@dataclass(frozen=True)
class ResolvedModule:
    """A module and the exact packages that ship it and its debug data, if any."""

    module: Module
    binary: Package | None
    debuginfo: Package | None


@dataclass(frozen=True)
class StepTiming:
    name: str
    seconds: float


@dataclass(frozen=True)
class RetraceResult:
    release_id: str
    executable: str
    crashed_package: str
    # What ABRT shows: every thread's backtrace, libraries, registers, disassembly.
    backtrace: str
    # Threads, frames, modules, the exploitable rating and satyr's shape, as data.
    report: Report
    package_set: PackageSet
    modules: tuple[ResolvedModule, ...]
    # The image gdb ran in, the view of the packages it saw, and whether all of them
    # were in the store already (nothing was unpacked).
    environment_image: str
    environment: str
    environment_cached: bool
    steps: tuple[StepTiming, ...] = field(default=())

    @property
    def missing_debuginfo(self) -> tuple[Module, ...]:
        return tuple(m.module for m in self.modules if m.debuginfo is None)
