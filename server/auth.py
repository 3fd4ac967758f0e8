"""Task credentials: random ids, random passwords stored only as hashes, and the check.

Passwords are 43-character URL-safe tokens from :mod:`secrets` (256 bits), so one
SHA-256 is enough to store them (there is nothing to brute-force a dictionary with),
and hashes are compared with :func:`hmac.compare_digest`.

The protocol profile decides what a good password does: in the ``seed`` profile it
is single-use and the answer carries the next one; in the ``abrt`` profile the
creation password stays valid. Repeated wrong passwords lock a task for a while.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from retracer.server.config import ServerSettings
from retracer.server.errors import PasswordRefused, TooManyAttempts
from retracer.server.tasks import Task, TaskStore

PASSWORD_HEADER = "X-Task-Password"

REUSED = "this password was already used; this server issues a new one in every response"


def new_task_id() -> str:
    """Nine random digits, the shape ABRT clients and the original server use."""
    return str(100_000_000 + secrets.randbelow(900_000_000))


def new_password() -> str:
    return secrets.token_urlsafe(32)


def digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class Access:
    """A successful check: the task, and the password to use next (seed profile only)."""

    task: Task
    next_password: str | None


class Gatekeeper:
    """Checks task passwords against the store and rotates them when the profile says so."""

    def __init__(self, store: TaskStore, settings: ServerSettings) -> None:
        self._store = store
        self._settings = settings

    def check(self, task_id: str, password: str | None) -> Access:
        """Authenticate one request for ``task_id``.

        Raises:
            TaskNotFound: no such task.
            TooManyAttempts: too many wrong passwords for this task in the window.
            PasswordRefused: the password is missing, wrong or (seed profile) already used.
        """
        task = self._store.get(task_id)
        now = time.time()
        self._refuse_if_locked(task_id, now)
        if not password:
            raise PasswordRefused(
                f"Task {task_id} needs its password in the {PASSWORD_HEADER} header."
            )
        presented = digest(password)
        current = self._store.password_hash(task_id)
        if not hmac.compare_digest(presented, current):
            if self._store.is_spent(task_id, presented):
                raise PasswordRefused(f"Task {task_id}: {REUSED}.")
            self._store.record_failure(task_id, now)
            raise PasswordRefused(f"The password for task {task_id} is wrong.")
        if self._settings.protocol_profile == "abrt":
            return Access(task, None)
        following = new_password()
        if not self._store.rotate_password(task_id, current, digest(following)):
            # Another request spent the same password a moment ago.
            raise PasswordRefused(f"Task {task_id}: {REUSED}.")
        return Access(task, following)

    def _refuse_if_locked(self, task_id: str, now: float) -> None:
        window = self._settings.password_failure_window_seconds
        count, oldest = self._store.failures_since(task_id, now - window)
        if count >= self._settings.password_failures_allowed and oldest is not None:
            raise TooManyAttempts(task_id, max(1.0, oldest + window - now))
