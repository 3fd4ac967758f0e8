"""The store of unpacked packages: each exact NEVRA unpacked once, shared by every retrace.

Layout under the store's folder::

    packages/<nevra>/        the package's files as rpm lays them out under /; read-only
    staging/<nevra>.<rand>/  an unpack in progress, renamed into packages/ once whole
    locks/<nevra>.lock       flock: exclusive while unpacking or evicting, shared in use
    index.sqlite             StoreIndex: each NEVRA's size and last use

A package is unpacked with python3-rpm (:func:`retracer.sync.payload.unpack_payload`),
so no scriptlet runs. Only a whole tree is ever renamed into ``packages/``, so an
unpack killed half-way leaves a staging folder that nothing reads. A retrace holds a
shared lock on each package it uses until gdb has finished: two workers needing the
same missing NEVRA unpack it once (the second waits for the first's exclusive lock),
and eviction, which takes the exclusive lock without waiting, skips a package in use.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from retracer.sync.model import Package
from retracer.sync.payload import unpack_payload

log = logging.getLogger(__name__)

# Checks a package file before it is unpacked (its signature); raises to refuse it.
PackageCheck = Callable[[Path, str], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS package (
    nevra TEXT PRIMARY KEY, size INTEGER NOT NULL, last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS last_set (
    program TEXT PRIMARY KEY, release TEXT NOT NULL, view TEXT NOT NULL, nevras TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class LastSet:
    """The environment a program's last crash needed: its view and its NEVRAs."""

    release_id: str
    view: str
    nevras: tuple[str, ...]


@dataclass(frozen=True)
class StoreUsage:
    packages: int
    bytes: int


class StoreIndex:
    """The store's SQLite file: sizes and last uses of NEVRAs, and the package set each
    program's last crash needed. One connection per instance, shared by its threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False)
        self._lock = threading.Lock()
        # Two workers opening a new store at once: SQLite answers one switch to WAL
        # with "database is locked" at once, without waiting out the timeout, so the
        # set-up is taken in turns.
        with self._lock, open(path.with_name(f"{path.name}.setup-lock"), "a") as setup:
            fcntl.flock(setup, fcntl.LOCK_EX)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def add(self, nevra: str, size: int) -> None:
        self._write("INSERT OR REPLACE INTO package VALUES (?, ?, ?)", (nevra, size, time.time()))

    def touch(self, nevras: list[str]) -> None:
        now = time.time()
        with self._lock:
            self._db.executemany(
                "UPDATE package SET last_used = ? WHERE nevra = ?", [(now, n) for n in nevras]
            )
            self._db.commit()

    def remove(self, nevra: str) -> None:
        self._write("DELETE FROM package WHERE nevra = ?", (nevra,))

    def oldest_first(self) -> list[tuple[str, int]]:
        with self._lock:
            rows = self._db.execute("SELECT nevra, size FROM package ORDER BY last_used").fetchall()
        return [(str(n), int(s)) for n, s in rows]

    def usage(self) -> StoreUsage:
        with self._lock:
            count, total = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM package"
            ).fetchone()
        return StoreUsage(int(count), int(total))

    def remember_set(self, program: str, last: LastSet) -> None:
        self._write(
            "INSERT OR REPLACE INTO last_set VALUES (?, ?, ?, ?)",
            (program, last.release_id, last.view, "\n".join(last.nevras)),
        )

    def last_set(self, program: str) -> LastSet | None:
        with self._lock:
            row = self._db.execute(
                "SELECT release, view, nevras FROM last_set WHERE program = ?", (program,)
            ).fetchone()
        return LastSet(str(row[0]), str(row[1]), tuple(str(row[2]).split("\n"))) if row else None

    def _write(self, statement: str, parameters: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute(statement, parameters)
            self._db.commit()


class Holding:
    """Packages a retrace uses: present in the store until :meth:`close`."""

    def __init__(self, trees: dict[str, Path], unpacked: tuple[Package, ...]) -> None:
        # NEVRA -> its tree in the store.
        self.trees = trees
        # Those this holding had to unpack (empty when all were in the store).
        self.unpacked = unpacked
        self._handles: list[IO[str]] = []

    def close(self) -> None:
        for handle in self._handles:
            handle.close()  # releases its shared lock
        self._handles.clear()

    def __enter__(self) -> Holding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PackageStore:
    """Unpacked packages under ``root``, capped at ``max_bytes`` (least recently used go)."""

    def __init__(self, root: Path, max_bytes: int, workers: int = 4) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.workers = workers
        self.packages_dir = root / "packages"
        self._staging = root / "staging"
        self._locks = root / "locks"
        for folder in (self.packages_dir, self._staging, self._locks):
            folder.mkdir(parents=True, exist_ok=True)
        self.index = StoreIndex(root / "index.sqlite")

    def close(self) -> None:
        self.index.close()

    def tree(self, nevra: str) -> Path:
        return self.packages_dir / nevra

    def hold(self, files: Mapping[Package, Path], check: PackageCheck | None = None) -> Holding:
        """Every package of ``files`` (NEVRA -> its RPM file) unpacked and held, the
        missing ones unpacked in parallel, each once across all workers.

        Raises:
            PayloadUnreadable: a package file cannot be unpacked.
            Whatever ``check`` raises for a refused package.
        """
        holding = Holding({}, ())
        unpacked: list[Package] = []
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="unpack") as pool:
                results = pool.map(
                    lambda item: self._acquire(item[0], item[1], check), files.items()
                )
                for package, (handle, fresh) in zip(files, results, strict=True):
                    holding._handles.append(handle)
                    holding.trees[package.nevra] = self.tree(package.nevra)
                    if fresh:
                        unpacked.append(package)
        except BaseException:
            holding.close()
            raise
        holding.unpacked = tuple(sorted(unpacked))
        self.index.touch([p.nevra for p in files])
        return holding

    def hold_present(self, nevras: tuple[str, ...]) -> Holding | None:
        """The packages held if every one is already unpacked; None otherwise."""
        holding = Holding({}, ())
        for nevra in nevras:
            handle = self._lock_file(nevra)
            fcntl.flock(handle, fcntl.LOCK_SH)
            holding._handles.append(handle)
            if not self.tree(nevra).is_dir():
                holding.close()
                return None
            holding.trees[nevra] = self.tree(nevra)
        self.index.touch(list(nevras))
        return holding

    def evict(self) -> list[str]:
        """Remove least recently used packages until the store fits its cap; a package
        in use (or being unpacked) is skipped. Returns the NEVRAs removed."""
        rows = self.index.oldest_first()
        total = sum(size for _, size in rows)
        removed = []
        for nevra, size in rows:
            if total <= self.max_bytes:
                break
            with self._lock_file_named(nevra) as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("package %s is in use; not evicted", nevra)
                    continue
                tree = self.packages_dir / nevra
                if tree.is_dir():
                    # Out of packages/ first, in one step: no reader sees half a tree.
                    doomed = self._staging / f"{nevra}.evicted-{secrets.token_hex(4)}"
                    os.rename(tree, doomed)
                    _remove_tree(doomed)
                self.index.remove(nevra)
            total -= size
            removed.append(nevra)
        for nevra in removed:
            log.info("evicted package %s", nevra)
        return removed

    def usage(self) -> StoreUsage:
        return self.index.usage()

    def clean_up(self) -> list[str]:
        """Remove what killed unpacks left in staging/; returns the folders removed."""
        removed = []
        for entry in self._staging.iterdir():
            nevra = entry.name.split(".evicted-")[0].rsplit(".", 1)[0]
            with self._lock_file_named(nevra) as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its unpack is still going
                _remove_tree(entry)
                removed.append(entry.name)
        return removed

    def _acquire(
        self, package: Package, rpm_file: Path, check: PackageCheck | None
    ) -> tuple[IO[str], bool]:
        """The package's lock file, held shared with the tree present; and whether this
        call unpacked it."""
        handle = self._lock_file(package.nevra)
        fresh = False
        try:
            while True:
                fcntl.flock(handle, fcntl.LOCK_SH)
                if self.tree(package.nevra).is_dir():
                    return handle, fresh
                fcntl.flock(handle, fcntl.LOCK_EX)  # not atomic: check again under it
                if not self.tree(package.nevra).is_dir():
                    self._unpack(package, rpm_file, check)
                    fresh = True
        except BaseException:
            handle.close()
            raise

    def _unpack(self, package: Package, rpm_file: Path, check: PackageCheck | None) -> None:
        started = time.monotonic()
        if check is not None:
            check(rpm_file, rpm_file.name)
        staging = self._staging / f"{package.nevra}.{secrets.token_hex(4)}"
        staging.mkdir(mode=0o755)
        try:
            written = unpack_payload(rpm_file, staging)
            os.rename(staging, self.tree(package.nevra))
        except BaseException:
            _remove_tree(staging)
            raise
        self.index.add(package.nevra, written.bytes)
        log.info(
            "unpacked %s (%d files, %.1f MiB) in %.2f s",
            package.nevra,
            written.files,
            written.bytes / (1 << 20),
            time.monotonic() - started,
        )

    def _lock_file(self, nevra: str) -> IO[str]:
        return open(self._locks / f"{nevra}.lock", "a")

    @contextmanager
    def _lock_file_named(self, nevra: str) -> Iterator[IO[str]]:
        with closing(self._lock_file(nevra)) as handle:
            yield handle


def _remove_tree(path: Path) -> None:
    # Folders are 0755 and owned by the store's user, so read-only files go too.
    shutil.rmtree(path, ignore_errors=True)
