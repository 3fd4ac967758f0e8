"""Real faults for the lifecycle tests: a podman socket that hangs, process trees."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


class PodmanDoor:
    """A path to use as ``podman_url``: at first a socket that accepts connections into
    its backlog and never answers (a hung podman service), later a link to a real one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._listener: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(128)

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def open_to(self, real_socket: Path) -> None:
        """From now on, connections reach the real service."""
        self.close()
        self.path.unlink()
        self.path.symlink_to(real_socket)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def children(pid: int) -> set[int]:
    """The live direct children of ``pid`` (zombies excluded)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in (b"Z", b"X"):
            found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def wait_until(condition: object, timeout: float, what: str) -> None:
    """Poll ``condition()`` until it is true (polling, never a fixed sleep)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill_9(pid: int) -> None:
    os.kill(pid, 9)


def someone_waits_for(lock_file: Path) -> bool:
    """Whether a process is blocked waiting for a flock on ``lock_file`` (/proc/locks
    lists waiters with "->")."""
    inode = lock_file.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[fields.index("->") + 1] == "FLOCK":
            device_inode = fields[fields.index("->") + 5]
            if device_inode.rsplit(":", 1)[-1] == str(inode):
                return True
    return False
