"""gdb's container, started before anyone knows where gdb will look.

A container start costs as much as a small retrace's gdb run, so gdb's container
starts with the retrace, beside the core's inspection, and waits for its root
(:class:`LateRoot`) to be filled once the environment is known. When the last crash
of the same program needed an environment that is still here, the root is filled
at once with that guess, and gdb runs while the core is inspected: crashes of one
build usually need the same packages. Once the inspection has named the right
environment, a run is either taken (it ran, or will run, in that very environment)
or stopped and thrown away. It runs on the analyzer's background thread, with that
thread's sandbox, since podman-py clients are not shared between threads.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from concurrent.futures import Future, wait
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

from retracer.builder.environment import VIEW_IN_SANDBOX, Environment
from retracer.builder.errors import BuilderError, SandboxFailed
from retracer.builder.sandbox import Background, BindMount, RunOutput, RunSpec, Sandbox

log = logging.getLogger(__name__)

_KILL_RETRY_SECONDS = 0.2
# The driver reads one line from this pipe before it reads anything from the root.
ROOT_READY_IN_SANDBOX = "/retrace/root-ready"
_READY = b"ready\n"


class LateRoot:
    """The sandbox's ``/retrace/root``, filled after its container has started.

    On the host it is a folder, mounted read-only at ``/retrace/root``, and a FIFO
    the driver reads one line from before it touches the root. :meth:`fill` puts the
    links in and then writes the line; :meth:`close` without a fill makes the driver
    read end-of-file, and it exits at once.
    """

    def __init__(self, scratch_dir: Path) -> None:
        scratch_dir.mkdir(parents=True, exist_ok=True)
        self._folder = Path(tempfile.mkdtemp(prefix="root-", dir=scratch_dir))
        self.root = self._folder / "root"
        self.root.mkdir()
        os.chmod(self.root, 0o755)
        self._ready = self._folder / "ready"
        os.mkfifo(self._ready)
        os.chmod(self._ready, 0o644)  # the sandbox user reads it; the folder is private
        # Opened for reading too, so the open does not wait for the driver and the
        # pipe keeps the line until the driver, maybe not started yet, reads it.
        self._pipe: int | None = os.open(self._ready, os.O_RDWR | os.O_NONBLOCK)
        self.filled = False

    @property
    def mounts(self) -> list[BindMount]:
        return [
            BindMount(self.root, VIEW_IN_SANDBOX),
            BindMount(self._ready, ROOT_READY_IN_SANDBOX),
        ]

    def given_to(self, spec: RunSpec) -> RunSpec:
        """``spec`` with this root mounted and its driver told to wait for it."""
        return replace(
            spec,
            mounts=[*spec.mounts, *self.mounts],
            environment={**spec.environment, "RETRACER_ROOT_READY": ROOT_READY_IN_SANDBOX},
        )

    def fill(self, links: Mapping[str, str]) -> None:
        """Make the root hold ``links`` (name -> target in the sandbox), then let gdb go."""
        if self._pipe is None or self.filled:
            raise ValueError("a root is filled once, before it is closed")
        for name, target in links.items():
            os.symlink(target, self.root / name)
        os.write(self._pipe, _READY)
        self.filled = True

    def close(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> LateRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EarlyRun:
    """gdb's run, started on ``background`` at once in a :class:`LateRoot` that
    :meth:`enter` fills; :meth:`take` or :meth:`discard` it, then close.

    ``caller`` is the caller's own sandbox, used from the caller's thread only, to
    stop the run.
    """

    def __init__(
        self, caller: Sandbox, background: Background, spec: RunSpec, scratch_dir: Path
    ) -> None:
        self._caller = caller
        self._root = LateRoot(scratch_dir)
        self.spec = replace(self._root.given_to(spec), name=caller.new_name(spec.step))
        early = self.spec
        self._future: Future[RunOutput] = background.submit(lambda sandbox: sandbox.run(early))
        # The environment gdb was let into; None while it waits.
        self.environment: Environment | None = None

    def enter(self, environment: Environment, links: Mapping[str, str]) -> None:
        """Let gdb into ``environment``, whose view ``links`` name (see LateRoot.fill)."""
        self._root.fill(links)
        self.environment = environment

    def take(self) -> RunOutput | None:
        """The run's output, once it ends; for a caller who needs ``spec.image``.

        Raises:
            BuilderError: the run failed (a timeout, say), as the same run started now
                would. Only a sandbox failure (the image was evicted meanwhile) returns
                None, so that the caller runs it again.
        """
        try:
            return self._future.result()
        except SandboxFailed as error:
            log.info("the early run in %s failed; run it again: %s", self.spec.image, error.reason)
            return None

    def discard(self) -> None:
        """Stop the run if it is still going and wait for it; its outcome is dropped.
        A driver still waiting for its root reads end-of-file and exits by itself."""
        self._root.close()
        while not self._future.done():
            # A kill that came before the container existed missed it: kill until done.
            self._kill()
            wait([self._future], timeout=_KILL_RETRY_SECONDS)
        with suppress(BuilderError):  # nobody wants this outcome
            self._future.result()

    def _kill(self) -> None:
        try:
            self._caller.kill(self.spec.name or "")
        except BuilderError as error:
            log.warning("could not stop the early run: %s", error.reason)

    def close(self) -> None:
        """Discard an untaken run, and return once its container is gone (the
        background sandbox removes its containers before a run returns)."""
        self.discard()

    def __enter__(self) -> EarlyRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
