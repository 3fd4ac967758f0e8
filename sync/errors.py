"""Errors raised by the repository side of retracer.

Exception tree::

    SyncError                  base; ``reason`` is one sentence a person can act on
    ├── UnknownRelease         no configured release matches an id or a crash
    ├── RepositoryUnavailable  a local repository is missing or its metadata unreadable
    ├── PackageNotFound        a NEVRA or NVR is not in the local repository
    ├── SyncLocked             another sync of the same release is running
    ├── MirrorFailed           every mirror of an upstream failed
    ├── KeyUnavailable         a configured signing key cannot be read
    ├── PublishFailed          the local repository's new metadata cannot be written
    ├── PayloadUnreadable      a package file's header or payload cannot be read
    └── PackageRefused         one upstream package was not taken into the local repository
        ├── DownloadFailed     no mirror delivered the file
        ├── ChecksumMismatch   the file differs from what the upstream metadata promises
        ├── WeakChecksum       the metadata vouches for the file with md5 or sha1 only
        ├── UnsafeMetadata     the metadata places the file outside the repository
        └── SignatureRejected  the file is unsigned or not signed by a configured key

A ``PackageRefused`` never stops a sync: it is recorded in the summary, and the
package stays out of the local repository.
"""

from __future__ import annotations

from collections.abc import Iterable


class SyncError(Exception):
    """Base of every error raised by ``retracer.sync``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take other arguments than ``args``: rebuild from the fields, so
        # an error crosses a process boundary (the bootstrap's child) with its type.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[SyncError], args: tuple[object, ...], fields: dict[str, object]
) -> SyncError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(fields)
    return error


class UnknownRelease(SyncError):
    def __init__(self, release_id: str, supported: Iterable[str]) -> None:
        self.release_id = release_id
        self.supported = sorted(supported)
        listed = ", ".join(self.supported) or "none"
        super().__init__(f"Unknown release {release_id!r}; this server supports: {listed}.")


class RepositoryUnavailable(SyncError):
    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"Repository {path} cannot be read: {why}.")


class PackageNotFound(SyncError):
    def __init__(self, package: str, release_id: str) -> None:
        self.package = package
        self.release_id = release_id
        super().__init__(f"Package {package} is not in the repository of {release_id}.")


class SyncLocked(SyncError):
    def __init__(self, release_id: str) -> None:
        self.release_id = release_id
        super().__init__(f"Another sync of {release_id} is already running.")


class MirrorFailed(SyncError):
    def __init__(self, upstream: str, why: str) -> None:
        self.upstream = upstream
        super().__init__(f"Every mirror of upstream {upstream!r} failed: {why}.")


class PackageRefused(SyncError):
    """One package was not taken; ``file_name`` names it, ``reason`` says why."""

    def __init__(self, file_name: str, reason: str) -> None:
        self.file_name = file_name
        super().__init__(reason)


class DownloadFailed(PackageRefused):
    def __init__(self, file_name: str, why: str) -> None:
        self.why = why
        super().__init__(file_name, f"{file_name} could not be downloaded: {why}.")


class ChecksumMismatch(PackageRefused):
    def __init__(self, file_name: str, url: str, expected: str, found: str) -> None:
        self.url = url
        self.expected = expected
        self.found = found
        super().__init__(
            file_name,
            f"{file_name} from {url} does not match the upstream metadata "
            f"(expected {expected}, found {found}).",
        )


class WeakChecksum(PackageRefused):
    def __init__(self, file_name: str, checksum_type: str) -> None:
        self.checksum_type = checksum_type
        super().__init__(
            file_name,
            f"{file_name} is refused: its metadata checksum is {checksum_type}, and only"
            " sha256 or stronger is accepted.",
        )


class UnsafeMetadata(PackageRefused):
    def __init__(self, location: str, why: str) -> None:
        self.why = why
        super().__init__(location, f"The package at {location!r} is refused: {why}.")


class SignatureRejected(PackageRefused):
    def __init__(self, file_name: str, why: str) -> None:
        self.why = why
        super().__init__(file_name, f"{file_name} fails the signature check: {why}.")


class KeyUnavailable(SyncError):
    def __init__(self, location: str, why: str) -> None:
        self.location = location
        super().__init__(f"Signing key {location} cannot be used: {why}.")


class PublishFailed(SyncError):
    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"The metadata of {path} cannot be published: {why}.")


class PayloadUnreadable(SyncError):
    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(
            f"The package file {path} cannot be read ({why}); check it, or sync it again."
        )
