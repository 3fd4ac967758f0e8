"""Bootstrapping a release's base system into an empty root on the host, with python3-dnf.

This is the only module that imports ``dnf``. It bootstraps a release's base image:
dnf resolves a package list's dependencies against the local repositories and
installs the result into an empty root. It runs as root on the host, so no package
scriptlet or trigger runs (a compromised mirror would get the host), and with the
release's signing keys every package's signature is checked before anything is
installed. rpm chroots the whole calling process while it installs, so a long-lived
process (a worker) calls :func:`install_into_root_in_child`, which runs the install
in a child process of its own. (Build-id lookups and the debuginfo closure use the
index in :mod:`retracer.sync.index`; retrace environments are composed from the
package store, with no install.)
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import dnf
import dnf.exceptions
import dnf.package

from retracer.sync.errors import RepositoryUnavailable, SignatureRejected, SyncError
from retracer.sync.model import Package

log = logging.getLogger(__name__)


def install_into_root(
    repositories: Sequence[Path],
    packages: Sequence[str],
    root: Path,
    releasever: str,
    arch: str | None = None,
    keys: Sequence[str] = (),
) -> list[Package]:
    """Install ``packages`` (names or NEVRAs) and their dependencies into an empty root,
    without running any scriptlet; with ``keys`` (armoured public key files or file://
    URLs), only packages signed by one of them.

    Used to bootstrap a release's base image from its local repository. ``arch``
    (e.g. ``i686`` on an x86_64 host) does what dnf's ``--forcearch`` does.

    Raises:
        RepositoryUnavailable: the metadata cannot be read, or a package cannot be
            found or its dependencies resolved (the reason says which).
        SignatureRejected: a package is unsigned or signed by an unknown key.
    """
    with tempfile.TemporaryDirectory(prefix="dnf-cache-") as cache:
        base = _load_base(
            repositories,
            Path(cache),
            installroot=root,
            releasever=releasever,
            arch=arch,
            keys=keys,
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
            if keys:
                for package in base.transaction.install_set:
                    _check_signature(base, package)
            base.do_transaction()
            return sorted(installed)
        finally:
            base.close()


def install_into_root_in_child(
    repositories: Sequence[Path],
    packages: Sequence[str],
    root: Path,
    releasever: str,
    arch: str | None = None,
    keys: Sequence[str] = (),
) -> list[Package]:
    """:func:`install_into_root` in a child process of its own (``python -m`` this
    module), so the caller's root, which rpm changes with chroot during the
    transaction, never moves. Same results and errors."""
    request = pickle.dumps((list(repositories), list(packages), root, releasever, arch, keys))
    child = subprocess.run(
        [sys.executable, "-m", __name__], input=request, capture_output=True, check=False
    )
    if child.returncode != 0 or not child.stdout:
        said = child.stderr.decode(errors="replace").strip().splitlines()[-1:]
        why = said[0] if said else f"exit code {child.returncode}"
        raise RepositoryUnavailable(", ".join(map(str, repositories)), f"the install died: {why}")
    # Our own child's answer, over a pipe: the installed packages or the error raised.
    outcome = pickle.loads(child.stdout)
    if isinstance(outcome, SyncError):
        raise outcome
    return list(outcome)


def _serve_child() -> None:
    """The child's side of :func:`install_into_root_in_child`."""
    arguments = pickle.loads(sys.stdin.buffer.read())
    try:
        outcome: object = install_into_root(*arguments)
    except SyncError as error:
        outcome = error
    sys.stdout.buffer.write(pickle.dumps(outcome))


def _check_signature(base: dnf.Base, package: dnf.package.Package) -> None:
    """Accept ``package`` only when it is signed by one of the repository's keys."""
    result, error = base.package_signature_check(package)
    if result == 1:  # the key may just not be imported into the new root yet
        try:
            base.package_import_key(package, askcb=lambda *_: True)
        except dnf.exceptions.Error as import_error:
            raise SignatureRejected(_file_name(package), str(import_error)) from import_error
        result, error = base.package_signature_check(package)
    if result != 0:
        raise SignatureRejected(_file_name(package), (error or "unknown error").rstrip("."))


def _file_name(package: dnf.package.Package) -> str:
    return Path(package.location).name


def _key_uri(key: str) -> str:
    return key if "://" in key else Path(key).absolute().as_uri()


def _load_base(
    repositories: Sequence[Path],
    cache: Path,
    installroot: Path | None = None,
    releasever: str | None = None,
    arch: str | None = None,
    keys: Sequence[str] = (),
) -> dnf.Base:
    conf = dnf.conf.Conf()
    conf.cachedir = str(cache)
    # Nothing from the host's dnf configuration may leak in: only our repositories.
    conf.reposdir = []
    conf.gpgcheck = bool(keys)
    # Scriptlets would run as root on the host (chroot is no boundary for root).
    conf.tsflags = ["noscripts", "notriggers"]
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
            repo.gpgcheck = bool(keys)
            repo.gpgkey = [_key_uri(key) for key in keys]
        base.fill_sack(load_system_repo=installroot is not None, load_available_repos=True)
    except dnf.exceptions.RepoError as error:
        base.close()
        where = ", ".join(str(r) for r in repositories)
        raise RepositoryUnavailable(where, str(error).rstrip(".")) from error
    except RepositoryUnavailable:
        base.close()
        raise
    return base


if __name__ == "__main__":
    _serve_child()
