"""The ``retracer`` command: one group that loads the configuration, and the
subcommands each part of retracer contributes.

Exit codes: 0 success; 1 the operation failed (its reason is printed);
2 bad usage or configuration.
"""

from __future__ import annotations

import dataclasses
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


@click.group()
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
