"""Download one package file from the first mirror that delivers it intact.

A file is streamed to the caller's path while it is hashed, and kept only when its
size and checksum match the upstream metadata; anything else is deleted. Each thread
keeps its own HTTP session, so a thread pool can share one ``PackageFetcher``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests

from retracer.sync.errors import ChecksumMismatch, DownloadFailed, PackageRefused, WeakChecksum
from retracer.sync.upstream import MirrorFailure, UpstreamPackage

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# createrepo_c's checksum names that hashlib spells differently.
_HASHLIB_NAMES = {"sha": "sha1"}
# What a package's metadata checksum may be: collisions of the weak ones can be made,
# so a mirror could serve other bytes under the same checksum.
STRONG_CHECKSUMS = frozenset({"sha256", "sha384", "sha512"})
WEAK_CHECKSUMS = frozenset({"md5", "sha1", "sha224"})


@dataclass(frozen=True)
class Fetched:
    """A verified file: its size, where it came from, and mirrors that failed first."""

    size: int
    url: str
    mirror_failures: tuple[MirrorFailure, ...]


class PackageFetcher:
    """Fetches package files over HTTP, verified against their metadata checksum."""

    def __init__(self, upstream: str, timeout_seconds: float, stop: threading.Event) -> None:
        self.upstream = upstream
        self.timeout_seconds = timeout_seconds
        self.stop = stop
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def fetch(self, package: UpstreamPackage, mirrors: Sequence[str], dest: Path) -> Fetched:
        """Write the verified file to ``dest``, trying ``mirrors`` in order.

        Raises:
            ChecksumMismatch: every mirror that answered sent different bytes.
            PackageRefused: the metadata names a checksum type hashlib lacks.
            DownloadFailed: no mirror delivered the file at all.
        """
        if package.checksum_type not in STRONG_CHECKSUMS:
            if _hash_name(package.checksum_type) in WEAK_CHECKSUMS:
                raise WeakChecksum(package.file_name, package.checksum_type)
            reason = f"{package.file_name} has an unknown checksum type {package.checksum_type!r}."
            raise PackageRefused(package.file_name, reason)
        failures: list[MirrorFailure] = []
        mismatch: ChecksumMismatch | None = None
        why = "no mirror is configured"
        for mirror, url in _candidate_urls(package, mirrors):
            if self.stop.is_set():
                raise DownloadFailed(package.file_name, "the sync was interrupted")
            try:
                size = self._download(url, package, dest)
            except ChecksumMismatch as error:
                mismatch = error
                failures.append(MirrorFailure(self.upstream, mirror, error.reason))
            except (requests.RequestException, OSError) as error:
                why = _describe(error)
                failures.append(MirrorFailure(self.upstream, mirror, f"{package.file_name}: {why}"))
            else:
                return Fetched(size, url, tuple(failures))
        if mismatch is not None:
            raise mismatch
        raise DownloadFailed(package.file_name, why)

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def _download(self, url: str, package: UpstreamPackage, dest: Path) -> int:
        hasher = hashlib.new(_hash_name(package.checksum_type))
        size = 0
        timeout = (self.timeout_seconds, self.timeout_seconds)
        try:
            with self._session().get(url, stream=True, timeout=timeout) as response:
                response.raise_for_status()
                with dest.open("wb") as file:
                    # Raw bytes: a server's Content-Encoding must not alter what is hashed.
                    for chunk in response.raw.stream(_CHUNK, decode_content=False):
                        if self.stop.is_set():
                            raise DownloadFailed(package.file_name, "the sync was interrupted")
                        size += len(chunk)
                        if size > package.size:
                            break  # longer than promised: no need to read the rest
                        hasher.update(chunk)
                        file.write(chunk)
                    file.flush()
                    os.fsync(file.fileno())
            _verify(package, url, size, hasher.hexdigest())
        except (PackageRefused, requests.RequestException, OSError):
            dest.unlink(missing_ok=True)
            raise
        return size

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session


def _hash_name(checksum_type: str) -> str:
    return _HASHLIB_NAMES.get(checksum_type, checksum_type)


def _verify(package: UpstreamPackage, url: str, size: int, found: str) -> None:
    if size != package.size:
        found_size = f"{size} bytes" if size < package.size else "more bytes"
        raise ChecksumMismatch(package.file_name, url, f"{package.size} bytes", found_size)
    if found != package.checksum:
        kind = package.checksum_type
        raise ChecksumMismatch(
            package.file_name, url, f"{kind} {package.checksum}", f"{kind} {found}"
        )


def _candidate_urls(package: UpstreamPackage, mirrors: Sequence[str]) -> list[tuple[str, str]]:
    """(mirror, file URL) pairs, best first. (A package with an xml:base is refused
    before this: its file could be anywhere.)"""
    return [(base, urljoin(_as_directory(base), package.location_href)) for base in mirrors]


def _as_directory(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _describe(error: BaseException) -> str:
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    if isinstance(error, requests.ConnectionError):
        return "the mirror cannot be reached"
    if isinstance(error, requests.Timeout):
        return "the mirror timed out"
    return str(error)
