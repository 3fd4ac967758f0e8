"""A sandbox run started before anyone knows whether its result will be wanted.

While the core is being inspected, gdb can already run in the environment the last
crash of the same program needed: crashes of one build usually need the same
packages. Once the inspection has named the right environment, the early run is
either taken (it ran in that very environment) or stopped and thrown away. It runs
on the analyzer's background thread, with that thread's sandbox, since podman-py
clients are not shared between threads.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, wait
from contextlib import suppress
from dataclasses import replace

from retracer.builder.errors import BuilderError, SandboxFailed
from retracer.builder.sandbox import Background, RunOutput, RunSpec, Sandbox

log = logging.getLogger(__name__)

_KILL_RETRY_SECONDS = 0.2


class EarlyRun:
    """Runs ``spec`` on ``background`` at once; :meth:`take` or :meth:`discard` it,
    then close.

    ``caller`` is the caller's own sandbox, used from the caller's thread only, to
    stop the run.
    """

    def __init__(self, caller: Sandbox, background: Background, spec: RunSpec) -> None:
        self._caller = caller
        self.spec = replace(spec, name=caller.new_name(spec.step))
        early = self.spec
        self._future: Future[RunOutput] = background.submit(lambda sandbox: sandbox.run(early))

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
        """Stop the run if it is still going and wait for it; its outcome is dropped."""
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
