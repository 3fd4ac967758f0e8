"""Errors raised by the HTTP interface and the configuration loader.

Exception tree::

    ServerError                base; ``reason`` is one sentence a person can act on
    └── ConfigError            the configuration file is missing, malformed or invalid
"""

from __future__ import annotations

from pathlib import Path


class ServerError(Exception):
    """Base of every error raised by ``retracer.server``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(ServerError):
    def __init__(self, file: Path | str, key: str | None, why: str) -> None:
        self.file = str(file)
        self.key = key
        where = f"{self.file}: key {key!r}" if key else self.file
        super().__init__(f"Configuration error in {where}: {why}.")
