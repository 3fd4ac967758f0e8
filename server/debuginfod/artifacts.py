"""Find a build-id's files in the local repositories, unpack each once, cache them.

A request names an :class:`Artifact`. Its cache file's name follows from the request
alone (a build-id's content never changes), so a hot request is one ``stat`` and
needs neither the index nor a lock. A cold one looks the build-id up in each
release's index, streams the one member out of the RPM (``sync.payload``), and
renames it into place. An exclusive ``flock`` per artifact makes concurrent cold
requests, in this process or another, unpack it once: the others wait and then
find it cached. The cache is capped by size; the least recently served files go
first. Everything here blocks: the HTTP side calls :meth:`ArtifactCache.fetch` off
the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from retracer.sync.elf import section_data
from retracer.sync.index import BuildIdKind, PackageFile, RepositoryIndex, build_id_link
from retracer.sync.payload import extract_member
from retracer.sync.settings import ReleaseSettings

log = logging.getLogger(__name__)

ArtifactKind = Literal["debuginfo", "executable", "source", "section"]
_BUILD_ID = re.compile(r"^[0-9a-f]{2,128}$")
_SECTION = re.compile(r"^[A-Za-z0-9_.$@+-]{1,255}$")
# A served file's modification time is refreshed at most this often (it orders eviction).
_TOUCH_SECONDS = 60.0


def canonical_source_path(path: str) -> str:
    """An absolute path with dot segments removed (RFC 3986, 5.2.4) and ``//`` reduced."""
    output: list[str] = []
    for segment in ("/" + path.lstrip("/")).split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    return re.sub("/+", "/", "/" + "/".join(output))


@dataclass(frozen=True)
class Artifact:
    """One debuginfod request: a build-id, what of it, and the source path or section."""

    build_id: str
    kind: ArtifactKind
    name: str = ""

    @classmethod
    def parse(cls, build_id: str, kind: ArtifactKind, name: str = "") -> Artifact | None:
        """The artifact, or None when the build-id or name cannot name anything."""
        if not _BUILD_ID.match(build_id) or len(build_id) % 2:
            return None
        if kind == "source":
            name = canonical_source_path(name)
        elif kind == "section" and not _SECTION.match(name):
            return None
        return cls(build_id, kind, name)

    @property
    def key(self) -> str:
        """The cache file's path below the cache folder."""
        leaf: str = self.kind
        if self.name:
            leaf += "-" + hashlib.sha256(self.name.encode()).hexdigest()[:32]
        return f"{self.build_id[:2]}/{self.build_id[2:]}/{leaf}"


@dataclass(frozen=True)
class CachedArtifact:
    """An artifact's file in the cache, and where it came from."""

    path: Path
    size: int
    member: str  # the file's path inside the package (X-DEBUGINFOD-FILE)
    archive: str  # the package file (X-DEBUGINFOD-ARCHIVE)


class ArtifactCache:
    """Artifacts of every release's repositories, unpacked on demand into ``cache_dir``."""

    def __init__(
        self,
        releases: Sequence[ReleaseSettings],
        index_dir: Path,
        cache_dir: Path,
        max_bytes: int,
        on_unpack: Callable[[Artifact], None] = lambda _artifact: None,
    ) -> None:
        self._indexes = [RepositoryIndex(release, index_dir) for release in releases]
        self.cache_dir = cache_dir
        self._cache_root = str(cache_dir)
        self.max_bytes = max_bytes
        self._on_unpack = on_unpack
        self._scratch = cache_dir / ".partial"
        self._locks = cache_dir / ".locks"
        for folder in (self._scratch, self._locks):
            folder.mkdir(parents=True, exist_ok=True)
        self._used_bytes: int | None = None  # counted on the first store
        # Where cached files came from, remembered: hot requests skip reading the sidecar.
        self._origin = functools.lru_cache(maxsize=4096)(_read_origin)

    def cached(self, artifact: Artifact) -> CachedArtifact | None:
        """The artifact if it is in the cache; never unpacks, never reads the index."""
        # os.path rather than pathlib: this runs for every hot request.
        path = os.path.join(self._cache_root, artifact.key)
        try:
            stat = os.stat(path)
            member, archive = self._origin(path)
        except (OSError, ValueError, KeyError):
            return None
        if time.time() - stat.st_mtime > _TOUCH_SECONDS:
            with contextlib.suppress(OSError):
                os.utime(path)
        return CachedArtifact(Path(path), stat.st_size, member, archive)

    def fetch(self, artifact: Artifact) -> CachedArtifact | None:
        """The artifact, unpacked first if needed; None when no repository has it.

        Raises:
            RepositoryUnavailable: a repository's metadata cannot be read.
            PayloadUnreadable: the package file holding it cannot be read.
        """
        found = self.cached(artifact)
        if found is not None:
            return found
        with self._flock(artifact.key.replace("/", "-")):
            found = self.cached(artifact)  # another request unpacked it meanwhile
            if found is not None:
                return found
            return self._produce(artifact)

    @contextlib.contextmanager
    def _flock(self, name: str) -> Iterator[None]:
        """An exclusive lock between threads and processes (not gevent-specific)."""
        fd = os.open(self._locks / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _produce(self, artifact: Artifact) -> CachedArtifact | None:
        with tempfile.NamedTemporaryFile(dir=self._scratch, delete=False) as scratch:
            try:
                origin = self._write(artifact, scratch)
                if origin is None:
                    return None
                scratch.flush()
                self._on_unpack(artifact)
                return self._store(artifact, Path(scratch.name), *origin)
            finally:
                Path(scratch.name).unlink(missing_ok=True)

    def _write(self, artifact: Artifact, target: IO[bytes]) -> tuple[str, str] | None:
        """Write the artifact's bytes; returns (member, archive) or None when unknown."""
        if artifact.kind == "section":
            return self._write_section(artifact, target)
        for index in self._indexes:
            package, member = self._locate(index, artifact)
            if package is None:
                continue
            extracted = extract_member(package.path, member, target)
            if extracted is not None:
                return extracted.path, str(package.path)
        return None

    @staticmethod
    def _locate(index: RepositoryIndex, artifact: Artifact) -> tuple[PackageFile | None, str]:
        if artifact.kind == "source":
            return index.locate_source(artifact.build_id, artifact.name), artifact.name
        kind: BuildIdKind = "debuginfo" if artifact.kind == "debuginfo" else "binary"
        return index.locate(artifact.build_id, kind), build_id_link(artifact.build_id, kind)

    def _write_section(self, artifact: Artifact, target: IO[bytes]) -> tuple[str, str] | None:
        # As elfutils does: from the debuginfo file, else (absent, or only a
        # placeholder there) from the executable.
        for kind in ("debuginfo", "executable"):
            elf = self.fetch(Artifact(artifact.build_id, kind))
            if elf is None:
                continue
            data = section_data(elf.path, artifact.name)
            if data is not None:
                target.write(data)
                return elf.member, elf.archive
        return None

    def _store(
        self, artifact: Artifact, scratch: Path, member: str, archive: str
    ) -> CachedArtifact:
        path = self.cache_dir / artifact.key
        path.parent.mkdir(parents=True, exist_ok=True)
        sidecar = path.with_suffix(".json")
        # The sidecar first: a data file without one is never served.
        sidecar.write_text(json.dumps({"member": member, "archive": archive}))
        os.chmod(scratch, 0o644)
        os.replace(scratch, path)
        size = path.stat().st_size
        self._account(size, keep=path)
        return CachedArtifact(path, size, member, archive)

    def _account(self, added: int, keep: Path) -> None:
        with self._flock("usage"):
            if self._used_bytes is None:
                self._used_bytes = sum(size for _, size, _ in self._entries())
            else:
                self._used_bytes += added
            if self._used_bytes <= self.max_bytes:
                return
            # Evict down to 90% of the cap, so the next store does not evict again.
            goal = self.max_bytes * 9 // 10
            for mtime_path, size, _ in sorted(self._entries(), key=lambda e: e[2]):
                if self._used_bytes <= goal:
                    break
                if mtime_path == keep:
                    continue
                mtime_path.unlink(missing_ok=True)
                mtime_path.with_suffix(".json").unlink(missing_ok=True)
                self._used_bytes -= size
                log.info("evicted %s from the debuginfod cache", mtime_path)

    def _entries(self) -> Iterator[tuple[Path, int, float]]:
        for folder, subfolders, files in os.walk(self.cache_dir):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            for name in files:
                if name.endswith(".json"):
                    continue
                path = Path(folder, name)
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    yield path, stat.st_size, stat.st_mtime


def _read_origin(path: str) -> tuple[str, str]:
    with open(path + ".json", "rb") as sidecar:
        origin = json.loads(sidecar.read())
    return str(origin["member"]), str(origin["archive"])
