"""``retracer sync``: mirror upstream repositories into the local all-versions ones.

Exit codes: 0 everything was synced; 1 a package was refused, an upstream failed or
another sync holds the lock (each is printed); 2 bad usage, such as an unknown release.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn, Protocol

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from retracer.sync.errors import SyncError, UnknownRelease
from retracer.sync.mirror import SyncSummary, sync_release
from retracer.sync.settings import ReleaseSettings, SyncSettings


class SyncConfig(Protocol):
    """The part of retracer's configuration a sync reads."""

    @property
    def releases(self) -> tuple[ReleaseSettings, ...]: ...

    @property
    def sync(self) -> SyncSettings: ...


class SyncConfigSource(Protocol):
    """What the ``retracer`` group leaves in the click context (its ConfigSource)."""

    def load(self) -> SyncConfig: ...


@click.command("sync")
@click.argument("release_ids", nargs=-1, metavar="[RELEASE]...")
@click.pass_context
def sync_command(ctx: click.Context, release_ids: tuple[str, ...]) -> None:
    """Download every new package of each RELEASE's upstreams (default: all releases)
    into its local repository, which keeps every version, then republish its metadata.

    Safe to run from a timer: a second sync of a release already being synced exits
    with status 1 without touching it.
    """
    source: SyncConfigSource = ctx.obj
    config = source.load()
    try:
        releases = select_releases(config.releases, release_ids)
    except UnknownRelease as error:
        _fail(error.reason, 2)
    console = Console(stderr=True)
    problems = 0
    for release in releases:
        try:
            with RichProgress(console) as progress:
                summary = sync_release(release, config.sync, progress)
        except SyncError as error:
            click.echo(f"retracer: {error.reason}", err=True)
            problems += 1
            continue
        click.echo(describe(summary))
        problems += len(summary.refused) + len(summary.failed_upstreams)
    if problems:
        _fail(f"{problems} problem{'s' if problems != 1 else ''} during the sync, listed above.")


def select_releases(
    configured: Sequence[ReleaseSettings], release_ids: Sequence[str]
) -> list[ReleaseSettings]:
    """The releases named, in the order given, or all of them when none is.

    Raises:
        UnknownRelease: a name matches no configured release.
    """
    by_id = {release.id: release for release in configured}
    for release_id in release_ids:
        if release_id not in by_id:
            raise UnknownRelease(release_id, by_id)
    return [by_id[i] for i in dict.fromkeys(release_ids)] if release_ids else list(configured)


def describe(summary: SyncSummary) -> str:
    """The summary as a few lines for people: totals first, then each problem."""
    metadata = "metadata updated" if summary.metadata_updated else "metadata unchanged"
    lines = [
        f"{summary.release_id}: {_count(summary.new_packages, 'new package')}"
        f" ({_size(summary.new_bytes)}) in {summary.seconds:.1f} s,"
        f" {_count(len(summary.refused), 'refused package')}, {metadata}."
    ]
    for upstream in summary.upstreams:
        if upstream.error is not None:
            lines.append(f"  {upstream.name}: failed: {upstream.error}")
            continue
        lines.append(
            f"  {upstream.name}: {upstream.new_packages} new of {upstream.listed} listed,"
            f" from {upstream.mirror}"
        )
        for failure in upstream.mirror_failures:
            lines.append(f"    mirror {failure.url} failed, fell back: {failure.reason}")
        for refused in upstream.refused:
            lines.append(f"    refused: {refused.reason}")
    return "\n".join(lines)


class RichProgress:
    """A download bar per upstream on stderr, when that is a terminal (not under a timer)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}/{task.fields[packages]} packages"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._tasks: dict[str, TaskID] = {}
        self._sizes: dict[str, int] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._progress.stop()

    def upstream_started(self, upstream: str, packages: int, size: int) -> None:
        if packages:
            self._tasks[upstream] = self._progress.add_task(
                upstream, total=size, done=0, packages=packages
            )

    def package_done(self, upstream: str, size: int) -> None:
        task = self._tasks[upstream]
        done = self._progress.tasks[task].fields["done"] + 1
        self._progress.update(task, advance=size, done=done)

    def upstream_finished(self, upstream: str) -> None:
        task = self._tasks.pop(upstream, None)
        if task is not None:
            self._progress.remove_task(task)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _fail(reason: str, code: int = 1) -> NoReturn:
    # Same shape as retracer.server.cli.fail; sync does not import the server.
    click.echo(f"retracer: {reason}", err=True)
    sys.exit(code)
