"""Step logging with timings, and atomic cache entries.

Every slow layer is built in a temporary sibling directory and renamed into place,
so an interrupted build never leaves a half-made cache entry behind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def log(message: str) -> None:
    print(f"testos: {message}", file=sys.stderr, flush=True)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Log the start and the duration of one build step."""
    log(f"{what} ...")
    started = time.monotonic()
    yield
    log(f"{what}: done in {time.monotonic() - started:.1f} s")


def run(args: Sequence[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a build tool; on failure raise with its output, which is where the reason is."""
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(str(a) for a in args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def cached_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Return ``final``, building it first through ``build(temporary_dir)`` if missing."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        build(work)
        work.chmod(0o755)  # mkdtemp makes it private; containers read the repository
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final


def define_args(defines: dict[str, str]) -> list[str]:
    """rpmbuild ``--define`` arguments."""
    return [arg for name, value in defines.items() for arg in ("--define", f"{name} {value}")]
