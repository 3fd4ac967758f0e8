"""Test hosts in network namespaces: ``ip netns``, veth pairs, nothing else.

:class:`Network` makes one front namespace and any number of host namespaces, each
linked to the front by a veth pair of its own (10.231.N.1 on the front side, .2 on the
host's), plus one pair from the test process to the front (10.231.0.1), so the test
talks to the front end as any client would. No route leads anywhere else: traffic
stays on loopback and these addresses. :meth:`Network.remove` kills every process left
in the namespaces and deletes them (the veths go with them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.231"


@dataclass(frozen=True)
class Namespace:
    name: str
    # This namespace's address on its link to the front (the front's own: "10.231.0.1").
    address: str
    # The front's address as seen from here.
    front_address: str

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), check=True, capture_output=True, text=True,
                              **kwargs)  # type: ignore[call-overload]  # fmt: skip

    def pids(self) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                                text=True, check=False).stdout.split()  # fmt: skip
        return [int(pid) for pid in listed]

    def kill_all(self) -> list[int]:
        """kill -9 of every process in this namespace (a host dying at once)."""
        killed = self.pids()
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return killed


class Network:
    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or f"rt{os.getpid() % 100000}"
        self._names: list[str] = []
        self.front = self._add("front", f"{SUBNET}.0.1", f"{SUBNET}.0.1")
        # The test process's own link to the front.
        outer, inner = f"{self.tag}t0", f"{self.tag}f0"
        self._link(outer, inner, self.front.name)
        _ip("addr", "add", f"{SUBNET}.0.2/24", "dev", outer)
        _ip("link", "set", outer, "up")
        self.front.run("ip", "addr", "add", f"{SUBNET}.0.1/24", "dev", inner)
        self.front.run("ip", "link", "set", inner, "up")
        self._hosts = 0

    def add_host(self, name: str) -> Namespace:
        self._hosts += 1
        number = self._hosts
        host = self._add(name, f"{SUBNET}.{number}.2", f"{SUBNET}.{number}.1")
        outer, inner = f"{self.tag}f{number}", f"{self.tag}h{number}"
        self._link(outer, inner, host.name, front_end=True)
        self.front.run("ip", "addr", "add", f"{SUBNET}.{number}.1/24", "dev", outer)
        self.front.run("ip", "link", "set", outer, "up")
        host.run("ip", "addr", "add", f"{host.address}/24", "dev", inner)
        host.run("ip", "link", "set", inner, "up")
        return host

    def remove(self) -> None:
        for name in reversed(self._names):
            Namespace(name, "", "").kill_all()
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", f"{self.tag}t0")

    def _add(self, role: str, address: str, front_address: str) -> Namespace:
        name = f"{self.tag}-{role}"
        _ip("netns", "add", name)
        self._names.append(name)
        namespace = Namespace(name, address, front_address)
        namespace.run("ip", "link", "set", "lo", "up")
        return namespace

    def _link(self, outer: str, inner: str, namespace: str, front_end: bool = False) -> None:
        """A veth pair: ``inner`` moves into ``namespace``; ``outer`` stays in the root
        namespace, or moves into the front's with ``front_end``."""
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", namespace)
        if front_end:
            _ip("link", "set", outer, "netns", self.front.name)


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


def spawn(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """A process whose output goes to ``log`` (read when a test fails)."""
    with log.open("ab") as out:
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
