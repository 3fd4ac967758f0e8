"""A private PostgreSQL cluster for the tests: ``initdb`` and ``pg_ctl`` under a
temporary folder, run as the ``postgres`` user (initdb refuses root), listening on a
unix socket of its own (and on given addresses, for the multi-host tests). Each test
gets a fresh database in it. Stopping and starting it is how a PostgreSQL restart is
tested for real.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

USER = "postgres"


def _bindir() -> Path:
    """Debian keeps the server's tools out of PATH, under /usr/lib/postgresql/N/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise RuntimeError("PostgreSQL is not installed (scripts/system-packages lists it)")
    return Path(pg_ctl).parent


class PostgresCluster:
    def __init__(
        self, listen: tuple[str, ...] = (), port: int = 5432, prefix: tuple[str, ...] = ()
    ) -> None:
        """``listen``: TCP addresses besides the socket (any client there is trusted);
        ``prefix``: a command the server runs under (``ip netns exec NAME``)."""
        # Not under pytest's tmp_path: its folders are private to root, and the server
        # runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="retracer-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.listen = listen
        self.port = port
        self._prefix = prefix
        self._bin = _bindir()
        self._databases = itertools.count(1)
        account = pwd.getpwnam(USER)
        self.socket_dir.mkdir()
        for path in (self.root, self.socket_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
        self.root.chmod(0o755)
        self._as_postgres(
            str(self._bin / "initdb"), "-D", str(self.data), "-U", USER, "-A", "trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        if listen:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")

    def start(self) -> None:
        options = (
            f"-k {self.socket_dir} -p {self.port} -c listen_addresses='{','.join(self.listen)}'"
            " -c fsync=off -c full_page_writes=off"
        )
        self._as_postgres(
            str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", options, "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                          "stop")  # fmt: skip

    def dsn(self, dbname: str = "postgres", host: str | None = None) -> str:
        return f"host={host or self.socket_dir} port={self.port} dbname={dbname} user={USER}"

    def new_database(self) -> str:
        """A fresh, empty database's connection string."""
        name = f"test{next(self._databases)}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            [*self._prefix, "runuser", "-u", USER, "--", *command],
            check=True,
            capture_output=True,
            cwd=self.root,
        )
