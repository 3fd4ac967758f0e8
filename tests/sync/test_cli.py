"""``retracer sync`` as a user runs it: through the real command group and a config file."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from retracer.server.cli import main
from retracer.sync.lock import release_lock
from retracer.sync.settings import ReleaseSettings, SyncSettings, Upstream
from testing.sync.served import UpstreamRepository, UpstreamServer
from tests.sync.configfile import write_config
from tests.sync.conftest import RELEASE_ID

ReleaseFor = Callable[..., ReleaseSettings]


def run_sync(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), "sync", *args])


def test_summary_names_new_packages_and_the_fallback(
    tmp_path: Path,
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    hello_v1: Path,
) -> None:
    upstream.add([hello_v1])
    upstream.refresh()
    dead = "http://127.0.0.1:9/"
    release = release_for(Upstream("updates", baseurl=(dead, server.url)))
    config = write_config(tmp_path / "retracer.yaml", release, settings)

    result = run_sync(config, RELEASE_ID)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{RELEASE_ID}: 1 new package (")
    assert lines[0].endswith(", 0 refused packages, metadata updated.")
    assert lines[1] == f"  updates: 1 new of 1 listed, from {server.url}"
    assert lines[2].startswith(f"    mirror {dead} failed, fell back: Curl error (7): ")

    again = run_sync(config)

    assert again.exit_code == 0
    assert re.fullmatch(
        rf"{RELEASE_ID}: 0 new packages \(0 B\) in \d+\.\d s, 0 refused packages,"
        " metadata unchanged.",
        again.stdout.splitlines()[0],
    )


def test_refused_package_fails_the_command(
    tmp_path: Path,
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    hello_v1: Path,
) -> None:
    upstream.add([hello_v1])
    upstream.refresh()
    upstream.path_of(hello_v1.name).write_bytes(b"not an rpm")
    config = write_config(
        tmp_path / "retracer.yaml",
        release_for(Upstream("updates", baseurl=(server.url,))),
        settings,
    )

    result = run_sync(config)

    assert result.exit_code == 1
    assert f"    refused: {hello_v1.name} from {server.url}" in result.stdout
    assert "(expected " in result.stdout and "found 10 bytes)." in result.stdout
    assert result.stderr == "retracer: 1 problem during the sync, listed above.\n"


def test_unknown_release_is_a_usage_error(
    tmp_path: Path, release_for: ReleaseFor, settings: SyncSettings
) -> None:
    config = write_config(
        tmp_path / "retracer.yaml",
        release_for(Upstream("updates", baseurl=("http://127.0.0.1:9/",))),
        settings,
    )

    result = run_sync(config, "fedora-99-x86_64")

    assert result.exit_code == 2
    assert result.stderr == (
        f"retracer: Unknown release 'fedora-99-x86_64'; this server supports: {RELEASE_ID}.\n"
    )


def test_running_sync_makes_the_second_exit_with_one_sentence(
    tmp_path: Path, release_for: ReleaseFor, settings: SyncSettings, local_repo: Path
) -> None:
    release = release_for(Upstream("updates", baseurl=("http://127.0.0.1:9/",)))
    config = write_config(tmp_path / "retracer.yaml", release, settings)
    local_repo.mkdir()

    with release_lock(local_repo, RELEASE_ID):
        result = run_sync(config)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"retracer: Another sync of {RELEASE_ID} is already running.\n"
        "retracer: 1 problem during the sync, listed above.\n"
    )
