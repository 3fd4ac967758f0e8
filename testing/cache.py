"""Where slow test fixtures are cached: outside the repository, keyed by their inputs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def cache_root() -> Path:
    """``$RETRACER_TEST_CACHE``, else ``~/.cache/retracer`` (shared with scripts/demo)."""
    configured = os.environ.get("RETRACER_TEST_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "retracer"
    base.mkdir(parents=True, exist_ok=True)
    return base


def digest_of(parts: Iterable[bytes | str | Path]) -> str:
    """A short content hash over strings, bytes and whole files or directory trees."""
    hasher = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            for file in sorted(p for p in ([part] if part.is_file() else part.rglob("*"))):
                if file.is_file():
                    hasher.update(str(file.relative_to(part.parent)).encode())
                    hasher.update(file.read_bytes())
        else:
            hasher.update(part.encode() if isinstance(part, str) else part)
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]
