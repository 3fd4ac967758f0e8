"""The ``debuginfod:`` section of the configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DebuginfodSettings:
    # Where `retracer debuginfod` listens when run apart (8002 is elfutils' default);
    # `retracer serve` answers the same requests on its own address.
    host: str = "127.0.0.1"
    port: int = 8002
    # Files unpacked from RPMs are kept under data_dir/debuginfod up to this size;
    # the least recently served go first.
    cache_max_mib: int = 4096

    def __post_init__(self) -> None:
        if self.cache_max_mib < 1:
            raise ValueError("debuginfod.cache_max_mib must be at least 1")
