"""Mirror a release's upstreams into its local repository, which keeps every version.

``sync_release`` is the entry point. Under the release's lock it reads each upstream's
package list, downloads every file the repository does not hold yet (in parallel,
checksum- and optionally signature-verified, into a work area, then renamed into
``Packages/``), and finally republishes the metadata. Nothing is ever deleted because
upstream dropped it: that is how old crashes stay retraceable.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from retracer.sync.download import Fetched, PackageFetcher
from retracer.sync.errors import PackageRefused, SyncError, UnsafeMetadata
from retracer.sync.lock import release_lock
from retracer.sync.repodata import held_files, publish
from retracer.sync.settings import ReleaseSettings, SyncSettings, Upstream
from retracer.sync.signatures import SignatureChecker
from retracer.sync.upstream import MirrorFailure, UpstreamIndex, UpstreamPackage, fetch_index

log = logging.getLogger(__name__)

# Inside the repository but hidden: repodata scans skip it, renames stay on one filesystem.
WORK_DIR = ".sync"
PACKAGES_DIR = "Packages"


@dataclass(frozen=True)
class RefusedPackage:
    """A package left out of the local repository, and the sentence saying why."""

    upstream: str
    file_name: str
    reason: str


@dataclass(frozen=True)
class UpstreamSummary:
    name: str
    # The mirror the metadata came from; None when no mirror answered.
    mirror: str | None
    listed: int
    new_packages: int
    new_bytes: int
    refused: tuple[RefusedPackage, ...]
    mirror_failures: tuple[MirrorFailure, ...]
    # Why this upstream could not be synced at all, else None.
    error: str | None = None


@dataclass(frozen=True)
class SyncSummary:
    release_id: str
    upstreams: tuple[UpstreamSummary, ...]
    metadata_updated: bool
    seconds: float

    @property
    def new_packages(self) -> int:
        return sum(u.new_packages for u in self.upstreams)

    @property
    def new_bytes(self) -> int:
        return sum(u.new_bytes for u in self.upstreams)

    @property
    def refused(self) -> tuple[RefusedPackage, ...]:
        return tuple(r for u in self.upstreams for r in u.refused)

    @property
    def failed_upstreams(self) -> tuple[UpstreamSummary, ...]:
        return tuple(u for u in self.upstreams if u.error is not None)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed_upstreams


class SyncProgress(Protocol):
    """What a sync tells its caller as it goes; called from the calling thread only."""

    def upstream_started(self, upstream: str, packages: int, size: int) -> None: ...

    def package_done(self, upstream: str, size: int) -> None: ...

    def upstream_finished(self, upstream: str) -> None: ...


class NoProgress:
    def upstream_started(self, upstream: str, packages: int, size: int) -> None:
        pass

    def package_done(self, upstream: str, size: int) -> None:
        pass

    def upstream_finished(self, upstream: str) -> None:
        pass


def sync_release(
    release: ReleaseSettings,
    settings: SyncSettings,
    progress: SyncProgress | None = None,
) -> SyncSummary:
    """Bring the release's first local repository up to date with all its upstreams.

    Problems with single packages or upstreams end up in the summary; the sync goes
    on with the rest and publishes what it verified.

    Raises:
        SyncLocked: another sync of this release is running.
        PublishFailed: the new metadata cannot be written.
    """
    started = time.monotonic()
    repository = release.repositories[0]
    repository.mkdir(parents=True, exist_ok=True)
    if release.unsigned_upstreams:
        log.warning(
            "INSECURE: release %s syncs %s without any signature check (insecure: true);"
            " a compromised mirror can put any package into its environments",
            release.id,
            ", ".join(release.unsigned_upstreams),
        )
    with release_lock(repository, release.id):
        work_dir = _fresh_work_dir(repository)
        mirror = _Mirror(repository, work_dir, settings, progress or NoProgress())
        summaries = tuple(mirror.sync(upstream) for upstream in release.upstreams)
        updated = publish(repository, work_dir)
    return SyncSummary(release.id, summaries, updated, time.monotonic() - started)


def _fresh_work_dir(repository: Path) -> Path:
    # Whatever an interrupted sync left here is unverified: start over.
    work_dir = repository / WORK_DIR
    shutil.rmtree(work_dir, ignore_errors=True)
    (work_dir / "partial").mkdir(parents=True)
    return work_dir


class _Mirror:
    """Syncs upstreams one after another into one repository."""

    def __init__(
        self, repository: Path, work_dir: Path, settings: SyncSettings, progress: SyncProgress
    ) -> None:
        self.repository = repository
        self.work_dir = work_dir
        self.settings = settings
        self.progress = progress
        # Held by file name, wherever it sits: a NEVRA's file is the same on every mirror.
        self.held = {Path(href).name for href in held_files(repository)}

    def sync(self, upstream: Upstream) -> UpstreamSummary:
        try:
            index = fetch_index(upstream, self.work_dir, self.settings.timeout_seconds)
            checker = SignatureChecker(upstream.gpgkey) if upstream.gpgkey else None
        except SyncError as error:
            log.warning("upstream %s skipped: %s", upstream.name, error.reason)
            return UpstreamSummary(upstream.name, None, 0, 0, 0, (), (), error=error.reason)
        missing = self._missing(index)
        self.progress.upstream_started(upstream.name, len(missing), sum(p.size for p in missing))
        try:
            results = self._download_all(index, missing, checker)
        finally:
            self.progress.upstream_finished(upstream.name)
        fetched = [r for r in results if isinstance(r, Fetched)]
        refused = tuple(
            RefusedPackage(upstream.name, r.file_name, r.reason)
            for r in results
            if isinstance(r, PackageRefused)
        )
        failures = list(index.mirror_failures)
        for result in fetched:
            failures.extend(result.mirror_failures)
        return UpstreamSummary(
            name=upstream.name,
            mirror=index.mirrors[0],
            listed=len(index.packages),
            new_packages=len(fetched),
            new_bytes=sum(r.size for r in fetched),
            refused=refused,
            mirror_failures=_first_per_mirror(failures),
        )

    def _missing(self, index: UpstreamIndex) -> list[UpstreamPackage]:
        missing: dict[str, UpstreamPackage] = {}
        for package in index.packages:
            if package.file_name not in self.held:
                missing.setdefault(package.file_name, package)
        return sorted(missing.values(), key=lambda p: p.location_href)

    def _download_all(
        self,
        index: UpstreamIndex,
        packages: list[UpstreamPackage],
        checker: SignatureChecker | None,
    ) -> list[Fetched | PackageRefused]:
        stop = threading.Event()
        fetcher = PackageFetcher(index.upstream, self.settings.timeout_seconds, stop)
        results: list[Fetched | PackageRefused] = []
        pool = ThreadPoolExecutor(max(1, self.settings.parallel_downloads), "sync-download")
        try:
            futures: dict[Future[Fetched], UpstreamPackage] = {
                pool.submit(self._take, fetcher, checker, index.mirrors, package): package
                for package in packages
            }
            for future in as_completed(futures):
                try:
                    result: Fetched | PackageRefused = future.result()
                except PackageRefused as refused:
                    log.warning("refused: %s", refused.reason)
                    result = refused
                else:
                    self.held.add(futures[future].file_name)
                results.append(result)
                self.progress.package_done(index.upstream, futures[future].size)
        except BaseException:
            # Ctrl-C or a bug: let running downloads stop at their next chunk.
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            fetcher.close()
        return results

    def _take(
        self,
        fetcher: PackageFetcher,
        checker: SignatureChecker | None,
        mirrors: tuple[str, ...],
        package: UpstreamPackage,
    ) -> Fetched:
        """Download, verify and move one package into place; runs in a pool thread."""
        unsafe = unsafe_location(package)
        if unsafe is not None:
            raise UnsafeMetadata(package.location_href, unsafe)
        partial = self.work_dir / "partial" / f"{package.file_name}.part"
        try:
            fetched = fetcher.fetch(package, mirrors, partial)
            if checker is not None:
                checker.check(partial, package.file_name)
            folder = self.repository / PACKAGES_DIR / _bucket(package.file_name)
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(partial, folder / package.file_name)  # only now does it count as held
        except OSError as error:
            why = error.strerror or str(error)
            raise PackageRefused(
                package.file_name, f"{package.file_name} cannot be stored: {why}."
            ) from error
        finally:
            partial.unlink(missing_ok=True)
        return fetched


def unsafe_location(package: UpstreamPackage) -> str | None:
    """Why the metadata's location of a package is not a file inside the repository,
    or None when it is (a relative path of plain segments ending in ``.rpm``)."""
    href = package.location_href
    if package.location_base:
        return f"its location points outside the repository (xml:base {package.location_base!r})"
    if not href or href.endswith("/"):
        return "its location names no file"
    if href.startswith("/") or urlsplit(href).scheme or "\\" in href:
        return "its location is absolute"
    if any(part in ("", ".", "..") for part in href.split("/")):
        return "its location leaves the repository"
    if not href.endswith(".rpm") or href.startswith(".") or "/." in href:
        return "its location is not an .rpm file"
    if any(ord(char) < 32 or ord(char) == 127 for char in href):
        return "its location holds control characters"
    return None


def _bucket(file_name: str) -> str:
    """Fedora's layout: ``Packages/<first letter>/``, keeping folders small."""
    return file_name[0].lower()


def _first_per_mirror(failures: list[MirrorFailure]) -> tuple[MirrorFailure, ...]:
    seen: dict[str, MirrorFailure] = {}
    for failure in failures:
        seen.setdefault(failure.url, failure)
    return tuple(seen.values())
