"""Read an upstream repository's package list: the only user of librepo.

librepo fetches ``repomd.xml`` and ``primary`` (trying each baseurl in turn, or the
mirrors of a mirrorlist or metalink, and checking primary against repomd);
createrepo_c parses primary into ``UpstreamPackage`` values.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import createrepo_c
import librepo

from retracer.sync.errors import MirrorFailed
from retracer.sync.model import Package
from retracer.sync.settings import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamPackage:
    """One package file an upstream offers, with what its metadata promises about it."""

    package: Package
    location_href: str
    # Set when the metadata points the file outside the mirror (xml:base).
    location_base: str | None
    checksum_type: str
    checksum: str
    size: int

    @property
    def file_name(self) -> str:
        return self.location_href.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class MirrorFailure:
    """A mirror that did not answer, and what went wrong; the sync went on without it."""

    upstream: str
    url: str
    reason: str


@dataclass(frozen=True)
class UpstreamIndex:
    """What one upstream offers now, and the mirrors to download it from, best first."""

    upstream: str
    mirrors: tuple[str, ...]
    packages: tuple[UpstreamPackage, ...]
    mirror_failures: tuple[MirrorFailure, ...]


def fetch_index(upstream: Upstream, work_dir: Path, timeout_seconds: float) -> UpstreamIndex:
    """Download and parse the upstream's current metadata.

    ``work_dir`` holds the downloaded metadata only while this runs.

    Raises:
        MirrorFailed: no mirror delivered usable metadata.
    """
    failures: list[MirrorFailure] = []
    with tempfile.TemporaryDirectory(prefix=f"upstream-{upstream.name}-", dir=work_dir) as dest:
        handle = _handle(upstream, dest, timeout_seconds)

        def note_failure(_data: object, message: str, url: str, _what: str) -> None:
            failures.append(MirrorFailure(upstream.name, _mirror_of(url, upstream), message))

        handle.hmfcb = note_failure
        try:
            result = handle.perform()
        except librepo.LibrepoException as error:
            raise MirrorFailed(upstream.name, _librepo_reason(error, failures)) from error
        repo = result.getinfo(librepo.LRR_YUM_REPO)
        packages = _parse_primary(repo["primary"])
        # Metalinks and mirrorlists name their mirrors only once librepo has read them.
        candidates = list(upstream.baseurl) or list(handle.mirrors or ())
    used = repo["url"]
    mirrors = (used, *(m for m in candidates if m.rstrip("/") != used.rstrip("/")))
    log.debug("upstream %s: %d packages from %s", upstream.name, len(packages), used)
    return UpstreamIndex(upstream.name, mirrors, packages, _first_per_url(failures))


def _handle(upstream: Upstream, dest: str, timeout_seconds: float) -> librepo.Handle:
    handle = librepo.Handle()
    handle.repotype = librepo.YUMREPO
    handle.destdir = dest
    handle.yumdlist = ["primary"]
    handle.checksum = True
    handle.interruptible = True
    handle.connecttimeout = max(1, int(timeout_seconds))
    handle.lowspeedtime = max(1, int(timeout_seconds))
    if upstream.baseurl:
        handle.urls = list(upstream.baseurl)
    elif upstream.metalink:
        handle.metalinkurl = upstream.metalink
    else:
        handle.mirrorlisturl = upstream.mirrorlist
    return handle


def _parse_primary(path: str) -> tuple[UpstreamPackage, ...]:
    packages: list[UpstreamPackage] = []

    def add(pkg: createrepo_c.Package) -> None:
        packages.append(
            UpstreamPackage(
                package=Package(pkg.name, int(pkg.epoch or 0), pkg.version, pkg.release, pkg.arch),
                location_href=pkg.location_href,
                location_base=pkg.location_base or None,
                checksum_type=pkg.checksum_type,
                checksum=pkg.pkgId,
                size=int(pkg.size_package),
            )
        )

    createrepo_c.xml_parse_primary(path, pkgcb=add, do_files=False)
    return tuple(packages)


def _mirror_of(url: str, upstream: Upstream) -> str:
    """The configured baseurl a failed file URL belongs to, else the URL itself."""
    for base in upstream.baseurl:
        if url.startswith(base.rstrip("/")):
            return base
    return url.split("/repodata/", 1)[0] + "/" if "/repodata/" in url else url


def _first_per_url(failures: list[MirrorFailure]) -> tuple[MirrorFailure, ...]:
    seen: dict[str, MirrorFailure] = {}
    for failure in failures:
        seen.setdefault(failure.url, failure)
    return tuple(seen.values())


def _librepo_reason(error: librepo.LibrepoException, failures: list[MirrorFailure]) -> str:
    # librepo's own message says "all mirrors were tried"; the last mirror's says why.
    message = str(error.args[1]) if len(error.args) > 1 else str(error)
    if failures:
        return f"{message.rstrip('.')} (last: {failures[-1].reason.rstrip('.')})"
    return message.rstrip(".")
