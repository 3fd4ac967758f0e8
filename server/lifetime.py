"""Process lifetime on Linux: who owns a task, and dying with a parent.

- :func:`new_owner` names one attempt at a task by this process: its host, its pid
  namespace and pid, plus a random part. :func:`owner_is_dead` tells, for an owner
  on this host and in this pid namespace, whether that process is gone, so a task
  whose worker was killed is taken back at once instead of when its lease runs out.
  Owners elsewhere are never judged (their lease decides).
- :func:`exit_with_parent` makes the kernel kill this process when its parent dies
  (``PR_SET_PDEATHSIG``), so ``kill -9`` of ``retracer serve`` takes its workers along;
  :func:`forks_exit_with_parent` does the same for every child this process forks
  (huey's worker and scheduler processes).
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import socket

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _here() -> str:
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def new_owner() -> str:
    """A fresh owner name for one attempt by this process."""
    return f"{_here()}/{os.getpid()}/{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` names a process of this host and pid namespace that no
    longer runs (a zombie counts as dead: it runs no code)."""
    parts = owner.rsplit("/", 2)
    if len(parts) != 3 or parts[0] != _here() or not parts[1].isdigit():
        return False
    pid_text = parts[1]
    try:
        with open(f"/proc/{pid_text}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in (b"Z", b"X")


def exit_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies; exit now if it has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("cannot ask to die with the parent: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent_pid:  # it died before the request took effect
        os._exit(1)


def forks_exit_with_parent() -> None:
    """Make every child that Python's ``os.fork`` makes from now on (multiprocessing's
    fork start method included) die with the process that forked it."""
    forking = [0]

    def before() -> None:
        forking[0] = os.getpid()

    def after_in_child() -> None:
        exit_with_parent(forking[0])

    os.register_at_fork(before=before, after_in_child=after_in_child)
