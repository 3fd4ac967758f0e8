"""Installing from a release's local repositories on the host, with python3-dnf.

This is the only module that imports ``dnf``. It bootstraps a release's base image:
dnf resolves a package list's dependencies against the local repositories and
installs the result into an empty root. (Build-id lookups use the index in
:mod:`retracer.sync.index`; installs into retrace environments run the
environment's own dnf, in the sandbox.)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import dnf
import dnf.exceptions

from retracer.sync.errors import RepositoryUnavailable
from retracer.sync.model import Package

log = logging.getLogger(__name__)


def install_into_root(
    repositories: Sequence[Path],
    packages: Sequence[str],
    root: Path,
    releasever: str,
    arch: str | None = None,
) -> list[Package]:
    """Install ``packages`` (names or NEVRAs) and their dependencies into an empty root.

    Used to bootstrap a release's base image from its local repository. ``arch``
    (e.g. ``i686`` on an x86_64 host) does what dnf's ``--forcearch`` does.

    Raises:
        RepositoryUnavailable: the metadata cannot be read, or a package cannot be
            found or its dependencies resolved (the reason says which).
    """
    with tempfile.TemporaryDirectory(prefix="dnf-cache-") as cache:
        base = _load_base(
            repositories, Path(cache), installroot=root, releasever=releasever, arch=arch
        )
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
    arch: str | None = None,
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
    if arch is not None:
        conf.arch = arch  # also sets basearch, as --forcearch does
        conf.ignorearch = True
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
