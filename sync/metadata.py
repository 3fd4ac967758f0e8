"""Questions about a release's local repositories, answered with python3-dnf.

This is the only module that imports ``dnf``. Loading repository metadata into a
libsolv sack is slow for a large repository, so it happens once per metadata
revision: the answers retracer needs (which exact package ships a build-id, and
which NEVRAs exist) are written into a small SQLite index beside the other state,
and every later lookup is an indexed query. A changed ``repomd.xml`` (a sync
published new metadata) makes the next lookup rebuild the index.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dnf
import dnf.exceptions

from retracer.sync.errors import RepositoryUnavailable
from retracer.sync.model import Package
from retracer.sync.settings import ReleaseSettings

log = logging.getLogger(__name__)

# Fedora's packaging links every ELF file by its build-id: the binary package ships
# /usr/lib/.build-id/xx/rest, its -debuginfo package /usr/lib/debug/.build-id/xx/rest.debug.
_BINARY_LINK = re.compile(r"^/usr/lib/\.build-id/([0-9a-f]{2})/([0-9a-f]{6,126})$")
_DEBUG_LINK = re.compile(r"^/usr/lib/debug/\.build-id/([0-9a-f]{2})/([0-9a-f]{6,126})\.debug$")
_BUILD_ID_GLOBS = ["/usr/lib/.build-id/*", "/usr/lib/debug/.build-id/*"]
_NVR = re.compile(r"^(?P<name>.+)-(?:(?P<epoch>\d+):)?(?P<version>[^-:]+)-(?P<release>[^-:]+)$")

_SCHEMA = """
CREATE TABLE package (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL, epoch INTEGER NOT NULL, version TEXT NOT NULL,
    release TEXT NOT NULL, arch TEXT NOT NULL
);
CREATE INDEX package_nvr ON package (name, version, release);
CREATE TABLE build_id (
    build_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('binary', 'debuginfo')),
    package_id INTEGER NOT NULL REFERENCES package (id)
);
CREATE INDEX build_id_lookup ON build_id (build_id, kind);
"""


@dataclass(frozen=True)
class BuildIdMatch:
    """The exact packages shipping one build-id's binary and its debug data."""

    build_id: str
    binary: Package | None
    debuginfo: Package | None


class RepositoryIndex:
    """Build-id and NEVRA lookups over one release's local repositories.

    Safe to share between threads; each lookup opens its own SQLite connection.
    """

    def __init__(self, release: ReleaseSettings, index_dir: Path) -> None:
        self.release = release
        self.index_dir = index_dir
        self._lock = threading.Lock()

    def find(self, nvr: str, arch: str) -> Package | None:
        """The package with this NVR (``name-[epoch:]version-release``) for ``arch`` or noarch.

        Raises:
            RepositoryUnavailable: the repository metadata cannot be read.
        """
        match = _NVR.match(nvr.strip())
        if match is None:
            return None
        query = (
            "SELECT name, epoch, version, release, arch FROM package"
            " WHERE name = ? AND version = ? AND release = ? AND arch IN (?, 'noarch')"
        )
        params: list[object] = [match["name"], match["version"], match["release"], arch]
        if match["epoch"] is not None:
            query += " AND epoch = ?"
            params.append(int(match["epoch"]))
        with self._connect() as db:
            row = db.execute(query + " ORDER BY arch = 'noarch' LIMIT 1", params).fetchone()
        return Package(*row) if row else None

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

    def revision(self) -> str:
        """A digest of every repository's repomd.xml: it changes when metadata is republished.

        Raises:
            RepositoryUnavailable: a repository has no readable repomd.xml.
        """
        digest = hashlib.sha256(self.release.id.encode())
        for repository in self.release.repositories:
            repomd = repository / "repodata" / "repomd.xml"
            try:
                digest.update(repomd.read_bytes())
            except OSError as error:
                raise RepositoryUnavailable(
                    str(repository), f"no metadata at {repomd} ({error.strerror})"
                ) from error
        return digest.hexdigest()[:24]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        path = self._current_index()
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            yield db

    def _current_index(self) -> Path:
        revision = self.revision()
        path = self.index_dir / f"{self.release.id}-{revision}.sqlite"
        if path.exists():
            return path
        with self._lock:
            if not path.exists():
                self._build(path)
                self._prune(keep=path)
        return path

    def _build(self, path: Path) -> None:
        log.info("indexing the repositories of %s", self.release.id)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dnf-cache-", dir=self.index_dir) as cache:
            base = _load_base(self.release.repositories, Path(cache))
            try:
                fd, scratch = tempfile.mkstemp(suffix=".sqlite.tmp", dir=self.index_dir)
                os.close(fd)
                with closing(sqlite3.connect(scratch)) as db:
                    db.executescript(_SCHEMA)
                    _fill_index(db, base)
                    db.commit()
                # Another process may build the same revision at the same time; both
                # results are identical, and rename makes whichever lands last whole.
                os.replace(scratch, path)
            finally:
                base.close()

    def _prune(self, keep: Path) -> None:
        for old in self.index_dir.glob(f"{self.release.id}-*.sqlite"):
            if old != keep:
                old.unlink(missing_ok=True)


def _fill_index(db: sqlite3.Connection, base: dnf.Base) -> None:
    ids: dict[str, int] = {}

    def package_id(pkg: dnf.package.Package) -> int:
        key = str(pkg)
        if key not in ids:
            cursor = db.execute(
                "INSERT INTO package (name, epoch, version, release, arch) VALUES (?, ?, ?, ?, ?)",
                (pkg.name, pkg.epoch, pkg.version, pkg.release, pkg.arch),
            )
            ids[key] = int(cursor.lastrowid or 0)
        return ids[key]

    available = base.sack.query().available()
    for pkg in available:
        package_id(pkg)
    # Only packages with build-id links need their (large) file lists read.
    for pkg in available.filter(file__glob=_BUILD_ID_GLOBS):
        rows = []
        for file in pkg.files:
            if found := _BINARY_LINK.match(file):
                rows.append((found[1] + found[2], "binary", package_id(pkg)))
            elif found := _DEBUG_LINK.match(file):
                rows.append((found[1] + found[2], "debuginfo", package_id(pkg)))
        db.executemany("INSERT INTO build_id VALUES (?, ?, ?)", rows)


def install_into_root(
    repositories: Sequence[Path], packages: Sequence[str], root: Path, releasever: str
) -> list[Package]:
    """Install ``packages`` (names or NEVRAs) and their dependencies into an empty root.

    Used to bootstrap a release's base image from its local repository.

    Raises:
        RepositoryUnavailable: the metadata cannot be read, or a package cannot be
            found or its dependencies resolved (the reason says which).
    """
    with tempfile.TemporaryDirectory(prefix="dnf-cache-") as cache:
        base = _load_base(repositories, Path(cache), installroot=root, releasever=releasever)
        where = ", ".join(str(r) for r in repositories)
        try:
            for spec in packages:
                try:
                    base.install(spec)
                except dnf.exceptions.MarkingError as error:
                    raise RepositoryUnavailable(where, f"it has no package {spec!r}") from error
            try:
                base.resolve()
            except dnf.exceptions.DepsolveError as error:
                raise RepositoryUnavailable(
                    where, f"dependencies do not resolve ({error})"
                ) from error
            installed = [
                Package(p.name, p.epoch, p.version, p.release, p.arch)
                for p in base.transaction.install_set
            ]
            base.download_packages(base.transaction.install_set)
            base.do_transaction()
            return sorted(installed)
        finally:
            base.close()


def _load_base(
    repositories: Sequence[Path],
    cache: Path,
    installroot: Path | None = None,
    releasever: str | None = None,
) -> dnf.Base:
    conf = dnf.conf.Conf()
    conf.cachedir = str(cache)
    # Nothing from the host's dnf configuration may leak in: only our repositories.
    conf.reposdir = []
    conf.gpgcheck = False
    conf.install_weak_deps = False
    conf.assumeyes = True
    if installroot is not None:
        conf.installroot = str(installroot)
        conf.persistdir = str(installroot / "var/lib/dnf")
        conf.logdir = str(cache)
    if releasever is not None:
        conf.releasever = releasever
    base = dnf.Base(conf)
    try:
        for number, repository in enumerate(repositories):
            if not (repository / "repodata" / "repomd.xml").is_file():
                raise RepositoryUnavailable(str(repository), "it has no repodata/repomd.xml")
            repo = base.repos.add_new_repo(
                f"retracer-{number}", conf, baseurl=[repository.absolute().as_uri()]
            )
            repo.metadata_expire = 0
        base.fill_sack(load_system_repo=installroot is not None, load_available_repos=True)
    except dnf.exceptions.RepoError as error:
        base.close()
        where = ", ".join(str(r) for r in repositories)
        raise RepositoryUnavailable(where, str(error).rstrip(".")) from error
    except RepositoryUnavailable:
        base.close()
        raise
    return base
