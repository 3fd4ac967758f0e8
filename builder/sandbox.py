"""Disposable podman containers for everything that touches an untrusted core.

This is the only module that imports ``podman``. Every container it starts runs
with no network, no new privileges, explicit ulimits, memory, pids and CPU caps
and a wall-clock timeout; it is always removed afterwards, whether the command
succeeded, failed or was killed. podman-py's errors become builder errors here.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import requests
from podman import PodmanClient
from podman.errors import APIError, ImageNotFound, NotFound, PodmanError

from retracer.builder.errors import BuilderError, SandboxFailed, SandboxUnavailable, StepTimeout
from retracer.builder.settings import BuilderSettings

log = logging.getLogger(__name__)

# The unprivileged user gdb runs as ("nobody" in every distribution).
SANDBOX_USER = "65534:65534"
DEADLINE_LABEL = "io.retracer.deadline"
# How long after its deadline a container is surely abandoned (its run() has given up).
_ORPHAN_MARGIN_SECONDS = 300

_T = TypeVar("_T")


@dataclass(frozen=True)
class BindMount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class RunSpec:
    """One command to run in a fresh container of ``image``."""

    image: str
    command: Sequence[str]
    # Says what the command does, for errors: "installing packages", "running gdb".
    step: str
    timeout: float
    mounts: Sequence[BindMount] = ()
    environment: dict[str, str] = field(default_factory=dict)
    # Installing packages needs root inside the container (still without network,
    # and with no-new-privileges); inspecting and debugging never does.
    as_root: bool = False
    # Commit the container's result to this image reference when the command succeeds.
    commit_to: str | None = None
    # The container's name (from ``Sandbox.new_name``), for a caller that may need to
    # kill it from another thread; a fresh one by default.
    name: str | None = None
    # stdout beyond this many bytes is not read (podman still stores it, on disk).
    max_stdout_bytes: int | None = None


@dataclass(frozen=True)
class RunOutput:
    exit_code: int
    stdout: str
    stderr: str
    oom_killed: bool
    seconds: float


def _read_capped(chunks: Iterable[bytes], cap: int | None) -> bytes:
    """Joined chunks, stopping once more than ``cap`` bytes arrived (then cut to cap)."""
    parts, total = [], 0
    for chunk in chunks:
        parts.append(chunk)
        total += len(chunk)
        if cap is not None and total > cap:
            break
    data = b"".join(parts)
    return data if cap is None else data[:cap]


class Sandbox:
    """A connection to the podman service, offering the few verbs the analyzer needs.

    Use it from one thread only: podman-py clients are not shared between threads.
    With a ``reaper`` (a :class:`Background`), finished containers are removed on its
    thread, so the next step starts at once; without one, ``run`` removes them itself.
    """

    def __init__(self, settings: BuilderSettings, reaper: Background | None = None) -> None:
        self.settings = settings
        self.limits = settings.limits
        try:
            _probe(settings.podman_url)
            self.client = PodmanClient(base_url=settings.podman_url, timeout=60)
        except (PodmanError, ValueError, OSError) as error:
            raise SandboxUnavailable(settings.podman_url, _short(error)) from error
        try:
            self.client.ping()
        except (PodmanError, requests.RequestException, OSError) as error:
            self.client.close()
            raise SandboxUnavailable(settings.podman_url, _short(error)) from error
        self._reaper = reaper
        # False once the service stopped answering; its owner then connects anew.
        self.reachable = True

    def close(self) -> None:
        """Wait until every container this sandbox ran is removed, then disconnect."""
        if self._reaper is not None:
            self._reaper.drain()
        self.client.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def image_exists(self, reference: str) -> bool:
        with self._translated("looking up an image"):
            return bool(self.client.images.exists(reference))

    def remove_image(self, reference: str) -> None:
        """Remove an image, and any container of it (tests and tools)."""
        with self._translated("removing an image"), suppress(ImageNotFound):
            self.client.images.remove(reference, force=True)

    def pull(self, reference: str) -> None:
        with self._translated(f"pulling {reference}"):
            self.client.images.pull(reference)

    def import_rootfs(self, root: Path, reference: str) -> None:
        """Turn a directory into an image (podman-py has no wrapper for import)."""
        with tempfile.TemporaryFile(dir=root.parent) as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for entry in sorted(os.listdir(root)):
                    tar.add(root / entry, arcname=entry)
            archive.seek(0)
            with self._translated("importing the base image"):
                response = self.client.api.post(
                    "/images/import", params={"reference": reference}, data=archive
                )
                response.raise_for_status()

    def run(self, spec: RunSpec) -> RunOutput:
        """Run ``spec.command`` in a new container and remove it, whatever happens.

        Raises:
            StepTimeout: the command ran past ``spec.timeout`` and was killed.
            SandboxFailed: podman refused to create, start or commit the container.
        """
        started = time.monotonic()
        with self._translated(spec.step), self._container(spec) as container:
            container.start()
            try:
                # podman polls the container every 250 ms by default: most of a
                # short run. A tight interval costs the service little.
                exit_code = int(container.wait(timeout=spec.timeout, interval="10ms"))
            except requests.exceptions.RequestException as error:
                if time.monotonic() - started < spec.timeout:
                    raise
                container.kill()
                raise StepTimeout(spec.step, spec.timeout) from error
            oom_killed = False
            if exit_code != 0:  # only a failure needs to know why
                container.reload()
                oom_killed = bool(container.attrs.get("State", {}).get("OOMKilled"))
            # Streamed (to cap what is read), but not followed: podman-py follows a
            # stream unless told not to, and podman then waits to see that the
            # container has ended, which it had, for a few hundred milliseconds.
            logs = container.logs(stdout=True, stderr=False, stream=True, follow=False)
            stdout = _read_capped(logs, spec.max_stdout_bytes)
            stderr = b"".join(container.logs(stdout=False, stderr=True, stream=False))
            if spec.commit_to and exit_code == 0:
                repository, _, tag = spec.commit_to.rpartition(":")
                container.commit(repository=repository, tag=tag)
        return RunOutput(
            exit_code=exit_code,
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
            oom_killed=oom_killed,
            seconds=time.monotonic() - started,
        )

    def new_name(self, step: str) -> str:
        """A container name this retracer recognises as its own (see clean-up)."""
        return f"{self.settings.name_prefix}-{step.split()[0]}-{secrets.token_hex(6)}"

    def kill(self, name: str) -> None:
        """Stop a container of a run in progress (another thread's); its run() then
        returns with the kill's exit code. A container that has ended is left alone."""
        with self._translated("stopping a container"), suppress(NotFound):
            try:
                self.client.containers.get(name).kill()
            except APIError as error:
                # "Not running" is a conflict; podman 4.3 answers a container that has
                # just exited with a 500 saying "container state improper", and one
                # that is being removed with a 500 saying "no such container".
                said = str(error.explanation or "")
                ended = "container state improper" in said or "no such container" in said
                if error.status_code != HTTPStatus.CONFLICT and not ended:
                    raise

    def images(self) -> list[str]:
        """References of this retracer's images (base and environments)."""
        prefix = f"localhost/{self.settings.name_prefix}-"
        with self._translated("listing images"):
            return [
                tag
                for image in self.client.images.list()
                for tag in image.tags
                if tag.startswith(prefix)
            ]

    def remove_overdue_containers(self) -> list[str]:
        """Remove this retracer's containers well past their deadline; returns their names."""
        removed = []
        now = time.time()
        with self._translated("removing orphaned containers"):
            for container in self.client.containers.list(all=True):
                labels = container.labels or {}
                if not container.name.startswith(f"{self.settings.name_prefix}-"):
                    continue
                deadline = labels.get(DEADLINE_LABEL, "")
                if deadline.isdigit() and int(deadline) + _ORPHAN_MARGIN_SECONDS < now:
                    container.remove(force=True)
                    removed.append(container.name)
        return removed

    def containers(self) -> list[str]:
        """Names of this retracer's containers that still exist (there should be none)."""
        with self._translated("listing containers"):
            return [
                c.name
                for c in self.client.containers.list(all=True)
                if c.name.startswith(f"{self.settings.name_prefix}-")
            ]

    @contextmanager
    def _container(self, spec: RunSpec) -> Iterator[Any]:
        name = spec.name or self.new_name(spec.step)
        container = self.client.containers.create(**self._create_args(spec, name))
        try:
            yield container
        finally:
            if self._reaper is not None:
                self._reaper.remove(name)
            else:
                self.remove_container(name)

    def remove_container(self, name: str) -> None:
        """Remove a container, logging (not raising) a failure: a dead worker's
        housekeeping removes it later, by its deadline label."""
        try:
            with self._translated("removing a container"), suppress(NotFound):
                self.client.containers.remove(name, force=True)
        except BuilderError as error:
            log.warning("could not remove container %s: %s", name, error.reason)
        except OSError as error:
            log.warning("could not remove container %s: %s", name, _short(error))

    def _create_args(self, spec: RunSpec, name: str) -> dict[str, Any]:
        limits = self.limits
        ulimits = [
            {"Name": "nofile", "Soft": limits.nofile, "Hard": limits.nofile},
            {"Name": "nproc", "Soft": limits.nproc, "Hard": limits.nproc},
            # gdb crashing on a hostile core must not write a core of its own.
            {"Name": "core", "Soft": 0, "Hard": 0},
        ]
        args: dict[str, Any] = {
            "image": spec.image,
            "command": list(spec.command),
            "name": name,
            "labels": {
                "io.retracer.step": spec.step,
                # Past this moment (plus a margin) the container is an orphan of a
                # dead worker, on whichever host, and may be removed.
                DEADLINE_LABEL: str(int(time.time() + spec.timeout)),
            },
            "network_mode": "none",
            "mounts": [
                {
                    "type": "bind",
                    "source": str(mount.source),
                    "target": mount.target,
                    "read_only": mount.read_only,
                }
                for mount in spec.mounts
            ],
            "environment": dict(spec.environment),
            "mem_limit": f"{limits.memory_mib}m",
            "memswap_limit": f"{limits.memory_mib}m",
            "pids_limit": limits.pids,
            "nano_cpus": int(limits.cpus * 1e9),
            # podman-py passes security_opt on as SELinux options; this is the real switch.
            "no_new_privileges": True,
            "ulimits": ulimits,
        }
        if not spec.as_root:
            args.update(user=SANDBOX_USER, cap_drop=["ALL"], read_only=True)
            # gdb and its Python want a writable /tmp; the root stays read-only.
            args["mounts"].append(
                {
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "target": "/tmp",
                    "size": "64m",
                    "mode": "1777",
                }
            )
        return args

    @contextmanager
    def _translated(self, step: str) -> Iterator[None]:
        try:
            yield
        except (requests.ConnectionError, ConnectionError) as error:
            self.reachable = False
            raise SandboxUnavailable(self.settings.podman_url, _short(error)) from error
        except APIError as error:
            # podman-py reports a dead service as "GET operation failed" over the OSError.
            if isinstance(error.__cause__, OSError):
                self.reachable = False
                why = _short(error.__cause__)
                raise SandboxUnavailable(self.settings.podman_url, why) from error
            raise SandboxFailed(step, _short(error)) from error
        except (PodmanError, requests.RequestException) as error:
            raise SandboxFailed(step, _short(error)) from error


class Background:
    """One thread with a sandbox of its own, for work the caller does not wait for:
    removing finished containers, and a gdb run started early (see EarlyRun).

    The sandbox is made on the thread and used there only; it is made again when the
    podman service went away (a restart). :meth:`drain` returns once all work
    submitted so far is done.
    """

    def __init__(self, settings: BuilderSettings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-background")
        self._sandbox: Sandbox | None = None

    def submit(self, work: Callable[[Sandbox], _T]) -> Future[_T]:
        """Run ``work`` with the thread's sandbox; its errors come out of the future."""
        return self._pool.submit(self._do, work)

    def remove(self, name: str) -> None:
        self.submit(lambda sandbox: sandbox.remove_container(name)).add_done_callback(
            _log_failed_removal(name)
        )

    def drain(self) -> None:
        self._pool.submit(lambda: None).result()

    def close(self) -> None:
        """Finish the work submitted, then disconnect."""
        self._pool.submit(self._disconnect)
        self._pool.shutdown(wait=True)

    def _do(self, work: Callable[[Sandbox], _T]) -> _T:
        if self._sandbox is not None and not self._sandbox.reachable:
            self._disconnect()
        if self._sandbox is None:
            self._sandbox = Sandbox(self.settings)
        return work(self._sandbox)

    def _disconnect(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None


def _log_failed_removal(name: str) -> Callable[[Future[None]], None]:
    def check(future: Future[None]) -> None:
        error = future.exception()
        if isinstance(error, BuilderError):  # no sandbox could be made
            log.warning("could not remove container %s: %s", name, error.reason)

    return check


def _probe(url: str) -> None:
    """Connect to a unix socket once, so that a dead service fails here.

    podman-py (5.x) leaks the socket of a unix connection that fails, which
    surfaces later as a ResourceWarning in whatever code runs next.
    """
    if not url.startswith("unix://"):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(10)
        probe.connect(url.removeprefix("unix://"))


def _short(error: BaseException) -> str:
    """A one-line description of a foreign error, without trailing punctuation."""
    text = (
        getattr(error, "explanation", None)
        or getattr(error, "strerror", None)
        or str(error)
        or type(error).__name__
    )
    return " ".join(str(text).split())[:300].rstrip(".")
