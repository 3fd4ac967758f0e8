"""Settings of the analyzer: the podman service, sandbox limits and the package store."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    """Limits every retrace container runs under."""

    memory_mib: int = 2048
    pids: int = 256
    cpus: float = 1.0
    gdb_timeout_seconds: float = 300.0
    install_timeout_seconds: float = 600.0
    # gdb's backtrace text is cut here, with a line saying so; its JSON may take as
    # much again, and output beyond both is never read.
    gdb_text_max_mib: int = 16
    # podman here cannot raise rlimits (no CAP_SYS_RESOURCE), so they are always explicit.
    nofile: int = 4096
    nproc: int = 4096


@dataclass(frozen=True)
class BuilderSettings:
    podman_url: str = "unix:///run/podman/podman.sock"
    # Prefix of every image and container retracer creates, so it can find (and clean) its own.
    name_prefix: str = "retracer"
    limits: SandboxLimits = SandboxLimits()
    # Least recently used packages are evicted from the store above this total size.
    package_store_max_mib: int = 20480
    # Packages of one crash unpacked at the same time.
    unpack_workers: int = 4
    # debuginfod servers asked, in order, for the debuginfo of modules the local
    # repository has none for (empty: none are asked). The worker host fetches; gdb
    # stays offline. Each request has this deadline and size cap.
    debuginfod_urls: tuple[str, ...] = ()
    debuginfod_timeout_seconds: float = 30.0
    debuginfod_max_file_mib: int = 2048
