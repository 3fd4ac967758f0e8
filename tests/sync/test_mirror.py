"""Mirroring upstreams into the local all-versions repository, over real HTTP."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import createrepo_c
import pytest

from retracer.sync.errors import SyncLocked
from retracer.sync.lock import release_lock
from retracer.sync.mirror import sync_release
from retracer.sync.repodata import listed_files
from retracer.sync.settings import ReleaseSettings, SyncSettings, Upstream
from testing.sync.served import UpstreamRepository, UpstreamServer
from tests.sync.configfile import write_config
from tests.sync.conftest import RELEASE_ID

ReleaseFor = Callable[..., ReleaseSettings]


def listed_names(repository: Path) -> set[str]:
    return {Path(href).name for href in listed_files(repository) or {}}


def resolvable(repository: Path, nevras: list[str]) -> set[str]:
    """The NEVRAs dnf finds in the repository, reading it as the retrace side will."""
    import dnf  # only here: the sync code itself never uses dnf

    base = dnf.Base()
    try:
        base.conf.cachedir = str(repository.parent / "dnf-cache")
        base.conf.reposdir = []
        base.conf.substitutions["releasever"] = "1"
        base.repos.add_new_repo("local", base.conf, baseurl=[repository.as_uri()])
        base.fill_sack(load_system_repo=False)
        query = base.sack.query().available()
        return {str(p) for nevra in nevras for p in query.filter(nevra_strict=nevra)}
    finally:
        base.close()


def test_keeps_versions_upstream_dropped(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    local_repo: Path,
    hello_v1: Path,
    hello_v2: Path,
) -> None:
    release = release_for(Upstream("updates", baseurl=(server.url,)))
    upstream.add([hello_v1])
    upstream.refresh()
    first = sync_release(release, settings)

    upstream.remove(hello_v1.name)
    upstream.add([hello_v2])
    upstream.refresh()
    second = sync_release(release, settings)

    assert (first.new_packages, second.new_packages) == (1, 1)
    assert first.ok and second.ok and second.metadata_updated
    assert listed_names(local_repo) == {hello_v1.name, hello_v2.name}
    both = {"hello-1.0-1.noarch", "hello-2.0-1.noarch"}
    assert resolvable(local_repo, sorted(both)) == both


def test_interrupted_sync_resumes_without_fetching_finished_files(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    local_repo: Path,
    tmp_path: Path,
    bundle: list[Path],
) -> None:
    upstream.add(bundle)
    upstream.refresh()
    release = release_for(Upstream("updates", baseurl=(server.url,)))
    one_at_a_time = SyncSettings(parallel_downloads=1, timeout_seconds=30.0)
    stalled = bundle[3].name  # downloads go in name order: three finish before this one
    server.stall_on = stalled
    config = write_config(tmp_path / "retracer.yaml", release, one_at_a_time)

    sync = subprocess.Popen(
        [sys.executable, "-m", "retracer.server.cli", "--config", str(config), "sync"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.stalled.wait(timeout=60), "the sync never reached the stalled file"
    finally:
        sync.kill()  # as hard as an interruption gets: no cleanup runs
        sync.wait()
    assert listed_names(local_repo) == set()  # nothing was published, half a file least of all

    server.stall_on = None
    resumed = sync_release(release, one_at_a_time)

    assert resumed.ok and resumed.new_packages == len(bundle) - 3
    assert [server.count(f.name) for f in bundle] == [1, 1, 1, 2, 1, 1]
    assert listed_names(local_repo) == {f.name for f in bundle}


def test_corrupted_package_is_refused_and_not_published(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    local_repo: Path,
    hello_v1: Path,
    bundle: list[Path],
) -> None:
    upstream.add([hello_v1, bundle[0]])
    upstream.refresh()
    corrupted = upstream.path_of(hello_v1.name)
    data = bytearray(corrupted.read_bytes())
    data[-100] ^= 0xFF  # same size, different bytes
    corrupted.write_bytes(bytes(data))

    summary = sync_release(release_for(Upstream("updates", baseurl=(server.url,))), settings)

    assert not summary.ok and summary.new_packages == 1
    (refused,) = summary.refused
    assert refused.file_name == hello_v1.name
    assert refused.reason.startswith(f"{hello_v1.name} from {server.url}Packages/h/")
    assert "does not match the upstream metadata (expected sha256 " in refused.reason
    assert listed_names(local_repo) == {bundle[0].name}
    assert not list(local_repo.rglob(hello_v1.name))


def test_no_op_sync_changes_nothing_and_fetches_only_the_metadata_index(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    local_repo: Path,
    bundle: list[Path],
) -> None:
    upstream.add(bundle)
    upstream.refresh()
    release = release_for(Upstream("updates", baseurl=(server.url,)))
    sync_release(release, settings)
    repomd = (local_repo / "repodata" / "repomd.xml").read_bytes()
    requests_before = sum(server.requests.values())

    again = sync_release(release, settings)

    assert again.ok and again.new_packages == 0 and not again.metadata_updated
    assert (local_repo / "repodata" / "repomd.xml").read_bytes() == repomd
    # repomd.xml and primary only; how long it takes is a line of bench/sync_bench.py.
    assert sum(server.requests.values()) - requests_before == 2


def test_unreachable_first_baseurl_falls_back_and_is_reported(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    local_repo: Path,
    hello_v1: Path,
) -> None:
    upstream.add([hello_v1])
    upstream.refresh()
    dead = "http://127.0.0.1:9/"  # the discard port: nothing listens there
    release = release_for(Upstream("updates", baseurl=(dead, server.url)))

    summary = sync_release(release, settings)

    assert summary.ok and summary.new_packages == 1
    (updates,) = summary.upstreams
    assert updates.mirror == server.url
    assert [f.url for f in updates.mirror_failures] == [dead]
    assert "Couldn't connect to server" in updates.mirror_failures[0].reason


def test_mirror_failing_a_package_falls_back_to_the_next(
    tmp_path: Path,
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    hello_v1: Path,
    bundle: list[Path],
) -> None:
    # A lagging mirror: same metadata, but one package file is missing there.
    upstream.add([hello_v1, bundle[0]])
    upstream.refresh()
    lagging = UpstreamRepository(tmp_path / "lagging")
    lagging.add([bundle[0]])
    subprocess.run(["cp", "-r", str(upstream.root / "repodata"), str(lagging.root)], check=True)
    lagging_server = UpstreamServer(lagging.root).start()
    try:
        release = release_for(Upstream("updates", baseurl=(lagging_server.url, server.url)))
        summary = sync_release(release, settings)
    finally:
        lagging_server.stop()

    assert summary.ok and summary.new_packages == 2
    (failure,) = summary.upstreams[0].mirror_failures
    assert failure.url == lagging_server.url
    assert failure.reason == f"{hello_v1.name}: HTTP 404 File not found"


def test_every_mirror_down_fails_the_upstream_only(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    local_repo: Path,
    hello_v1: Path,
) -> None:
    upstream.add([hello_v1])
    upstream.refresh()
    release = release_for(
        Upstream("updates-testing", baseurl=("http://127.0.0.1:9/",)),
        Upstream("updates", baseurl=(server.url,)),
    )

    summary = sync_release(release, settings)

    (failed,) = summary.failed_upstreams
    assert failed.name == "updates-testing"
    assert failed.error is not None
    assert failed.error.startswith("Every mirror of upstream 'updates-testing' failed: ")
    assert summary.new_packages == 1 and listed_names(local_repo) == {hello_v1.name}


def test_mirrorlist_names_the_mirrors(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    hello_v1: Path,
) -> None:
    upstream.add([hello_v1])
    upstream.refresh()
    (upstream.root / "mirrorlist").write_text(f"# mirrors\nhttp://127.0.0.1:9/\n{server.url}\n")

    summary = sync_release(
        release_for(Upstream("updates", mirrorlist=server.url + "mirrorlist")), settings
    )

    assert summary.ok and summary.new_packages == 1
    assert summary.upstreams[0].mirror == server.url
    assert [f.url for f in summary.upstreams[0].mirror_failures] == ["http://127.0.0.1:9/"]


def test_second_concurrent_sync_is_refused(
    release_for: ReleaseFor, settings: SyncSettings, local_repo: Path
) -> None:
    local_repo.mkdir()
    release = release_for(Upstream("updates", baseurl=("http://127.0.0.1:9/",)))
    with release_lock(local_repo, RELEASE_ID), pytest.raises(SyncLocked) as raised:
        sync_release(release, settings)
    assert raised.value.reason == f"Another sync of {RELEASE_ID} is already running."


def test_reader_never_sees_half_published_metadata(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    local_repo: Path,
    bundle: list[Path],
    hello_v1: Path,
    hello_v2: Path,
) -> None:
    release = release_for(Upstream("updates", baseurl=(server.url,)))
    upstream.add([hello_v1])
    upstream.refresh()
    sync_release(release, settings)
    stop = threading.Event()
    reads: list[int] = []
    errors: list[BaseException] = []

    def read_repeatedly() -> None:
        while not stop.is_set():
            try:
                # A slow reader: a sync may publish between its two reads.
                reads.append(count_packages(local_repo, pause=0.03))
            except BaseException as error:
                errors.append(error)
                return

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    try:
        for step in ([hello_v2], bundle[:3], bundle[3:]):
            upstream.add(step)
            upstream.refresh()
            assert sync_release(release, settings).metadata_updated
            time.sleep(0.2)  # longer than the reader's pause, so it never spans two publishes
    finally:
        stop.set()
        reader.join()

    assert errors == []
    assert len(reads) > 5 and reads[0] >= 1 and reads[-1] == 2 + len(bundle)
    assert reads == sorted(reads)  # never a step back, never an empty repository


def count_packages(repository: Path, pause: float) -> int:
    """Read the repository like dnf does: repomd.xml first, then the primary it names."""
    repomd = createrepo_c.Repomd(str(repository / "repodata" / "repomd.xml"))
    (primary,) = [r for r in repomd.records if r.type == "primary"]
    time.sleep(pause)
    packages: list[str] = []
    createrepo_c.xml_parse_primary(
        str(repository / primary.location_href),
        pkgcb=lambda pkg: packages.append(pkg.name),
        do_files=False,
    )
    return len(packages)


def test_metalink_names_the_mirrors_and_vouches_for_repomd(
    upstream: UpstreamRepository,
    server: UpstreamServer,
    release_for: ReleaseFor,
    settings: SyncSettings,
    hello_v1: Path,
) -> None:
    upstream.add([hello_v1])
    upstream.refresh()
    repomd = (upstream.root / "repodata" / "repomd.xml").read_bytes()
    (upstream.root / "metalink.xml").write_text(
        metalink(repomd, ["http://127.0.0.1:9/", server.url])
    )

    summary = sync_release(
        release_for(Upstream("updates", metalink=server.url + "metalink.xml")), settings
    )

    assert summary.ok and summary.new_packages == 1
    assert summary.upstreams[0].mirror == server.url
    assert [f.url for f in summary.upstreams[0].mirror_failures] == ["http://127.0.0.1:9/"]


def metalink(repomd: bytes, mirrors: list[str]) -> str:
    """A MirrorManager-style metalink for repomd.xml, as Fedora serves them."""
    urls = "\n".join(
        f'<url protocol="http" type="http" preference="{100 - i}">{m}repodata/repomd.xml</url>'
        for i, m in enumerate(mirrors)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/"
          xmlns:mm0="http://fedorahosted.org/mirrormanager">
 <files>
  <file name="repomd.xml">
   <size>{len(repomd)}</size>
   <verification><hash type="sha256">{hashlib.sha256(repomd).hexdigest()}</hash></verification>
   <resources maxconnections="1">
{urls}
   </resources>
  </file>
 </files>
</metalink>
"""
