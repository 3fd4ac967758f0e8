"""The typed values of the task store: a task, its state, and the totals it counts."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from retracer.builder.model import Stage


class TaskState(enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    FINISHED_SUCCESS = "FINISHED_SUCCESS"
    FINISHED_FAILURE = "FINISHED_FAILURE"

    @property
    def finished(self) -> bool:
        return self in (TaskState.FINISHED_SUCCESS, TaskState.FINISHED_FAILURE)

    @property
    def wire(self) -> str:
        """The ``X-Task-Status`` value: PENDING until the task has finished."""
        return self.value if self.finished else "PENDING"


class Total(enum.Enum):
    """Counters kept across processes and restarts; stored by name."""

    CREATED = enum.auto()
    FINISHED_SUCCESS = enum.auto()
    FINISHED_FAILURE = enum.auto()
    # Tasks finished with the result of an identical core, without a retrace.
    REUSED = enum.auto()

    @classmethod
    def finished(cls, state: TaskState) -> Total:
        return cls[state.name]


@dataclass(frozen=True)
class Task:
    id: str
    state: TaskState
    # What the task is doing now (Stage.message gives the words ABRT clients show).
    stage: Stage
    created: float
    finished: float | None
    # Why the task failed: one sentence from the analyzer, or "internal error".
    reason: str | None
    attempts: int
    # The core's architecture (from its ELF header), which picks the queue.
    arch: str | None = None
    # The configured release the crash belongs to: only workers holding its
    # repositories take the task.
    release: str | None = None


@dataclass(frozen=True)
class LiveWorker:
    """A consumer (``retracer worker``) seen recently, and what it serves."""

    name: str
    arches: tuple[str, ...]
    releases: tuple[str, ...]
    seen: float
