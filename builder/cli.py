"""``retracer retrace``: run the analyzer on one crash, without the HTTP server."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Protocol

import click

from retracer.builder.errors import BuilderError
from retracer.builder.model import Stage
from retracer.builder.problem_format import UnpackLimits, unpack_problem
from retracer.builder.retrace import Analyzer
from retracer.builder.settings import BuilderSettings
from retracer.sync.errors import SyncError
from retracer.sync.settings import ReleaseSettings


class _UploadLimits(Protocol):
    """The caps the server puts on an uploaded archive; an archive given here gets them too."""

    max_unpacked_size_mib: int
    xz_memory_limit_mib: int


class _Config(Protocol):
    data_dir: Path
    builder: BuilderSettings
    releases: tuple[ReleaseSettings, ...]

    @property
    def server(self) -> _UploadLimits: ...


class _Source(Protocol):
    """What the command needs from the CLI group: the configuration."""

    def load(self) -> _Config: ...


class _StderrObserver:
    """Shows progress on stderr, so stdout holds only the backtrace or the JSON."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def stage(self, stage: Stage) -> None:
        pass

    def log(self, line: str) -> None:
        if not self.quiet:
            click.secho(line, err=True, dim=True)


@click.command("retrace")
@click.argument("problem", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--json", "as_json", is_flag=True, help="Print satyr's core_backtrace JSON, not the text."
)
@click.option("--report", "as_report", is_flag=True, help="Print the whole JSON report.")
@click.option("--quiet", is_flag=True, help="Do not show progress on stderr.")
@click.pass_obj
def retrace_command(
    source: _Source, problem: Path, as_json: bool, as_report: bool, quiet: bool
) -> None:
    """Retrace the crash in PROBLEM: an ABRT problem directory, or the archive
    abrt-retrace-client uploads.

    Prints the backtrace (or with --json satyr's core_backtrace, with --report the
    whole report) and exits 0; on failure prints the reason and exits 1.
    """
    config = source.load()
    with (
        Analyzer.in_data_dir(config.builder, config.releases, config.data_dir) as analyzer,
        tempfile.TemporaryDirectory(prefix="retracer-retrace-") as scratch,
    ):
        try:
            if problem.is_file():
                problem = _unpack(problem, Path(scratch) / "problem", config.server)
            result = analyzer.retrace(problem, _StderrObserver(quiet))
        except (BuilderError, SyncError) as error:
            click.echo(f"retracer: {error.reason}", err=True)
            sys.exit(1)
    if as_report:
        click.echo(json.dumps(result.report.to_json(), indent=2))
    elif as_json:
        click.echo(json.dumps(result.report.core_backtrace(), indent=2))
    else:
        click.echo(result.backtrace, nl=False)


def _unpack(archive: Path, target: Path, limits: _UploadLimits) -> Path:
    """Unpack an ABRT archive with the checks uploads get; returns the problem directory."""
    with archive.open("rb") as raw:
        unpack_problem(
            raw, target, UnpackLimits(limits.max_unpacked_size_mib, limits.xz_memory_limit_mib)
        )
    return target
