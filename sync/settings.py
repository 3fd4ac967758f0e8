"""Settings of releases, their local repositories and their upstream mirrors.

These dataclasses are the schema of the ``releases`` and ``sync`` sections of the
configuration file; their defaults are the documented defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retracer.sync.model import Release, package_arches


@dataclass(frozen=True)
class Upstream:
    """One upstream repository, e.g. ``updates`` or ``updates-debuginfo``.

    Give exactly one of ``baseurl`` (tried in order), ``mirrorlist`` or ``metalink``.
    """

    name: str
    baseurl: tuple[str, ...] = ()
    mirrorlist: str | None = None
    metalink: str | None = None
    # ASCII-armoured public keys (paths or file:// URLs); with any, signatures are checked.
    gpgkey: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        given = [bool(self.baseurl), bool(self.mirrorlist), bool(self.metalink)]
        if sum(given) != 1:
            raise ValueError("give exactly one of baseurl, mirrorlist or metalink")


@dataclass(frozen=True)
class BootstrapBase:
    """Build the base image by installing ``packages`` from the local repository."""

    packages: tuple[str, ...] = ("bash", "gdb", "dnf", "elfutils")


@dataclass(frozen=True)
class ReleaseSettings:
    """One release this server retraces, and how to recognise its crashes."""

    id: str
    # The first line of /etc/system-release, as ABRT uploads it in `os_release`.
    os_release: str
    # os-release ID and VERSION_ID, for crashes that carry an os-release instead.
    os_id: str = ""
    version_id: str = ""
    # Local all-versions repositories (binary and debuginfo), each with repodata/.
    repositories: tuple[Path, ...] = ()
    # Exactly one of these: a registry image to start FROM, or a bootstrap from the repository.
    base_image: str | None = None
    bootstrap: BootstrapBase | None = None
    upstreams: tuple[Upstream, ...] = ()
    # An upstream without ``gpgkey`` is refused unless this is true: its packages
    # (and so the environments gdb runs in) would then be trusted unchecked.
    insecure: bool = False

    def __post_init__(self) -> None:
        release = Release.parse(self.id)
        if release.arch != "i386" and package_arches(release.arch) == package_arches("i386"):
            # ABRT folds i686 and i586 into i386, so no client would ever ask for this id.
            abrt_id = f"{release.distro}-{release.version}-i386"
            raise ValueError(f"ABRT clients name this release {abrt_id!r}; use that id")
        if not self.repositories:
            raise ValueError("a release needs at least one local repository")
        if (self.base_image is None) == (self.bootstrap is None):
            raise ValueError("give exactly one of base_image or bootstrap")
        unsigned = self.unsigned_upstreams
        if unsigned and not self.insecure:
            raise ValueError(
                f"upstream {unsigned[0]!r} has no gpgkey; give its signing key, or set"
                " insecure: true on the release to accept unsigned packages"
            )

    @property
    def unsigned_upstreams(self) -> tuple[str, ...]:
        """Names of upstreams whose packages are not signature-checked."""
        return tuple(u.name for u in self.upstreams if not u.gpgkey)

    @property
    def signing_keys(self) -> tuple[str, ...]:
        """Every key of the release's upstreams, once each: packages installed from the
        local repository are checked against these (no keys: no check)."""
        return tuple(dict.fromkeys(key for u in self.upstreams for key in u.gpgkey))

    @property
    def parsed_id(self) -> Release:
        """The id's parts: distribution, version and architecture."""
        return Release.parse(self.id)


@dataclass(frozen=True)
class SyncSettings:
    """How ``retracer sync`` downloads.

    Every upstream of a release is mirrored into the release's first repository.
    """

    # Package files fetched at once from one upstream.
    parallel_downloads: int = 4
    # How long to wait for a connection, or for the next bytes of a response.
    timeout_seconds: float = 60.0
