"""The configuration loader: defaults, the embedded file, and errors naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from retracer.server.config import Config, load_config
from retracer.server.errors import ConfigError
from retracer.server.packages import PackageCatalog
from retracer.sync.errors import UnknownRelease

RELEASE = """
releases:
  - id: fedora-41-x86_64
    os_release: Fedora release 41 (Forty One)
    os_id: fedora
    version_id: 41
    repositories: [repo/fedora-41]
    base_image: registry.fedoraproject.org/fedora:41
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retracer.yaml"
    path.write_text(text)
    return path


def test_embedded_default_serves_the_demo_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETRACER_CONFIG", raising=False)
    config = load_config()
    assert [r.id for r in config.releases] == ["testos-1-x86_64"]
    assert config.server.protocol_profile == "seed"
    assert config.data_dir == Path.home() / ".local/share/retracer"


def test_values_are_typed_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server:\n  port: 9000\n" + RELEASE))
    (release,) = config.releases
    assert release.id == "fedora-41-x86_64"
    assert config.server.port == 9000
    assert release.version_id == "41"  # YAML's number becomes the declared string
    assert release.repositories == (tmp_path / "repo/fedora-41",)
    assert release.parsed_id.arch == "x86_64"


def test_environment_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRACER_CONFIG", str(write(tmp_path, "server:\n  port: 9001\n")))
    assert load_config().server.port == 9001


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server:\n  prot: 1\n", "key 'server.prot': is not a known key (valid keys: "),
        ("builder:\n  image_cache_max_mib: 10\n",
         "key 'builder.image_cache_max_mib': is no longer used: environments are composed"
         " from a store of unpacked packages now, capped by 'builder.package_store_max_mib'"),
        ("server:\n  port: eighty\n",
         "key 'server.port': expected an integer, found a string ('eighty')"),
        ("server:\n  protocol_profile: abrtt\n",
         "key 'server.protocol_profile': must be one of 'seed', 'abrt', found 'abrtt'"),
        ("server: [1]\n", "key 'server': expected a mapping, found a list"),
        ("releases:\n  - id: fedora41\n    os_release: x\n"
         "    repositories: [r]\n    base_image: i\n",
         "key 'releases[0]': 'fedora41' is not a release id of the form name-version-arch"),
        ("releases:\n  - id: fedora-14-i686\n    os_release: x\n"
         "    repositories: [r]\n    bootstrap: {}\n",
         "key 'releases[0]': ABRT clients name this release 'fedora-14-i386'; use that id"),
        ("releases:\n  - id: a-1-x86_64\n    os_release: x\n    repositories: [r]\n",
         "key 'releases[0]': give exactly one of base_image or bootstrap"),
        ("server: {port: 1\n",
         "is not valid YAML (expected ',' or '}', but got '<stream end>' at line 2)"),
    ],
)  # fmt: skip
def test_bad_files_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.reason.startswith(f"Configuration error in {path}")
    assert message in caught.value.reason
    assert "\n" not in caught.value.reason


def test_missing_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot be read \(No such file"):
        load_config(tmp_path / "missing.yaml")


def test_unknown_release_lists_the_supported_ones(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, RELEASE))
    catalog = PackageCatalog(config.releases, tmp_path / "index")
    with pytest.raises(UnknownRelease) as caught:
        catalog.find("crasher-1.0-1", "x86_64", "fedora-40-x86_64")
    assert caught.value.reason == (
        "Unknown release 'fedora-40-x86_64'; this server supports: fedora-41-x86_64."
    )


def test_defaults_need_no_file() -> None:
    assert Config().server.max_packed_size_mib == 1024


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  prot: 1\n")
    run = subprocess.run(
        [sys.executable, "-m", "retracer.server.cli", "--config", str(path), "config"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "key 'server.prot': is not a known key" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_prints_the_effective_config(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 9002\n")
    run = subprocess.run(
        [sys.executable, "-m", "retracer.server.cli", "--config", str(path), "config"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"# read from {path}" in run.stdout
    assert "port: 9002" in run.stdout
