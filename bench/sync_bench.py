"""Benchmark ``retracer sync`` against a served upstream of many small packages.

Run from the repository root: ``.venv/bin/python bench/sync_bench.py [--packages 10000]``.

It builds the packages once (rpmbuild, many subpackages per spec, cached under the
test cache), lays out an upstream with createrepo_c, serves it on loopback, and
prints side by side:

- a plain parallel download of the same files (a thread pool with requests, nothing
  verified or published) against a full sync into an empty repository;
- the no-op re-sync (target: under 5 s for 10,000 packages);
- an incremental sync of a few new packages into the full repository;
- the metadata of the whole repository written from scratch, for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

# A script, not a package: make the repository's test helpers importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retracer.sync.mirror import sync_release
from retracer.sync.repodata import REPODATA, publish
from retracer.sync.settings import ReleaseSettings, SyncSettings, Upstream
from testing.sync.rpms import build_rpms
from testing.sync.served import UpstreamRepository, UpstreamServer

# rpmbuild slows down more than linearly with the number of subpackages per spec.
CHUNK = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=SyncSettings().parallel_downloads)
    parser.add_argument("--new", type=int, default=100, help="packages of the incremental sync")
    args = parser.parse_args()

    started = time.monotonic()
    rpm_files = build_many("bulk", args.packages)
    new_files = build_many("fresh", args.new)
    print(f"packages ready: {len(rpm_files)} + {len(new_files)} ({elapsed(started)})")

    with tempfile.TemporaryDirectory(prefix="sync-bench-") as scratch:
        root = Path(scratch)
        upstream = UpstreamRepository(root / "upstream")
        link_into(upstream, rpm_files)
        started = time.monotonic()
        upstream.refresh()
        print(f"upstream metadata by createrepo_c: {elapsed(started)}")
        total_bytes = sum(f.stat().st_size for f in rpm_files)
        server = UpstreamServer(upstream.root).start()
        try:
            run(root, upstream, server, rpm_files, new_files, total_bytes, args.parallel)
        finally:
            server.stop()


def run(
    root: Path,
    upstream: UpstreamRepository,
    server: UpstreamServer,
    rpm_files: list[Path],
    new_files: list[Path],
    total_bytes: int,
    parallel: int,
) -> None:
    settings = SyncSettings(parallel_downloads=parallel, timeout_seconds=60.0)
    local = root / "local"
    release = ReleaseSettings(
        id="bench-1-x86_64",
        os_release="Bench release 1",
        repositories=(local,),
        base_image="localhost/bench:1",
        upstreams=(Upstream("updates", baseurl=(server.url,)),),
        insecure=True,  # unsigned bench packages
    )
    count = len(rpm_files)

    plain = timed(lambda: plain_download(server.url, upstream.root, root / "plain", parallel))
    full = timed(lambda: check(sync_release(release, settings).new_packages == count))
    noop = timed(lambda: check(not sync_release(release, settings).metadata_updated))
    link_into(upstream, new_files)
    upstream.refresh()
    added = len(new_files)
    incremental = timed(lambda: check(sync_release(release, settings).new_packages == added))
    shutil.rmtree(local / REPODATA)
    scratch_metadata = timed(lambda: check(publish(local, local / ".sync")))

    mib = total_bytes / (1 << 20)
    print(f"\n{count} packages, {mib:.1f} MiB, {parallel} parallel downloads\n")
    rows = [
        ("plain parallel download (requests)", plain, f"{count / plain:8.0f} pkg/s"),
        ("full sync (verify, place, metadata)", full, f"{count / full:8.0f} pkg/s"),
        ("no-op re-sync", noop, "target < 5 s"),
        (f"incremental sync of {added} packages", incremental, ""),
        ("metadata from scratch", scratch_metadata, ""),
    ]
    for label, seconds, note in rows:
        print(f"  {label:<40} {seconds:8.2f} s  {note}")
    print(f"\n  full sync / plain download time:  {full / plain:.2f}x")
    print(f"  sync throughput vs plain:         {plain / full:.0%}")
    print(f"  no-op re-sync vs 5 s target:      {noop / 5:.0%} of budget")


def plain_download(base_url: str, upstream_root: Path, dest: Path, parallel: int) -> None:
    """The baseline: fetch every file with a thread pool, one session per thread."""
    dest.mkdir()
    hrefs = sorted(p.relative_to(upstream_root).as_posix() for p in upstream_root.rglob("*.rpm"))
    local = threading.local()
    sessions: list[requests.Session] = []

    def fetch(href: str) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        with local.session.get(base_url + href, stream=True, timeout=60) as response:
            response.raise_for_status()
            with (dest / href.rsplit("/", 1)[-1]).open("wb") as file:
                for chunk in response.iter_content(1 << 20):
                    file.write(chunk)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(fetch, hrefs))
    for session in sessions:
        session.close()


def build_many(prefix: str, count: int) -> list[Path]:
    """``count`` distinct packages, built in chunks on every core and cached."""
    starts = range(0, count, CHUNK)
    chunks = [(f"{prefix}{i // CHUNK:03d}", min(CHUNK, count - i)) for i in starts]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        # Each spec yields its main package plus n - 1 subpackages: n files.
        built = pool.map(lambda chunk: build_rpms(chunk[0], "1.0", chunk[1] - 1), chunks)
        return [rpm_file for files in built for rpm_file in files]


def link_into(upstream: UpstreamRepository, rpm_files: list[Path]) -> None:
    try:
        for rpm_file in rpm_files:
            folder = upstream.root / "Packages" / rpm_file.name[0].lower()
            folder.mkdir(exist_ok=True)
            os.link(rpm_file, folder / rpm_file.name)
    except OSError:  # the cache is on another filesystem
        upstream.add(rpm_files)


def timed(action: Callable[[], None]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def check(condition: bool) -> None:
    if not condition:
        raise SystemExit("the sync did not do what the benchmark expects")


def elapsed(started: float) -> str:
    return f"{time.monotonic() - started:.1f} s"


if __name__ == "__main__":
    main()
