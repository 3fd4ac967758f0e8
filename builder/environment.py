"""Container images holding a release's base system, and one per package set.

A release's *base image* (gdb, dnf, elfutils and the system) is built once and
rebuilt only when its recipe changes. An *environment image* adds the exact
crash-time NEVRAs to it; its name is the digest of the package set, so a later
crash needing the same packages starts at once. Environments beyond the size cap
are evicted least recently used first.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from retracer.builder.errors import EnvironmentFailed
from retracer.builder.sandbox import BindMount, RunSpec, Sandbox
from retracer.builder.settings import BuilderSettings
from retracer.sync.metadata import install_into_root
from retracer.sync.model import PackageSet
from retracer.sync.settings import ReleaseSettings

log = logging.getLogger(__name__)

# Bump when the way base images are made changes, so old ones are rebuilt.
_BASE_RECIPE = "1"
# A FROM image only needs these added to retrace; a bootstrap lists its own.
_RETRACE_TOOLS = ("gdb", "elfutils")
REPOSITORY_MOUNT = "/srv/retracer/repo"
DNF_CACHE_MOUNT = "/var/cache/retracer-dnf"
KEYS_MOUNT = "/srv/retracer/keys"


@dataclass(frozen=True)
class Environment:
    image: str
    cached: bool
    # NEVRAs dnf installed to make it (empty when it came from the cache).
    installed_by_dnf: tuple[str, ...] = ()


@dataclass(frozen=True)
class CacheUsage:
    images: int
    bytes: int


def cache_usage(images_dir: Path) -> CacheUsage:
    """What the environment cache holds, read from its index (no podman needed)."""
    index = images_dir / "environments.sqlite"
    if not index.exists():
        return CacheUsage(0, 0)
    with closing(sqlite3.connect(index)) as db:
        count, total = db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM environment"
        ).fetchone()
    return CacheUsage(int(count), int(total))


class Environments:
    def __init__(self, sandbox: Sandbox, settings: BuilderSettings, state_dir: Path) -> None:
        self.sandbox = sandbox
        self.settings = settings
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._index_path = state_dir / "environments.sqlite"
        with closing(sqlite3.connect(self._index_path)) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS environment ("
                " image TEXT PRIMARY KEY, release TEXT NOT NULL,"
                " size INTEGER NOT NULL, last_used REAL NOT NULL)"
            )
            # The environment the last crash of each program needed (see last_used_for).
            db.execute(
                "CREATE TABLE IF NOT EXISTS last_environment ("
                " program TEXT PRIMARY KEY, image TEXT NOT NULL)"
            )
            db.commit()

    def base_image(self, release: ReleaseSettings) -> str:
        """The release's base image, built first if its recipe is new.

        Raises:
            EnvironmentFailed, RepositoryUnavailable, Sandbox errors.
        """
        image = self._base_reference(release)
        if self.sandbox.image_exists(image):
            return image
        with self._locked(f"base-{release.id}"):
            if self.sandbox.image_exists(image):
                return image
            started = time.monotonic()
            if release.bootstrap is not None:
                self._bootstrap(release, release.bootstrap.packages, image)
            else:
                assert release.base_image is not None  # validated by ReleaseSettings
                if not self.sandbox.image_exists(release.base_image):
                    self.sandbox.pull(release.base_image)
                self._install(release, release.base_image, _RETRACE_TOOLS, image)
            log.info("built base image %s in %.1f s", image, time.monotonic() - started)
        return image

    def image_name(self, package_set: PackageSet) -> str:
        """The name of the image holding exactly ``package_set`` (built or not)."""
        return f"localhost/{self.settings.name_prefix}-env:{package_set.digest[:48]}"

    def for_packages(self, package_set: PackageSet, release: ReleaseSettings) -> Environment:
        """The image with exactly ``package_set`` installed on the base, cached by digest."""
        image = self.image_name(package_set)
        if self._cached(image):
            return Environment(image, cached=True)
        with self._locked(package_set.digest):
            if self._cached(image):
                return Environment(image, cached=True)
            base = self.base_image(release)
            nevras = tuple(p.nevra for p in package_set.packages)
            self._install(release, base, nevras, image)
            size = max(0, self.sandbox.image_size(image) - self.sandbox.image_size(base))
            self._remember(image, release.id, size)
            self.evict(keep=image)
        return Environment(image, cached=False, installed_by_dnf=nevras)

    def remember_for(self, program: str, image: str) -> None:
        """Note that the last crash of ``program`` needed the environment ``image``."""
        with closing(sqlite3.connect(self._index_path)) as db:
            db.execute("INSERT OR REPLACE INTO last_environment VALUES (?, ?)", (program, image))
            db.commit()

    def last_used_for(self, program: str) -> str | None:
        """The environment the last crash of ``program`` needed, if it is still cached.

        Crashes of one build of a program usually need the same packages, so it is a
        good guess before the core has been inspected.
        """
        with closing(sqlite3.connect(self._index_path)) as db:
            row = db.execute(
                "SELECT image FROM last_environment WHERE program = ?", (program,)
            ).fetchone()
        return row[0] if row and self.sandbox.image_exists(row[0]) else None

    def evict(self, keep: str | None = None, now: float | None = None) -> list[str]:
        """Remove least recently used environments until the cache fits its cap.

        An environment in use is kept: one a container runs from (podman refuses to
        remove it), and one picked within the last gdb timeout, whose container may
        not exist yet.
        """
        cap = self.settings.image_cache_max_mib * 1024 * 1024
        recent = (time.time() if now is None else now) - self.settings.limits.gdb_timeout_seconds
        removed = []
        with closing(sqlite3.connect(self._index_path)) as db:
            rows = db.execute(
                "SELECT image, size, last_used FROM environment ORDER BY last_used"
            ).fetchall()
            total = sum(size for _, size, _ in rows)
            for image, size, last_used in rows:
                if total <= cap:
                    break
                if image == keep or last_used >= recent:
                    continue
                if not self.sandbox.remove_unused_image(image):
                    log.info("environment %s is in use; not evicted", image)
                    continue
                db.execute("DELETE FROM environment WHERE image = ?", (image,))
                db.commit()
                total -= size
                removed.append(image)
        for image in removed:
            log.info("evicted environment %s", image)
        return removed

    def _cached(self, image: str) -> bool:
        if not self.sandbox.image_exists(image):
            return False
        with closing(sqlite3.connect(self._index_path)) as db:
            db.execute("UPDATE environment SET last_used = ? WHERE image = ?", (time.time(), image))
            db.commit()
        return True

    def _remember(self, image: str, release_id: str, size: int) -> None:
        with closing(sqlite3.connect(self._index_path)) as db:
            db.execute(
                "INSERT OR REPLACE INTO environment VALUES (?, ?, ?, ?)",
                (image, release_id, size, time.time()),
            )
            db.commit()

    def _base_reference(self, release: ReleaseSettings) -> str:
        recipe = [_BASE_RECIPE, release.id, release.base_image or ""]
        if release.bootstrap is not None:
            recipe += sorted(release.bootstrap.packages)
        if release.signing_keys:  # built with signature checks: not the same image
            recipe += ["signed by", *sorted(release.signing_keys)]
        key = hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:16]
        return f"localhost/{self.settings.name_prefix}-base:{release.id}-{key}"

    def _bootstrap(self, release: ReleaseSettings, packages: Sequence[str], image: str) -> None:
        scratch = self.state_dir / "tmp"
        scratch.mkdir(exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="bootstrap-", dir=scratch))
        try:
            install_into_root(
                release.repositories,
                packages,
                root,
                release.parsed_id.version,
                arch=release.parsed_id.package_arch,
                keys=release.signing_keys,
            )
            self.sandbox.import_rootfs(root, image)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _install(
        self, release: ReleaseSettings, image: str, packages: Sequence[str], commit_to: str
    ) -> None:
        """Install ``packages`` with the image's own dnf from the read-only repositories."""
        # dnf keeps its parsed metadata in a per-release cache outside the image: the
        # next install skips re-reading the repository, and no image carries the cache.
        cache = self.state_dir / "dnf-cache" / release.id
        cache.mkdir(parents=True, exist_ok=True)
        mounts = [
            BindMount(path, f"{REPOSITORY_MOUNT}/{number}")
            for number, path in enumerate(release.repositories)
        ]
        # With the release's signing keys (read-only in the container), dnf checks every
        # package's signature; a release with no key has only local, trusted packages.
        keys = [
            BindMount(_key_path(key), f"{KEYS_MOUNT}/{number}.asc")
            for number, key in enumerate(release.signing_keys)
        ]
        gpg = ["--setopt=gpgcheck=True"] if keys else ["--nogpgcheck"]
        dnf = [
            "dnf", "install", "--assumeyes", *gpg, "--quiet",
            "--setopt=reposdir=/dev/null", "--setopt=install_weak_deps=False",
            f"--setopt=cachedir={DNF_CACHE_MOUNT}", f"--releasever={release.parsed_id.version}",
            # An i386 release's image runs on an x86_64 kernel, where dnf would guess x86_64.
            f"--forcearch={release.parsed_id.package_arch}", "--disablerepo=*",
        ]  # fmt: skip
        for mount in mounts:
            name = f"retracer{Path(mount.target).name}"
            dnf += [f"--repofrompath={name},{mount.target}", f"--enablerepo={name}"]
            if keys:
                uris = " ".join(f"file://{key.target}" for key in keys)
                dnf += [f"--setopt={name}.gpgcheck=True", f"--setopt={name}.gpgkey={uris}"]
        mounts += keys
        # dnf's pid-file lock cannot see across containers, so one install per release
        # at a time keeps the shared cache consistent.
        with self._locked(f"dnf-cache-{release.id}"):
            output = self.sandbox.run(
                RunSpec(
                    image=image,
                    command=[*dnf, *packages],
                    step="dnf install",
                    timeout=self.settings.limits.install_timeout_seconds,
                    mounts=[*mounts, BindMount(cache, DNF_CACHE_MOUNT, read_only=False)],
                    as_root=True,
                    commit_to=commit_to,
                )
            )
        if output.exit_code != 0:
            lines = [ln.strip() for ln in (output.stderr + output.stdout).splitlines()]
            errors = [ln for ln in lines if ln.startswith(("Error", "No match", "Problem"))]
            why = (errors or [ln for ln in lines if ln] or [f"exit code {output.exit_code}"])[0]
            if output.oom_killed:
                why = f"dnf ran out of its {self.settings.limits.memory_mib} MiB of memory"
            raise EnvironmentFailed(why.rstrip("."))

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Serialise builds of one image across worker processes."""
        locks = self.state_dir / "locks"
        locks.mkdir(exist_ok=True)
        with open(locks / f"{name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _key_path(key: str) -> Path:
    """A configured key (a path or a file:// URL) as an absolute path to bind-mount."""
    return Path(urlsplit(key).path if key.startswith("file://") else key).absolute()
