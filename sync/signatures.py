"""Check RPM signatures against configured keys: the only user of rpm's Python bindings.

The keys live in an in-memory keyring, so neither the host's rpm database nor its
trusted keys take part. A package passes when its header carries a signature made
by one of the keys and its payload matches the payload digest that header signs.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import rpm

from retracer.sync.errors import KeyUnavailable, SignatureRejected

_KEY_BLOCK = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
# OpenPGP hash algorithm ids (RFC 4880, 9.4) as rpm records them for the payload digest.
_PGP_HASHES = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
_SIGNATURE_TAGS = (rpm.RPMTAG_RSAHEADER, rpm.RPMTAG_DSAHEADER)


class SignatureChecker:
    """Accepts only packages signed by one of ``keys`` (armoured files or file:// URLs).

    Raises:
        KeyUnavailable: a key file is missing or holds no usable public key.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        self._keyring = rpm.keyring()
        for location in keys:
            for block in _key_blocks(location):
                try:
                    self._keyring.addKey(rpm.pubkey(block))
                except (rpm.error, ValueError, TypeError) as error:
                    raise KeyUnavailable(location, "it is not an OpenPGP public key") from error
        # One check at a time: rpm's keyring is shared, and the work is CPU-bound anyway.
        self._lock = threading.Lock()

    def check(self, path: Path, file_name: str) -> None:
        """Raises SignatureRejected unless the file at ``path`` is signed by a known key."""
        with self._lock:
            transaction = rpm.TransactionSet()
            transaction.setKeyring(self._keyring)
            transaction.setVSFlags(0)  # verify every digest and signature rpm knows
            fd = rpm.fd.open(str(path))
            try:
                header = transaction.hdrFromFdno(fd)
                payload_offset = fd.tell()
            except rpm.error as error:
                # rpm says e.g. "public key not available" or "error reading package header".
                raise SignatureRejected(file_name, str(error)) from error
            finally:
                fd.close()
        if not any(header[tag] for tag in _SIGNATURE_TAGS):
            raise SignatureRejected(file_name, "the package is not signed")
        _check_payload(path, payload_offset, header, file_name)


def _check_payload(path: Path, offset: int, header: rpm.hdr, file_name: str) -> None:
    # The signature covers the header only; the header's payload digest covers the rest.
    digests = header[rpm.RPMTAG_PAYLOADDIGEST]
    algorithm = _PGP_HASHES.get(header[rpm.RPMTAG_PAYLOADDIGESTALGO] or 0)
    if not digests or algorithm is None:
        raise SignatureRejected(file_name, "the package header carries no payload digest")
    hasher = hashlib.new(algorithm)
    with path.open("rb") as file:
        file.seek(offset)
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    if hasher.hexdigest() != digests[0]:
        raise SignatureRejected(file_name, "the payload does not match the signed header")


def _key_blocks(location: str) -> list[bytes]:
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        raise KeyUnavailable(location, "only local files and file:// URLs are supported")
    path = Path(parsed.path if parsed.scheme == "file" else location)
    try:
        text = path.read_bytes()
    except OSError as error:
        raise KeyUnavailable(location, error.strerror or "it cannot be read") from error
    # An armoured file may hold several keys; rpm parses one block at a time.
    blocks = [_KEY_BLOCK + part for part in text.split(_KEY_BLOCK)[1:]]
    if not blocks:
        raise KeyUnavailable(location, "it holds no ASCII-armoured public key")
    return blocks
