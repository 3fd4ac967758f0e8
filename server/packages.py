"""Answers /checkpackage from the releases' repository indexes.

The indexes are SQLite files the analyzer also uses; a lookup is one indexed query,
but the first one after a sync may rebuild the index, so callers run it off the
event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from retracer.sync.errors import UnknownRelease
from retracer.sync.index import RepositoryIndex
from retracer.sync.model import Package
from retracer.sync.settings import ReleaseSettings


class PackageCatalog:
    """Which packages this server's releases hold, by NVR and architecture."""

    def __init__(self, releases: Sequence[ReleaseSettings], index_dir: Path) -> None:
        self._indexes = {release.id: RepositoryIndex(release, index_dir) for release in releases}

    def find(self, nvr: str, arch: str, release_id: str | None = None) -> Package | None:
        """The package in the named release, or in any release when none is named.

        Raises:
            UnknownRelease: ``release_id`` names no release of this server.
            RepositoryUnavailable: a repository's metadata cannot be read.
        """
        if release_id:
            if release_id not in self._indexes:
                raise UnknownRelease(release_id, self._indexes)
            indexes = [self._indexes[release_id]]
        else:
            indexes = list(self._indexes.values())
        for index in indexes:
            package = index.find(nvr, arch)
            if package is not None:
                return package
        return None
