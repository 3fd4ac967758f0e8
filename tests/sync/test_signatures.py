"""GPG signatures: with keys configured, only packages signed by one of them get in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from retracer.sync.mirror import sync_release
from retracer.sync.settings import ReleaseSettings, SyncSettings, Upstream
from testing.sync.served import UpstreamRepository, UpstreamServer
from tests.sync.signing import SigningKey, make_key

ReleaseFor = Callable[..., ReleaseSettings]


@pytest.fixture(scope="session")
def trusted_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return make_key(tmp_path_factory.mktemp("gpg") / "trusted", "Trusted Signer <t@example.org>")


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return make_key(tmp_path_factory.mktemp("gpg") / "other", "Other Signer <o@example.org>")


def sync_with_key(
    release_for: ReleaseFor, settings: SyncSettings, server: UpstreamServer, key: str
) -> dict[str, str]:
    """Sync once; the refused file names with their reasons."""
    upstream = Upstream("updates", baseurl=(server.url,), gpgkey=(key,))
    summary = sync_release(release_for(upstream), settings)
    assert not summary.failed_upstreams
    return {refused.file_name: refused.reason for refused in summary.refused}


def test_only_packages_signed_by_a_configured_key_get_in(
    tmp_path: Path,
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    local_repo: Path,
    trusted_key: SigningKey,
    other_key: SigningKey,
    hello_v1: Path,
    hello_v2: Path,
    bundle: list[Path],
) -> None:
    signed = trusted_key.sign(hello_v1, tmp_path / hello_v1.name)
    foreign = other_key.sign(hello_v2, tmp_path / hello_v2.name)
    unsigned = bundle[0]
    upstream.add([signed, foreign, unsigned])
    upstream.refresh()

    refused = sync_with_key(release_for, settings, server, str(trusted_key.public_key))

    assert refused == {
        foreign.name: f"{foreign.name} fails the signature check: public key not available.",
        unsigned.name: f"{unsigned.name} fails the signature check: the package is not signed.",
    }
    assert [p.name for p in local_repo.rglob("*.rpm")] == [signed.name]


def test_tampered_payload_under_a_valid_signature_is_refused(
    tmp_path: Path,
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    trusted_key: SigningKey,
    hello_v1: Path,
) -> None:
    signed = trusted_key.sign(hello_v1, tmp_path / hello_v1.name)
    data = bytearray(signed.read_bytes())
    data[-20] ^= 0xFF  # in the payload, which the signed header covers only by digest
    signed.write_bytes(bytes(data))
    upstream.add([signed])
    upstream.refresh()  # the metadata checksum matches the tampered file

    refused = sync_with_key(release_for, settings, server, trusted_key.public_key.as_uri())

    assert refused == {
        signed.name: f"{signed.name} fails the signature check: "
        "the payload does not match the signed header."
    }


def test_missing_key_file_fails_the_upstream(
    tmp_path: Path,
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    hello_v1: Path,
) -> None:
    upstream.add([hello_v1])
    upstream.refresh()
    missing = tmp_path / "RPM-GPG-KEY-missing"
    release = release_for(Upstream("updates", baseurl=(server.url,), gpgkey=(str(missing),)))

    summary = sync_release(release, settings)

    (failed,) = summary.failed_upstreams
    assert failed.error == f"Signing key {missing} cannot be used: No such file or directory."
    assert summary.new_packages == 0
