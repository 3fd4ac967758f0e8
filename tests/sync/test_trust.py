"""Trust in packages: keys are required, checksums are strong, locations stay inside
the repository, one bad package fails alone, and the host bootstrap runs no scriptlet
and checks signatures."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import createrepo_c
import pytest

from retracer.server.config import config_from_mapping
from retracer.server.errors import ConfigError
from retracer.sync.bootstrap import install_into_root
from retracer.sync.errors import SignatureRejected
from retracer.sync.mirror import sync_release
from retracer.sync.repodata import publish, write_metadata
from retracer.sync.settings import ReleaseSettings, SyncSettings, Upstream
from testing.sync.rpms import build_rpms
from testing.sync.served import UpstreamRepository, UpstreamServer
from tests.sync.signing import SigningKey, make_key

ReleaseFor = Callable[..., ReleaseSettings]


def release_mapping(tmp_path: Path, **release: object) -> dict[str, object]:
    return {
        "releases": [
            {
                "id": "testos-1-x86_64",
                "os_release": "TestOS release 1",
                "repositories": [str(tmp_path / "local")],
                "base_image": "localhost/testos:1",
                "upstreams": [{"name": "updates", "baseurl": ["http://127.0.0.1:1/"]}],
                **release,
            }
        ]
    }


def test_an_upstream_without_a_key_needs_insecure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        config_from_mapping(release_mapping(tmp_path), tmp_path)
    assert refused.value.reason.endswith(
        "upstream 'updates' has no gpgkey; give its signing key, or set insecure: true on"
        " the release to accept unsigned packages."
    )
    config = config_from_mapping(release_mapping(tmp_path, insecure=True), tmp_path)
    assert config.releases[0].unsigned_upstreams == ("updates",)


def test_insecure_syncs_are_logged_loudly(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    hello_v1: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.add([hello_v1])
    upstream.refresh()
    sync_release(release_for(Upstream("updates", baseurl=(server.url,))), settings)
    (warning,) = [r for r in caplog.records if r.getMessage().startswith("INSECURE")]
    assert "updates without any signature check" in warning.getMessage()


def hostile_upstream(upstream: UpstreamRepository, rpm_files: list[Path]) -> None:
    """Metadata listing each package once, most of them with a hostile entry."""
    upstream.add(rpm_files)
    packages = []
    for rpm_file in rpm_files:
        href = f"Packages/{rpm_file.name[0]}/{rpm_file.name}"
        checksum = (
            createrepo_c.SHA1 if rpm_file.name.startswith("hostile-4-") else createrepo_c.SHA256
        )
        packages.append(createrepo_c.package_from_rpm(str(upstream.root / href), checksum, href))
    by_name = {pkg.name: pkg for pkg in packages}
    by_name["hostile-1"].location_href = "../../outside/hostile-1-1.0-1.noarch.rpm"
    by_name["hostile-2"].location_href = "Packages/h/"
    by_name["hostile-3"].location_base = "http://127.0.0.2:9/elsewhere/"
    # hostile-4 carries a sha1 checksum; "hostile" itself is fine.
    repodata = upstream.root / "repodata"
    repodata.mkdir()
    repomd = write_metadata(repodata, packages)
    for record in repomd.records:  # write_metadata names files relative to its folder
        record.location_href = f"repodata/{Path(record.location_href).name}"
    (repodata / "repomd.xml").write_text(repomd.xml_dump())


def test_bad_packages_fail_alone(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    local_repo: Path,
    tmp_path: Path,
) -> None:
    rpm_files = build_rpms("hostile", "1.0", subpackages=4)
    hostile_upstream(upstream, rpm_files)
    summary = sync_release(release_for(Upstream("updates", baseurl=(server.url,))), settings)

    assert not summary.failed_upstreams
    assert summary.new_packages == 1  # only "hostile" itself
    reasons = {refused.file_name: refused.reason for refused in summary.refused}
    assert reasons == {
        "../../outside/hostile-1-1.0-1.noarch.rpm": "The package at"
        " '../../outside/hostile-1-1.0-1.noarch.rpm' is refused: its location leaves the"
        " repository.",
        "Packages/h/": "The package at 'Packages/h/' is refused: its location names no file.",
        "Packages/h/hostile-3-1.0-1.noarch.rpm": "The package at"
        " 'Packages/h/hostile-3-1.0-1.noarch.rpm' is refused: its location points outside the"
        " repository (xml:base 'http://127.0.0.2:9/elsewhere/').",
        "hostile-4-1.0-1.noarch.rpm": "hostile-4-1.0-1.noarch.rpm is refused: its metadata"
        " checksum is sha1, and only sha256 or stronger is accepted.",
    }
    assert [p.name for p in (local_repo / "Packages").rglob("*.rpm")] == [
        "hostile-1.0-1.noarch.rpm"
    ]
    assert not (tmp_path / "outside").exists()
    assert summary.metadata_updated


@pytest.fixture(scope="module")
def bootstrap_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return make_key(tmp_path_factory.mktemp("gpg") / "key", "Bootstrap Signer <b@example.org>")


SCRIPTLET_SPEC = """\
Name: scripted
Version: 1.0
Release: 1
Summary: A package whose scriptlet must never run on the host
License: MIT
BuildArch: noarch
%description
Writes a marker from a %post scriptlet (lua: runs inside rpm, no shell needed).
%post -p <lua>
io.open("/scriptlet-ran", "w"):close()
%files
"""


def scripted_rpm(folder: Path) -> Path:
    spec = folder / "scripted.spec"
    spec.write_text(SCRIPTLET_SPEC)
    top = folder / "top"
    subprocess.run(
        ["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
         "--define", "_binary_payload w6.gzdio", str(spec)],
        check=True, capture_output=True,
    )  # fmt: skip
    (rpm_file,) = (top / "RPMS").rglob("*.rpm")
    return rpm_file


def local_repository(folder: Path, rpm_files: list[Path]) -> Path:
    (folder / "Packages").mkdir(parents=True)
    for rpm_file in rpm_files:
        (folder / "Packages" / rpm_file.name).write_bytes(rpm_file.read_bytes())
    (folder / ".work").mkdir()
    publish(folder, folder / ".work")
    return folder


def test_the_bootstrap_runs_no_scriptlet_and_checks_signatures(
    tmp_path: Path, bootstrap_key: SigningKey, hello_v1: Path
) -> None:
    scripted = bootstrap_key.sign(scripted_rpm(tmp_path), tmp_path / "scripted-1.0-1.noarch.rpm")
    signed = local_repository(tmp_path / "signed", [scripted])
    root = tmp_path / "root"
    root.mkdir()
    key = str(bootstrap_key.public_key)
    installed = install_into_root([signed], ["scripted"], root, "1", keys=[key])
    assert [p.name for p in installed] == ["scripted"]
    assert not (root / "scriptlet-ran").exists()
    assert not Path("/scriptlet-ran").exists()

    unsigned = local_repository(tmp_path / "unsigned", [hello_v1])
    with pytest.raises(SignatureRejected) as rejected:
        install_into_root([unsigned], ["hello"], tmp_path / "root2", "1", keys=[key])
    assert rejected.value.file_name == hello_v1.name
