"""A throw-away GnuPG key, and rpmsign with it, for the signature tests."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SigningKey:
    home: Path
    name: str
    public_key: Path

    def sign(self, rpm_file: Path, dest: Path) -> Path:
        """A signed copy of ``rpm_file`` at ``dest``."""
        shutil.copy(rpm_file, dest)
        subprocess.run(
            [
                "rpmsign",
                "--addsign",
                "--define",
                f"_gpg_name {self.name}",
                "--define",
                f"_gpg_path {self.home}",
                "--define",
                f"__gpg {shutil.which('gpg')}",
                str(dest),
            ],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        return dest


def make_key(home: Path, name: str) -> SigningKey:
    """A new RSA signing key without passphrase, in its own GnuPG home."""
    home.mkdir(mode=0o700, parents=True)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", name, "rsa2048", "sign", "never"],
        check=True,
        capture_output=True,
    )
    exported = subprocess.run(
        [*gpg, "--armor", "--export", name], check=True, capture_output=True
    ).stdout
    public_key = home / "public.asc"
    public_key.write_bytes(exported)
    return SigningKey(home, name, public_key)
