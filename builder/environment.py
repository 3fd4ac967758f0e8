"""A crash's environment: the release's base image plus the crash's packages, read-only.

A release's *base image* (gdb, elfutils and the system) is built once and rebuilt
only when its recipe or repositories change. The crash's exact NEVRAs come from the
:class:`~retracer.builder.packages.PackageStore` (each unpacked once, shared by all
retraces) and reach gdb without any install or image commit:

- the store's ``packages/`` folder is bind-mounted read-only at ``/retrace/store``;
- a *view* of the crash's package set, a tree of symlinks into it, appears
  read-only at ``/retrace/root``, and gdb's sysroot and debug-file-directory point
  there (see ``images/gdb_report.py``). Every view is mounted at ``/retrace/views``,
  and ``/retrace/root`` holds links to one view's top-level entries, made once the
  view is known: so gdb's container can start before it is (see
  :class:`~retracer.builder.early.LateRoot`).

A view costs one symlink per file, not one copy per byte, so a crash whose set
differs from an earlier one by a few packages pays for those few unpacks only.
Views are kept by the digest of their contents, so a repeated crash starts at once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from retracer.builder.errors import EnvironmentFailed
from retracer.builder.packages import Holding, LastSet, PackageStore
from retracer.builder.sandbox import BindMount, RunSpec, Sandbox
from retracer.builder.settings import BuilderSettings
from retracer.sync.bootstrap import install_into_root_in_child
from retracer.sync.elf import build_id
from retracer.sync.index import build_id_link
from retracer.sync.settings import ReleaseSettings

log = logging.getLogger(__name__)

# Bump when the way base images are made changes, so old ones are rebuilt.
_BASE_RECIPE = "2"
# A FROM image only needs these added to retrace; a bootstrap lists its own.
_RETRACE_TOOLS = ("gdb", "elfutils")
REPOSITORY_MOUNT = "/srv/retracer/repo"
DNF_CACHE_MOUNT = "/var/cache/retracer-dnf"
KEYS_MOUNT = "/srv/retracer/keys"
STORE_IN_SANDBOX = "/retrace/store"
VIEW_IN_SANDBOX = "/retrace/root"
VIEWS_IN_SANDBOX = "/retrace/views"
# Bump when what a view holds changes, so that views made before are not reused.
_VIEW_RECIPE = "2"
# Where dwz multifiles go (Fedora: in the main -debuginfo of their source package).
_DWZ_DIR = "/usr/lib/debug/.dwz"
# Views kept for repeated crashes; each is a few thousand symlinks at most.
_KEPT_VIEWS = 256


@dataclass
class Environment:
    """Where gdb runs: ``image`` with the view of the crash's packages mounted."""

    image: str
    # Names the view (the package set and the files taken from the base image).
    name: str
    view: Path
    holding: Holding = field(repr=False)

    @property
    def cached(self) -> bool:
        """True when every package was in the store already (nothing was unpacked)."""
        return not self.holding.unpacked

    def close(self) -> None:
        self.holding.close()


def dnf_repository_options(
    repositories: Sequence[str], keys: Sequence[str], releasever: str, arch: str
) -> list[str]:
    """dnf's command-line options for the release's local repositories only: no host
    repository, no weak dependency, and signatures checked whenever keys are given."""
    options = [
        "--assumeyes", "--quiet", "--setopt=reposdir=/dev/null",
        "--setopt=install_weak_deps=False", f"--releasever={releasever}",
        # An i386 release's image runs on an x86_64 kernel, where dnf would guess x86_64.
        f"--forcearch={arch}", "--disablerepo=*",
        *(["--setopt=gpgcheck=True"] if keys else ["--nogpgcheck"]),
    ]  # fmt: skip
    for number, path in enumerate(repositories):
        name = f"retracer{number}"
        options += [f"--repofrompath={name},{path}", f"--enablerepo={name}"]
        if keys:
            options += [
                f"--setopt={name}.gpgcheck=True",
                f"--setopt={name}.gpgkey={' '.join(keys)}",
            ]
    return options


class BaseImages:
    """Each release's base image, built once per recipe (bootstrap or FROM image)."""

    def __init__(self, sandbox: Sandbox, settings: BuilderSettings, state_dir: Path) -> None:
        self.sandbox = sandbox
        self.settings = settings
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)

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

    def reference(self, release: ReleaseSettings) -> str:
        """The name of the release's base image (built or not)."""
        return self._base_reference(release)

    def _base_reference(self, release: ReleaseSettings) -> str:
        recipe = [_BASE_RECIPE, release.id, release.base_image or ""]
        recipe += [str(path.absolute()) for path in release.repositories]
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
            install_into_root_in_child(
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
        """Install ``packages`` with the image's own dnf from the read-only repositories
        (a base image made FROM a registry image gets gdb this way)."""
        # dnf keeps its parsed metadata in a cache outside the image, one per release
        # and set of repositories: the next install skips re-reading the repository.
        # metadata_expire=0 makes dnf compare the cached repomd with the repository's
        # on every install (cheap when it matches); with the default 48 hours, packages
        # a sync had just published were "No match" until the cache aged out.
        repositories = hashlib.sha256(
            "\n".join(str(r.absolute()) for r in release.repositories).encode()
        ).hexdigest()[:12]
        cache = self.state_dir / "dnf-cache" / f"{release.id}-{repositories}"
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
        dnf = [
            "dnf", "install", f"--setopt=cachedir={DNF_CACHE_MOUNT}", "--setopt=metadata_expire=0",
            *dnf_repository_options(
                [m.target for m in mounts], [f"file://{k.target}" for k in keys],
                release.parsed_id.version, release.parsed_id.package_arch,
            ),
        ]  # fmt: skip
        mounts += keys
        # dnf's pid-file lock cannot see across containers, so one install per cache
        # at a time keeps the shared cache consistent.
        with self._locked(f"dnf-cache-{cache.name}"):
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


class Environments:
    """Composes crash environments from the base images and the package store."""

    def __init__(self, base_images: BaseImages, store: PackageStore, state_dir: Path) -> None:
        self.base_images = base_images
        self.store = store
        self._views = state_dir / "views"
        self._views.mkdir(parents=True, exist_ok=True)

    def compose(
        self, release: ReleaseSettings, holding: Holding, mapped: Mapping[str, str] = {}
    ) -> Environment:
        """The environment with exactly the held packages (see PackageStore.hold).

        ``mapped`` names files gdb will look for (mapped modules) that no package may
        ship by that path, each with the build-id link a package may ship it by; the
        view takes such a file through that link, or else from the base image, as an
        install over the base image would have left it.
        """
        image = self.base_images.base_image(release)
        view = self._view(release, holding, dict(sorted(mapped.items())))
        self._prune_views()
        return Environment(image, view.name, view, holding)

    def reuse(
        self, release: ReleaseSettings, view_name: str, nevras: Sequence[str]
    ) -> Environment | None:
        """The environment named ``view_name`` if it and all its packages are still
        here (nothing is unpacked: this serves a guess)."""
        view = self._views / view_name
        image = self.base_images.reference(release)
        if not view.is_dir() or not self.base_images.sandbox.image_exists(image):
            return None
        holding = self.store.hold_present(tuple(nevras))
        if holding is None:
            return None
        os.utime(view)
        return Environment(image, view_name, view, holding)

    def remember_for(
        self, program: str, release: ReleaseSettings, environment: Environment
    ) -> None:
        """Note that the last crash of ``program`` needed ``environment``."""
        nevras = tuple(sorted(environment.holding.trees))
        self.store.index.remember_set(program, LastSet(release.id, environment.name, nevras))

    def last_used_for(self, program: str, release: ReleaseSettings) -> Environment | None:
        """The environment the last crash of ``program`` needed, if it is all still here.

        Crashes of one build of a program usually need the same packages, so it is a
        good guess before the core has been inspected.
        """
        last = self.store.index.last_set(program)
        if last is None or last.release_id != release.id:
            return None
        return self.reuse(release, last.view, last.nevras)

    def gdb_mounts(self) -> list[BindMount]:
        """The store and every view; ``root_links`` then picks one view."""
        return [
            BindMount(self.store.packages_dir, STORE_IN_SANDBOX),
            BindMount(self._views, VIEWS_IN_SANDBOX),
        ]

    def root_links(self, environment: Environment) -> dict[str, str]:
        """What ``/retrace/root`` must hold to be ``environment``'s view: a link per
        top-level entry (the view's own links point into ``/retrace/root``)."""
        return {
            name: f"{VIEWS_IN_SANDBOX}/{environment.name}/{name}"
            for name in sorted(os.listdir(environment.view))
        }

    def _view(self, release: ReleaseSettings, holding: Holding, mapped: dict[str, str]) -> Path:
        """A cached tree of symlinks: every file of the held packages, plus ``mapped``."""
        nevras = sorted(holding.trees)
        named = [f"{path} {link}" for path, link in mapped.items()]
        key = hashlib.sha256("\n".join([_VIEW_RECIPE, release.id, *nevras, "", *named]).encode())
        view = self._views / f"{release.id}-{key.hexdigest()[:32]}"
        if view.is_dir():
            os.utime(view)
            return view
        staging = self._views / f".{view.name}.{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            for nevra in nevras:
                _link_tree(holding.trees[nevra], f"{STORE_IN_SANDBOX}/{nevra}", staging)
            for path, link in mapped.items():
                _link_mapped(staging, path, link)
            _link_multifiles(staging, [holding.trees[nevra] for nevra in nevras])
            os.chmod(staging, 0o755)
            os.rename(staging, view)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            # Another worker made the same view first (a folder is renamed onto a
            # non-empty one with ENOTEMPTY): use theirs.
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not view.is_dir():
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return view

    def _prune_views(self) -> None:
        views = sorted(
            (entry.stat().st_mtime, entry) for entry in self._views.iterdir() if entry.is_dir()
        )
        for _, old in views[:-_KEPT_VIEWS]:
            # A view in use by a gdb run is kept by its mount; removing the name is safe
            # only once nobody can be about to mount it: the oldest go first.
            shutil.rmtree(old, ignore_errors=True)


def _link_tree(tree: Path, target_root: str, view: Path) -> None:
    """Mirror ``tree`` into ``view``: folders made, files linked to ``target_root``/...
    (their path in the sandbox), the package's own symlinks copied (absolute ones
    pointed into the view). A path another package already put there is kept."""
    prefix = len(str(tree))
    for folder, folders, names in os.walk(tree):
        relative = folder[prefix:]
        here = f"{view}{relative}"
        for name in folders:
            source = os.path.join(folder, name)
            if os.path.islink(source):
                names.append(name)  # os.walk lists a link to a folder as a folder
                continue
            with suppress(FileExistsError):
                os.mkdir(os.path.join(here, name), 0o755)
        folders[:] = [n for n in folders if not os.path.islink(os.path.join(folder, n))]
        for name in names:
            source = os.path.join(folder, name)
            destination = os.path.join(here, name)
            if os.path.islink(source):
                link = os.readlink(source)
                target = f"{VIEW_IN_SANDBOX}{link}" if link.startswith("/") else link
            else:
                target = f"{target_root}{relative}/{name}"
            with suppress(FileExistsError):
                os.symlink(target, destination)


def _link_mapped(view: Path, path: str, link: str) -> None:
    """Give the view a ``path`` no package put there: through ``link`` if a package
    ships that, else the same path of the base image."""
    destination = Path(f"{view}{path}")
    if os.path.lexists(destination):
        return
    target = f"{VIEW_IN_SANDBOX}{link}" if os.path.lexists(f"{view}{link}") else path
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, destination)
    except OSError:  # a package's own link or file is in the way: it wins
        pass


def _link_multifiles(view: Path, trees: Sequence[Path]) -> None:
    """Give each dwz multifile of ``trees`` a build-id link in the view.

    gdb looks for a .debug file's multifile at its ``.gnu_debugaltlink`` path, relative
    to the .debug file's real path: in the store, that is the folder of another
    package (a subpackage's -debuginfo), where it is not. gdb 13 then also tries the
    path under each debug-file-directory; older gdb (a release's own, such as Fedora
    37's 12.1) only looks the multifile up by build-id, and Fedora ships no build-id
    link for it.
    """
    for tree in trees:
        folder = tree / _DWZ_DIR.lstrip("/")
        if not folder.is_dir():
            continue
        for multifile in sorted(folder.iterdir()):
            if multifile.is_symlink() or not multifile.is_file():
                continue
            found = build_id(multifile)
            if found is not None:
                link = build_id_link(found, "debuginfo")
                _link_mapped(view, link, f"{_DWZ_DIR}/{multifile.name}")


def _key_path(key: str) -> Path:
    """A configured key (a path or a file:// URL) as an absolute path to bind-mount."""
    return Path(urlsplit(key).path if key.startswith("file://") else key).absolute()
