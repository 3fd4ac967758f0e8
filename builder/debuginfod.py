"""Debuginfo from debuginfod servers, for modules the local repository has none for.

The worker host (never the gdb container, which stays offline) asks each configured
server in turn for ``/buildid/<hex>/debuginfo`` and keeps the answer in a cache laid
out as gdb's debug-file-directory expects (``.build-id/xx/rest.debug``), which is
then mounted read-only into the gdb container. Every request has a deadline and a
size cap. A server that fails (no connection, an error status, a timeout, a file
too large) is not asked again during the same retrace, so it costs at most its
timeout once; a 404 is an ordinary answer.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests

from retracer.builder.model import ResolvedModule
from retracer.builder.sandbox import BindMount
from retracer.builder.settings import BuilderSettings

CACHE_IN_SANDBOX = "/retrace/debuginfod"
_CHUNK = 1 << 20
_ELF_MAGIC = b"\x7fELF"
# Beside each cached file: the server it came from, for the log and the report.
_ORIGIN_SUFFIX = ".origin"


@dataclass(frozen=True)
class FetchedDebuginfo:
    build_id: str
    server: str  # the URL of the server that had it
    path: Path
    fresh: bool  # downloaded just now, not found in the cache


class _ServerFailed(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class DebuginfodClient:
    """Fetches debuginfo by build-id into ``cache_dir``; one instance per retrace."""

    def __init__(
        self,
        urls: Sequence[str],
        cache_dir: Path,
        timeout_seconds: float,
        max_bytes: int,
        log: Callable[[str], None],
    ) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        self.cache_dir = cache_dir
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes
        self._log = log
        self._failed: set[str] = set()

    def fetch(self, build_ids: Iterable[str]) -> dict[str, FetchedDebuginfo]:
        """Debuginfo of each build-id a server has (cached ones are not asked again)."""
        found: dict[str, FetchedDebuginfo] = {}
        with requests.Session() as session:
            for build_id in build_ids:
                fetched = self._cached(build_id) or self._download(session, build_id)
                if fetched is not None:
                    found[build_id] = fetched
        return found

    def _target(self, build_id: str) -> Path:
        return self.cache_dir / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"

    def _cached(self, build_id: str) -> FetchedDebuginfo | None:
        target = self._target(build_id)
        try:
            server = target.with_name(target.name + _ORIGIN_SUFFIX).read_text().strip()
        except OSError:
            return None
        return FetchedDebuginfo(build_id, server, target, fresh=False) if target.is_file() else None

    def _download(self, session: requests.Session, build_id: str) -> FetchedDebuginfo | None:
        for url in self.urls:
            if url in self._failed:
                continue
            try:
                path = self._download_from(session, url, build_id)
            except _ServerFailed as error:
                self._failed.add(url)
                self._log(
                    f"debuginfod server {url} failed ({error.why}); "
                    "it is not asked again during this retrace"
                )
                continue
            if path is not None:
                return FetchedDebuginfo(build_id, url, path, fresh=True)
        return None

    def _download_from(self, session: requests.Session, url: str, build_id: str) -> Path | None:
        deadline = time.monotonic() + self.timeout_seconds
        try:
            response = session.get(
                f"{url}/buildid/{build_id}/debuginfo", stream=True, timeout=self.timeout_seconds
            )
        except requests.RequestException as error:
            raise _ServerFailed(_describe(error)) from error
        with response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise _ServerFailed(f"HTTP status {response.status_code}")
            announced = response.headers.get("Content-Length")
            if announced and announced.isdigit() and int(announced) > self.max_bytes:
                raise _ServerFailed(f"a file of {int(announced)} bytes is over the size cap")
            return self._store(response, url, build_id, deadline)

    def _store(
        self, response: requests.Response, url: str, build_id: str, deadline: float
    ) -> Path | None:
        target = self._target(build_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as file:
                size = 0
                try:
                    for chunk in response.iter_content(_CHUNK):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise _ServerFailed("the file is over the size cap")
                        if time.monotonic() > deadline:
                            raise _ServerFailed(f"no complete answer in {self.timeout_seconds} s")
                        file.write(chunk)
                except requests.RequestException as error:
                    raise _ServerFailed(_describe(error)) from error
            with open(scratch, "rb") as file:
                if file.read(4) != _ELF_MAGIC:
                    raise _ServerFailed("its answer is not an ELF file")
            # Readable by the sandbox's unprivileged gdb, like the folders above it.
            os.chmod(scratch, 0o644)
            target.with_name(target.name + _ORIGIN_SUFFIX).write_text(url + "\n")
            os.replace(scratch, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)
        return target


class _Log(Protocol):
    def log(self, line: str) -> None: ...


def fetch_missing_debuginfo(
    settings: BuilderSettings, cache_dir: Path, resolved: Sequence[ResolvedModule], run: _Log
) -> dict[str, FetchedDebuginfo]:
    """Debuginfo from the configured servers for the modules the repository has none for."""
    wanted = [r.module.build_id for r in resolved if r.debuginfo is None]
    if not settings.debuginfod_urls or not wanted:
        return {}
    client = DebuginfodClient(
        settings.debuginfod_urls,
        cache_dir,
        settings.debuginfod_timeout_seconds,
        settings.debuginfod_max_file_mib << 20,
        run.log,
    )
    fetched = client.fetch(wanted)
    for r in resolved:
        if found := fetched.get(r.module.build_id):
            run.log(f"debuginfo for module {r.module.path} from debuginfod {found.server}")
    return fetched


def debuginfo_sources(
    resolved: Sequence[ResolvedModule], fetched: dict[str, FetchedDebuginfo]
) -> dict[str, str | None]:
    """Where each module's debuginfo came from: a package, a debuginfod server, or nowhere."""
    sources: dict[str, str | None] = {}
    for r in resolved:
        if r.debuginfo is not None:
            sources[r.module.path] = f"package {r.debuginfo.nevra}"
        elif found := fetched.get(r.module.build_id):
            sources[r.module.path] = f"debuginfod {found.server}"
        else:
            sources[r.module.path] = None
    return sources


@dataclass(frozen=True)
class CacheMount:
    """What the gdb container needs to read the cache: a mount and gdb options."""

    mounts: tuple[BindMount, ...] = ()
    gdb_options: tuple[str, ...] = ()


def debuginfod_cache_mount(settings: BuilderSettings, cache_dir: Path) -> CacheMount:
    """The cache mounted read-only, searched by gdb after /usr/lib/debug; none if unused."""
    if not settings.debuginfod_urls:
        return CacheMount()
    cache_dir.mkdir(parents=True, exist_ok=True)
    directories = f"/usr/lib/debug:{CACHE_IN_SANDBOX}"
    return CacheMount(
        (BindMount(cache_dir, CACHE_IN_SANDBOX),),
        ("-ex", f"set debug-file-directory {directories}"),
    )


def _describe(error: requests.RequestException) -> str:
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return "cannot connect"
    return type(error).__name__
