"""The ``retracer`` command: one group that loads the configuration, and the
subcommands each part of retracer contributes.

Exit codes: 0 success; 1 the operation failed (its reason is printed);
2 bad usage or configuration; 3 ``submit --wait`` timed out.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from retracer.server.config import CONFIG_ENV, Config, load_config
from retracer.server.errors import ConfigError


class ConfigSource:
    """Loads the configuration once, on first use, so ``--help`` works without one."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._config: Config | None = None

    def load(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.path)
            except ConfigError as error:
                raise click.UsageError(error.reason) from error
        return self._config


pass_config_source = click.make_pass_decorator(ConfigSource)


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (or --help lists it).

    The analyzer and the mirror pull in podman, dnf and rich; a command that needs
    none of them (``debuginfod``, a long-running server) then starts faster and
    stays smaller.
    """

    LAZY = {
        "retrace": "retracer.builder.cli:retrace_command",
        "sync": "retracer.sync.cli:sync_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY:
            module, attribute = self.LAZY[name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"Configuration file (default: ${CONFIG_ENV}, then the embedded demo configuration).",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """retracer: retrace ABRT coredumps with the exact packages of the crash."""
    ctx.obj = ConfigSource(config_path)


@main.command("config")
@pass_config_source
def show_config(source: ConfigSource) -> None:
    """Print the effective configuration, defaults included, as YAML."""
    config = source.load()
    click.echo(f"# read from {config.source}")
    click.echo(yaml.safe_dump(_plain(config), sort_keys=False), nl=False)


@main.command()
@click.option("--no-worker", is_flag=True, help="Serve HTTP only; run `retracer worker` yourself.")
@pass_config_source
def serve(source: ConfigSource, no_worker: bool) -> None:
    """Serve the ABRT retrace protocol on gevent, with a worker process unless --no-worker."""
    from gevent import monkey

    # The server speaks plain HTTP; ssl was imported (by podman's client) before
    # this command could run, and patching it this late is what gevent warns against.
    monkey.patch_all(ssl=False)
    from retracer.server.serve import serve as run_server

    config = source.load()
    _log_to_stderr()
    run_server(config, with_worker=not no_worker)


@main.command()
@click.option("--host", help="Address to listen on (default: debuginfod.host).")
@click.option("--port", type=int, help="Port to listen on (default: debuginfod.port).")
@pass_config_source
def debuginfod(source: ConfigSource, host: str | None, port: int | None) -> None:
    """Serve only the debuginfod protocol from the releases' repositories."""
    from gevent import monkey

    monkey.patch_all(ssl=False)
    from retracer.server.debuginfod.serve import serve_debuginfod

    config = source.load()
    _log_to_stderr()
    serve_debuginfod(
        config,
        config.debuginfod.host if host is None else host,
        config.debuginfod.port if port is None else port,
    )


@main.command()
@click.option("--parent", "parent_pid", type=int, hidden=True,
              help="Exit when this process (retracer serve) dies.")  # fmt: skip
@pass_config_source
def worker(source: ConfigSource, parent_pid: int | None) -> None:
    """Consume the task queue: retrace tasks with `server.workers` processes until SIGINT."""
    from retracer.server.worker import run

    config = source.load()
    _log_to_stderr()
    run(config, parent_pid=parent_pid)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--server", "server_url", required=True, help="Base URL, e.g. http://host:8080.")
@click.option("--wait", is_flag=True, help="Poll until the retrace finishes; print the backtrace.")
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to --wait.")
@click.option(
    "--json", "as_json", is_flag=True, help="With --wait, print satyr's core_backtrace JSON."
)
def submit(path: Path, server_url: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Upload a problem directory (or an ABRT archive) to a retrace server."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from retracer.server.submit import RetraceClient, SubmitError, SubmitTimedOut, archive_for

    client = RetraceClient(server_url.rstrip("/"))
    try:
        with archive_for(path) as archive, Progress(
            *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
            transient=True,
        ) as progress:  # fmt: skip
            bar = progress.add_task("uploading", total=archive.stat().st_size)
            task = client.create(archive, lambda sent: progress.advance(bar, sent))
        click.echo(f"task {task.task_id} password {task.password}", err=True)
        if not wait:
            return
        outcome = client.wait(task, timeout, on_stage=lambda s: click.echo(f"  {s}", err=True))
        if as_json and outcome.backtrace is not None:
            click.echo(client.document(task, "core_backtrace"))
            return
    except SubmitTimedOut as error:
        fail(error.reason, 3)
        return
    except SubmitError as error:
        fail(error.reason)
        return
    if outcome.backtrace is None:
        last = outcome.log.strip().splitlines()[-1:] or ["the retrace failed"]
        fail(f"task {task.task_id}: {last[0]}")
    click.echo(outcome.backtrace, nl=False)


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.metadata.get("internal")
        }
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def fail(reason: str, code: int = 1) -> None:
    """Print one sentence to stderr and leave with ``code``."""
    click.echo(f"retracer: {reason}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
