"""Errors raised while analysing a crash.

Exception tree::

    BuilderError               base; ``reason`` is one sentence a person can act on
    ├── CoreRejected           the core is not a usable ELF core (truncated, not ELF, ...)
    ├── ProblemRejected        the problem directory lacks or garbles a required file
    ├── ArchiveError           the archive ABRT uploads cannot become a problem directory
    │   ├── MemberRejected     a member is unsafe, unknown, duplicated, oversize or missing
    │   ├── ArchiveUnreadable  the data is corrupt, truncated or not an archive
    │   └── ArchiveTooLarge    it unpacks to more than the cap
    ├── SandboxUnavailable     the podman service cannot be reached
    ├── SandboxFailed          a sandbox container failed for another reason
    ├── EnvironmentFailed      installing the crash-time packages failed
    └── StepTimeout            a sandboxed step (gdb, an install) ran past its time limit
"""

from __future__ import annotations


class BuilderError(Exception):
    """Base of every error raised by ``retracer.builder``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CoreRejected(BuilderError):
    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(f"The core cannot be used: {why}.")


class ProblemRejected(BuilderError):
    def __init__(self, member: str, why: str) -> None:
        self.member = member
        super().__init__(f"The problem file {member!r} {why}.")


class ArchiveError(BuilderError):
    """An archive refused by :func:`retracer.builder.problem_format.unpack_problem`."""


class MemberRejected(ArchiveError):
    def __init__(self, member: str, why: str) -> None:
        self.member = member
        self.why = why
        super().__init__(f"The archive member {member!r} {why}.")


class ArchiveUnreadable(ArchiveError):
    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(f"The archive cannot be unpacked: {why}.")


class ArchiveTooLarge(ArchiveError):
    def __init__(self, limit_mib: int) -> None:
        self.limit_mib = limit_mib
        super().__init__(
            f"The unpacked archive is larger than this server's {limit_mib} MiB limit."
        )


class SandboxUnavailable(BuilderError):
    def __init__(self, url: str, why: str) -> None:
        self.url = url
        super().__init__(f"The podman service at {url} cannot be reached: {why}.")


class SandboxFailed(BuilderError):
    def __init__(self, step: str, why: str) -> None:
        self.step = step
        super().__init__(f"The sandbox failed while {step}: {why}.")


class EnvironmentFailed(BuilderError):
    def __init__(self, why: str) -> None:
        super().__init__(f"Installing the crash-time packages failed: {why}.")


class StepTimeout(BuilderError):
    def __init__(self, step: str, seconds: float) -> None:
        self.step = step
        self.seconds = seconds
        super().__init__(f"{step} timed out after {seconds:g} s.")
