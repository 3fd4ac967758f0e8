"""Which exact package ships a build-id, indexed once per metadata revision.

The index is a small SQLite file beside the other state, built from each
repository's ``filelists`` metadata (every package's NEVRA and files) with
createrepo_c's streaming parser, then answered with indexed queries. ``primary``
adds where each package file lies and its source RPM, and the files under
``/usr/src/debug`` are kept, so debuginfod can find a build-id's sources. A changed
``repomd.xml`` (a sync published new metadata) makes the next lookup rebuild it.

Why not ask dnf: a libsolv file search over a 100,000-package repository took
more than five minutes here, while this parser reads the same metadata in about
three seconds. dnf still resolves dependencies when it installs the packages.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import createrepo_c

from retracer.sync.durable import replace_durably
from retracer.sync.errors import RepositoryUnavailable
from retracer.sync.model import Package, package_arches
from retracer.sync.repodata import REPODATA, REPOMD, MetadataFile, metadata_files
from retracer.sync.settings import ReleaseSettings

log = logging.getLogger(__name__)

# Fedora's packaging links every ELF file by its build-id: the binary package ships
# /usr/lib/.build-id/xx/rest, its -debuginfo package /usr/lib/debug/.build-id/xx/rest.debug.
_BINARY_LINK = re.compile(r"^/usr/lib/\.build-id/([0-9a-f]{2})/([0-9a-f]{6,126})$")
_DEBUG_LINK = re.compile(r"^/usr/lib/debug/\.build-id/([0-9a-f]{2})/([0-9a-f]{6,126})\.debug$")
_LINK_FOLDERS = ("/usr/lib/.build-id/", "/usr/lib/debug/.build-id/")
_SOURCE_FOLDER = "/usr/src/debug/"
# Part of the index file's name: a new schema never reads an index of an old one.
_SCHEMA_VERSION = "2"
_NVR = re.compile(r"^(?P<name>.+)-(?:(?P<epoch>\d+):)?(?P<version>[^-:]+)-(?P<release>[^-:]+)$")

_SCHEMA = """
CREATE TABLE package (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL, epoch INTEGER NOT NULL, version TEXT NOT NULL,
    release TEXT NOT NULL, arch TEXT NOT NULL,
    location TEXT NOT NULL, sourcerpm TEXT NOT NULL
);
CREATE INDEX package_nvr ON package (name, version, release);
CREATE TABLE build_id (
    build_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('binary', 'debuginfo')),
    package_id INTEGER NOT NULL REFERENCES package (id)
);
CREATE INDEX build_id_lookup ON build_id (build_id, kind);
CREATE TABLE source_file (
    path TEXT NOT NULL,
    package_id INTEGER NOT NULL REFERENCES package (id)
);
CREATE INDEX source_file_lookup ON source_file (path);
"""

BuildIdKind = Literal["binary", "debuginfo"]


@dataclass(frozen=True)
class BuildIdMatch:
    """The exact packages shipping one build-id's binary and its debug data."""

    build_id: str
    binary: Package | None
    debuginfo: Package | None


@dataclass(frozen=True)
class PackageFile:
    """One package and the RPM file in a local repository that holds it."""

    package: Package
    path: Path


def build_id_link(build_id: str, kind: BuildIdKind) -> str:
    """The symlink Fedora's packaging ships for a build-id (``/usr/lib/.build-id/xx/...``)."""
    if kind == "binary":
        return f"/usr/lib/.build-id/{build_id[:2]}/{build_id[2:]}"
    return f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug"


class RepositoryIndex:
    """Build-id and NEVRA lookups over one release's local repositories.

    Safe to share between threads. Lookups reuse read-only SQLite connections: a new
    one (open, read the schema, first pages) cost debuginfod's cold requests more than
    the query itself.
    """

    def __init__(self, release: ReleaseSettings, index_dir: Path) -> None:
        self.release = release
        self.index_dir = index_dir
        self._lock = threading.Lock()
        # deque's append and pop are atomic, so the pool needs no lock (under gevent a
        # patched lock would not be safe between the pool's native threads anyway).
        self._idle: deque[tuple[Path, sqlite3.Connection]] = deque()
        self._metadata: dict[Path, tuple[tuple[int, int, int], _RepositoryMetadata]] = {}

    def find(self, nvr: str, arch: str) -> Package | None:
        """The package with this NVR (``name-[epoch:]version-release``) for ``arch`` or noarch.

        ``arch`` may name a machine rather than a package arch: ``i386`` (a release
        id's) and ``i686`` (``uname -m``) both find i686, i586, i486 and i386 packages.

        Raises:
            RepositoryUnavailable: the repository metadata cannot be read.
        """
        match = _NVR.match(nvr.strip())
        if match is None:
            return None
        preferred = (*package_arches(arch), "noarch")
        query = (
            "SELECT name, epoch, version, release, arch FROM package"
            " WHERE name = ? AND version = ? AND release = ?"
            f" AND arch IN ({', '.join('?' * len(preferred))})"
        )
        params: list[object] = [match["name"], match["version"], match["release"], *preferred]
        if match["epoch"] is not None:
            query += " AND epoch = ?"
            params.append(int(match["epoch"]))
        with self._connect() as db:
            rows = db.execute(query, params).fetchall()
        best = min(rows, key=lambda row: preferred.index(row[4]), default=None)
        return Package(*best) if best else None

    def match_build_ids(self, build_ids: Iterable[str]) -> dict[str, BuildIdMatch]:
        """For each build-id, the binary and debuginfo package that ship it, or None.

        Raises:
            RepositoryUnavailable: the repository metadata cannot be read.
        """
        wanted = sorted({b.lower() for b in build_ids})
        found: dict[tuple[str, str], Package] = {}
        with self._connect() as db:
            for build_id in wanted:
                rows = db.execute(
                    "SELECT b.kind, p.name, p.epoch, p.version, p.release, p.arch"
                    " FROM build_id b JOIN package p ON p.id = b.package_id"
                    " WHERE b.build_id = ? ORDER BY p.id",
                    (build_id,),
                )
                for kind, *nevra in rows:
                    found.setdefault((build_id, kind), Package(*nevra))
        return {
            b: BuildIdMatch(b, found.get((b, "binary")), found.get((b, "debuginfo")))
            for b in wanted
        }

    def locate(self, build_id: str, kind: BuildIdKind) -> PackageFile | None:
        """The package file shipping this build-id's binary or debuginfo link, if any.

        Raises:
            RepositoryUnavailable: the repository metadata cannot be read.
        """
        with self._connect() as db:
            row = db.execute(
                "SELECT p.name, p.epoch, p.version, p.release, p.arch, p.location"
                " FROM build_id b JOIN package p ON p.id = b.package_id"
                " WHERE b.build_id = ? AND b.kind = ? ORDER BY p.id LIMIT 1",
                (build_id.lower(), kind),
            ).fetchone()
        return PackageFile(Package(*row[:5]), Path(row[5])) if row else None

    def locate_source(self, build_id: str, path: str) -> PackageFile | None:
        """The package holding source file ``path`` (exactly) of this build-id, if any.

        Only packages built from the same source RPM, for the same architecture, as
        the build-id's debuginfo (or binary) package count: its -debuginfo or
        -debugsource package.

        Raises:
            RepositoryUnavailable: the repository metadata cannot be read.
        """
        with self._connect() as db:
            row = db.execute(
                "SELECT s.name, s.epoch, s.version, s.release, s.arch, s.location"
                " FROM build_id b JOIN package owner ON owner.id = b.package_id"
                " JOIN package s ON s.sourcerpm = owner.sourcerpm AND s.arch = owner.arch"
                " JOIN source_file f ON f.package_id = s.id"
                " WHERE b.build_id = ? AND f.path = ? AND owner.sourcerpm != ''"
                " ORDER BY b.kind = 'binary', s.id LIMIT 1",
                (build_id.lower(), path),
            ).fetchone()
        return PackageFile(Package(*row[:5]), Path(row[5])) if row else None

    def package_files(self, packages: Iterable[Package]) -> dict[Package, Path]:
        """Where each of ``packages`` lies in the local repositories (missing ones left out).

        Raises:
            RepositoryUnavailable: the repository metadata cannot be read.
        """
        found: dict[Package, Path] = {}
        with self._connect() as db:
            for package in packages:
                row = db.execute(
                    "SELECT location FROM package WHERE name = ? AND epoch = ? AND version = ?"
                    " AND release = ? AND arch = ? AND location != '' ORDER BY id LIMIT 1",
                    (package.name, package.epoch, package.version, package.release, package.arch),
                ).fetchone()
                if row:
                    found[package] = Path(row[0])
        return found

    def debug_companions(self, packages: Iterable[Package]) -> set[Package]:
        """The packages gdb needs beside these debuginfo packages: the ``-debugsource``
        and the main ``-debuginfo`` (which carries the dwz multifile under
        ``/usr/lib/debug/.dwz``) built from the same source RPM, for the same arch.

        Fedora's sub-packages' ``-debuginfo`` name them as dependencies; they are read
        here from the index, so no dependency solver runs while a crash waits.

        Raises:
            RepositoryUnavailable: the repository metadata cannot be read.
        """
        found: set[Package] = set()
        with self._connect() as db:
            for package in packages:
                if not package.name.endswith("-debuginfo"):
                    continue
                rows = db.execute(
                    "SELECT c.name, c.epoch, c.version, c.release, c.arch, c.sourcerpm"
                    " FROM package p JOIN package c"
                    " ON c.sourcerpm = p.sourcerpm AND c.arch = p.arch"
                    " AND c.epoch = p.epoch AND c.version = p.version AND c.release = p.release"
                    " WHERE p.name = ? AND p.epoch = ? AND p.version = ? AND p.release = ?"
                    " AND p.arch = ? AND p.sourcerpm != ''"
                    " AND (c.name LIKE '%-debugsource' OR c.name LIKE '%-debuginfo')",
                    (package.name, package.epoch, package.version, package.release, package.arch),
                )
                for *nevra, sourcerpm in rows:
                    companion = Package(*nevra)
                    source_name = _source_name(sourcerpm)
                    if companion.name in (f"{source_name}-debugsource", f"{source_name}-debuginfo"):
                        found.add(companion)
        return found - set(packages)

    def revision(self) -> str:
        """Names the repositories' current metadata: it changes with any package change.

        Raises:
            RepositoryUnavailable: a repository has no readable metadata.
        """
        metadata = [self._current_metadata(r) for r in self.release.repositories]
        return _revision(self.release.id, metadata)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        path = self._current_index()
        db = self._idle_connection(path)
        if db is None:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        try:
            yield db
        except BaseException:
            db.close()
            raise
        self._idle.append((path, db))

    def _idle_connection(self, path: Path) -> sqlite3.Connection | None:
        """An idle connection to ``path``; those to replaced indexes are closed."""
        while True:
            try:
                idle_path, db = self._idle.pop()
            except IndexError:
                return None
            if idle_path == path:
                return db
            db.close()

    def _current_index(self) -> Path:
        metadata = [self._current_metadata(r) for r in self.release.repositories]
        key = _revision(f"{self.release.id}\n{_SCHEMA_VERSION}", metadata)
        path = self.index_dir / f"{self.release.id}-{key}.sqlite"
        if path.exists():
            return path
        with self._lock:
            if not path.exists():
                self._build(path, metadata)
                self._prune(keep=path)
        return path

    def _current_metadata(self, repository: Path) -> _RepositoryMetadata:
        """``_metadata(repository)``, read again only when its repomd.xml was replaced
        (a sync publishes by rename) or rewritten."""
        try:
            stat = os.stat(repository / REPODATA / REPOMD)
        except OSError:
            return _metadata(repository)  # raises the reason
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        known = self._metadata.get(repository)
        if known is not None and known[0] == signature:
            return known[1]
        metadata = _metadata(repository)
        self._metadata[repository] = (signature, metadata)
        return metadata

    def _build(self, path: Path, metadata: list[_RepositoryMetadata]) -> None:
        log.info("indexing the repositories of %s", self.release.id)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(suffix=".sqlite.tmp", dir=self.index_dir)
        os.close(fd)
        try:
            with closing(sqlite3.connect(scratch)) as db:
                # A scratch file: no journal and no fsync per statement (executescript
                # commits each one, which took seconds on a busy disk); one fsync below.
                db.execute("PRAGMA journal_mode = OFF")
                db.execute("PRAGMA synchronous = OFF")
                db.executescript(_SCHEMA)
                writer = _IndexWriter(db)
                for files in metadata:
                    writer.add(files)
                db.commit()
            # Another process may build the same revision at the same time; both
            # results are identical, and rename makes whichever lands last whole.
            replace_durably(scratch, path)
        finally:
            Path(scratch).unlink(missing_ok=True)

    def _prune(self, keep: Path) -> None:
        for old in self.index_dir.glob(f"{self.release.id}-*.sqlite"):
            if old != keep:
                old.unlink(missing_ok=True)


class _IndexWriter:
    """Fills the index from filelists metadata, one package at a time."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._ids: dict[tuple[str, int, str, str, str], int] = {}
        # Per repository: pkgId -> (absolute location, source RPM), from primary.
        self._origins: dict[str, tuple[str, str]] = {}
        self._repository = Path()

    def add(self, metadata: _RepositoryMetadata) -> None:
        self._repository = metadata.repository
        self._origins = {}
        try:
            createrepo_c.xml_parse_primary(
                str(metadata.primary.path), pkgcb=self._origin, do_files=False
            )
            createrepo_c.xml_parse_filelists(
                str(metadata.filelists.path), None, self._package, None
            )
        except (createrepo_c.CreaterepoCError, OSError) as error:
            raise RepositoryUnavailable(
                str(metadata.repository), f"its metadata cannot be read ({error})"
            ) from error

    def _origin(self, pkg: createrepo_c.Package) -> None:
        self._origins[pkg.pkgId] = (
            os.path.join(self._repository, pkg.location_href),
            pkg.rpm_sourcerpm or "",
        )

    def _package(self, pkg: createrepo_c.Package) -> bool:
        package_id = self._package_id(pkg)
        rows = []
        sources = []
        for _kind, folder, name in pkg.files:
            if folder.startswith(_SOURCE_FOLDER):
                sources.append((folder + name, package_id))
                continue
            if not folder.startswith(_LINK_FOLDERS):
                continue
            path = folder + name
            if found := _BINARY_LINK.match(path):
                rows.append((found[1] + found[2], "binary", package_id))
            elif found := _DEBUG_LINK.match(path):
                rows.append((found[1] + found[2], "debuginfo", package_id))
        if rows:
            self._db.executemany("INSERT INTO build_id VALUES (?, ?, ?)", rows)
        if sources:
            self._db.executemany("INSERT INTO source_file VALUES (?, ?)", sources)
        return True  # go on parsing

    def _package_id(self, pkg: createrepo_c.Package) -> int:
        nevra = (pkg.name, int(pkg.epoch or 0), pkg.version, pkg.release, pkg.arch)
        if nevra not in self._ids:
            location, sourcerpm = self._origins.get(pkg.pkgId, ("", ""))
            cursor = self._db.execute(
                "INSERT INTO package (name, epoch, version, release, arch, location, sourcerpm)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*nevra, location, sourcerpm),
            )
            self._ids[nevra] = int(cursor.lastrowid or 0)
        return self._ids[nevra]


@dataclass(frozen=True)
class _RepositoryMetadata:
    repository: Path
    primary: MetadataFile
    filelists: MetadataFile


def _source_name(sourcerpm: str) -> str:
    """``foo`` of ``foo-1.0-1.src.rpm``."""
    found = _NVR.match(sourcerpm.removesuffix(".rpm").rsplit(".", 1)[0])
    return found["name"] if found else ""


def _revision(prefix: str, metadata: list[_RepositoryMetadata]) -> str:
    """A short digest naming the metadata's revision: the files are named by content,
    so their checksums change with any package change."""
    digest = hashlib.sha256(prefix.encode())
    for files in metadata:
        digest.update(files.filelists.checksum.encode())
    return digest.hexdigest()[:24]


def _metadata(repository: Path) -> _RepositoryMetadata:
    """The repository's current primary and filelists metadata.

    Raises:
        RepositoryUnavailable: it has no readable repomd.xml, or no file lists.
    """
    if not (repository / REPODATA / REPOMD).is_file():
        raise RepositoryUnavailable(str(repository), f"it has no {REPODATA}/{REPOMD}")
    try:
        files = metadata_files(repository)
    except (createrepo_c.CreaterepoCError, OSError) as error:
        why = str(error).strip().rstrip(".")
        raise RepositoryUnavailable(
            str(repository), f"its {REPOMD} is unreadable ({why})"
        ) from error
    if "filelists" not in files or "primary" not in files:
        raise RepositoryUnavailable(str(repository), "its metadata has no file lists")
    return _RepositoryMetadata(repository, files["primary"], files["filelists"])
