"""Publish the local repository's metadata: incrementally, and atomically for readers.

Packages already listed keep their metadata entries, so only new files are read.
New metadata files get unique (checksum-prefixed) names and are moved into
``repodata/`` before ``repomd.xml`` is replaced in one rename: a reader sees either
the old repomd and its files or the new ones. Files of the generation before the
current one are kept, so a reader that has just read the old repomd still finds what
it names; older ones are pruned. Only the xml metadata dnf reads is written.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import createrepo_c

from retracer.sync.durable import fsync_path, replace_durably
from retracer.sync.errors import PublishFailed

log = logging.getLogger(__name__)

REPODATA = "repodata"
REPOMD = "repomd.xml"
_WRITERS = {
    "primary": createrepo_c.PrimaryXmlFile,
    "filelists": createrepo_c.FilelistsXmlFile,
    "other": createrepo_c.OtherXmlFile,
}


@dataclass(frozen=True, order=True)
class HeldFile:
    """A package file in the repository, as metadata records it."""

    location_href: str
    size: int
    mtime: int


def held_files(repository: Path) -> dict[str, HeldFile]:
    """Every ``*.rpm`` under the repository, by location; hidden folders are work areas."""
    found: dict[str, HeldFile] = {}
    for folder, subfolders, files in os.walk(repository):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if name.endswith(".rpm") and not name.startswith("."):
                path = Path(folder, name)
                stat = path.stat()
                href = path.relative_to(repository).as_posix()
                found[href] = HeldFile(href, stat.st_size, int(stat.st_mtime))
    return found


def listed_files(repository: Path) -> dict[str, HeldFile] | None:
    """The packages the published metadata lists, or None when there is none to read."""
    primary = _record_path(repository, "primary")
    if primary is None:
        return None
    listed: dict[str, HeldFile] = {}

    def add(pkg: createrepo_c.Package) -> None:
        listed[pkg.location_href] = HeldFile(
            pkg.location_href, int(pkg.size_package), int(pkg.time_file)
        )

    try:
        createrepo_c.xml_parse_primary(str(primary), pkgcb=add, do_files=False)
    except (createrepo_c.CreaterepoCError, OSError) as error:
        log.warning("cannot read %s, rebuilding the metadata: %s", primary, error)
        return None
    return listed


def publish(repository: Path, work_dir: Path) -> bool:
    """Bring ``repodata/`` in line with the package files; True when it changed.

    Raises:
        PublishFailed: the metadata cannot be written.
    """
    held = held_files(repository)
    if listed_files(repository) == held:
        return False
    started = time.monotonic()
    packages = _packages(repository, held)
    try:
        with tempfile.TemporaryDirectory(prefix="repodata-", dir=work_dir) as staging:
            repomd = write_metadata(Path(staging), packages)
            _swap(repository / REPODATA, Path(staging), repomd)
    except (createrepo_c.CreaterepoCError, OSError) as error:
        raise PublishFailed(str(repository), str(error).rstrip(".")) from error
    log.info(
        "published metadata of %d packages in %s (%.1f s)",
        len(packages),
        repository,
        time.monotonic() - started,
    )
    return True


def _packages(repository: Path, held: dict[str, HeldFile]) -> list[createrepo_c.Package]:
    previous = _previous_packages(repository)
    packages = []
    for href in sorted(held):
        file = held[href]
        old = previous.get(href)
        if old is not None and (int(old.size_package), int(old.time_file)) == (
            file.size,
            file.mtime,
        ):
            packages.append(old)
            continue
        try:
            packages.append(
                createrepo_c.package_from_rpm(
                    str(repository / href), createrepo_c.SHA256, location_href=href
                )
            )
        except createrepo_c.CreaterepoCError as error:
            log.warning("leaving %s out of the metadata: %s", href, error)
    return packages


def _previous_packages(repository: Path) -> dict[str, createrepo_c.Package]:
    if _record_path(repository, "primary") is None:
        return {}
    metadata = createrepo_c.Metadata(key=createrepo_c.HT_KEY_HASH)
    try:
        metadata.locate_and_load_xml(str(repository))
    except (createrepo_c.CreaterepoCError, OSError) as error:
        log.warning("cannot reuse the metadata of %s, reading every package: %s", repository, error)
        return {}
    # Metadata cannot be iterated (its __iter__ is broken), so go through its keys.
    packages = (metadata.get(key) for key in metadata.keys())  # noqa: SIM118
    return {pkg.location_href: pkg for pkg in packages}


def write_metadata(staging: Path, packages: list[createrepo_c.Package]) -> createrepo_c.Repomd:
    """Write the xml metadata of ``packages`` and its repomd.xml into ``staging``."""
    paths = {kind: staging / f"{kind}.xml.gz" for kind in _WRITERS}
    writers = {
        kind: cls(str(paths[kind]), createrepo_c.GZ_COMPRESSION) for kind, cls in _WRITERS.items()
    }
    for writer in writers.values():
        writer.set_num_of_pkgs(len(packages))
    for pkg in packages:
        for writer in writers.values():
            writer.add_pkg(pkg)
    for writer in writers.values():
        writer.close()
    repomd = createrepo_c.Repomd()
    repomd.set_revision(str(int(time.time())))
    for kind, path in paths.items():
        record = createrepo_c.RepomdRecord(kind, str(path))
        record.fill(createrepo_c.SHA256)
        record.rename_file()  # checksum-prefixed, so old and new names never clash
        repomd.set_record(record)
    repomd.sort_records()
    (staging / REPOMD).write_text(repomd.xml_dump())
    return repomd


def _swap(repodata: Path, staging: Path, repomd: createrepo_c.Repomd) -> None:
    repodata.mkdir(exist_ok=True)
    previous = _referenced(repodata / REPOMD)
    current = {Path(record.location_href).name for record in repomd.records}
    for name in current:
        fsync_path(staging / name)
        os.replace(staging / name, repodata / name)
    replace_durably(staging / REPOMD, repodata / REPOMD)  # the moment readers switch
    for path in repodata.iterdir():
        if path.name not in current | previous | {REPOMD}:
            path.unlink(missing_ok=True)


def _referenced(repomd: Path) -> set[str]:
    if not repomd.exists():
        return set()
    try:
        records = createrepo_c.Repomd(str(repomd)).records
    except (createrepo_c.CreaterepoCError, OSError):
        return set()
    return {Path(record.location_href).name for record in records}


@dataclass(frozen=True)
class MetadataFile:
    """One metadata file of the published generation, as repomd.xml records it."""

    path: Path
    checksum: str


def metadata_files(repository: Path) -> dict[str, MetadataFile]:
    """The files ``repodata/repomd.xml`` names, by type (``primary``, ``filelists``...).

    Raises:
        OSError, createrepo_c.CreaterepoCError: repomd.xml is missing or malformed.
    """
    records = createrepo_c.Repomd(str(repository / REPODATA / REPOMD)).records
    return {
        record.type: MetadataFile(repository / record.location_href, record.checksum)
        for record in records
    }


def _record_path(repository: Path, kind: str) -> Path | None:
    if not (repository / REPODATA / REPOMD).exists():
        return None
    try:
        found = metadata_files(repository).get(kind)
    except (createrepo_c.CreaterepoCError, OSError):
        return None
    return found.path if found else None
