"""Task credentials: random ids, random passwords stored only as hashes, and the check.

Passwords are 43-character URL-safe tokens from :mod:`secrets` (256 bits), so one
SHA-256 is enough to store them (there is nothing to brute-force a dictionary with),
and hashes are compared with :func:`hmac.compare_digest`.

The protocol profile decides what a good password does: in the ``seed`` profile it
is single-use and the answer carries the next one; in the ``abrt`` profile the
creation password stays valid.

Repeated failures (wrong passwords, and unknown task ids, which is how live ids are
hunted) are counted per client address, not per task: past the limit that address
gets 429 for a while, and nobody else, so a stranger's guesses never lock the owner
out of a task.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from retracer.server.config import ServerSettings
from retracer.server.errors import PasswordRefused, TaskNotFound, TooManyAttempts
from retracer.server.ratelimit import SlidingWindow
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
        self._failures = SlidingWindow(
            settings.password_failures_allowed, settings.password_failure_window_seconds
        )

    def check(self, task_id: str, password: str | None, client: str) -> Access:
        """Authenticate one request for ``task_id`` from the address ``client``.

        Raises:
            TooManyAttempts: too many failures from this client in the window.
            TaskNotFound: no such task.
            PasswordRefused: the password is missing, wrong or (seed profile) already used.
        """
        retry_after = self._failures.retry_after(client)
        if retry_after is not None:
            raise TooManyAttempts(max(1.0, retry_after))
        try:
            task = self._store.get(task_id)
        except TaskNotFound:
            self._failures.record(client)
            raise
        if not password:
            raise PasswordRefused(
                f"Task {task_id} needs its password in the {PASSWORD_HEADER} header."
            )
        presented = digest(password)
        current = self._store.password_hash(task_id)
        if not hmac.compare_digest(presented, current):
            if self._store.is_spent(task_id, presented):
                raise PasswordRefused(f"Task {task_id}: {REUSED}.")
            self._failures.record(client)
            raise PasswordRefused(f"The password for task {task_id} is wrong.")
        if self._settings.protocol_profile == "abrt":
            return Access(task, None)
        following = new_password()
        if not self._store.rotate_password(task_id, current, digest(following)):
            # Another request spent the same password a moment ago.
            raise PasswordRefused(f"Task {task_id}: {REUSED}.")
        return Access(task, following)
