"""Load the one YAML configuration file into typed, validated settings.

The dataclasses below (and the settings of ``retracer.builder`` and ``retracer.sync``
they compose) are the schema: each default is the documented default, every key in
the file must name one of their fields, and each value must have the field's type.
Relative paths are taken relative to the file; ``~`` is expanded.

Where the file comes from, first match wins: ``--config``, ``$RETRACER_CONFIG``, then
the embedded default (``default.yaml`` beside this module), which serves the demo
release from a local data directory.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import platform
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from retracer.builder.settings import BuilderSettings
from retracer.server.debuginfod.settings import DebuginfodSettings
from retracer.server.errors import ConfigError
from retracer.sync.settings import ReleaseSettings, SyncSettings

CONFIG_ENV = "RETRACER_CONFIG"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # "seed": single-use passwords, status body = status (the seed's design).
    # "abrt": the creation password stays valid, status body = a stage message,
    # which is what the stock abrt-retrace-client expects.
    protocol_profile: Literal["seed", "abrt"] = "seed"
    max_packed_size_mib: int = 1024
    max_unpacked_size_mib: int = 4096
    # /create answers 507 when free space in the spool would fall below this.
    min_free_space_mib: int = 1024
    # Retraces that run at once, and tasks that may wait behind them.
    workers: int = 2
    max_queued_tasks: int = 50
    keep_core: bool = False
    finished_task_max_age_hours: float = 168.0
    unfinished_task_max_age_hours: float = 24.0
    # How often expiry runs where no local worker's housekeeping does it
    # (`retracer serve --no-worker`, a front end whose workers are elsewhere).
    housekeeping_seconds: float = 60.0
    # Slow and hostile clients (server/connections.py, server/offload.py).
    # A client must send its request line and headers within this time; it is also
    # how long a kept-alive connection may sit idle between requests.
    header_timeout_seconds: float = 10.0
    # A request body (an upload) that sends nothing for this long gets 408 and is dropped.
    body_timeout_seconds: float = 30.0
    # Connections served at once; further ones wait in the kernel's accept queue.
    max_connections: int = 1000
    # Uploads unpacked at once, each in a thread of their own pool (no other request
    # waits for those threads). An upload whose body has started arriving waits this
    # long for a free one, then gets 503. Waiting for the body takes no thread.
    max_concurrent_uploads: int = 4
    upload_slot_wait_seconds: float = 10.0
    # Memory the xz decoder may use per upload: ABRT's xz -2 needs 3 MiB, xz -9 65 MiB.
    xz_memory_limit_mib: int = 80
    # Per client address: /create requests allowed in the window; more get 429.
    creates_per_client: int = 30
    create_window_seconds: float = 60.0
    # Per client address: uploads in progress at once (a slow one holds an upload
    # thread while its body trickles in); more get 429.
    uploads_per_client: int = 2
    # Per client address: after this many wrong passwords (or unknown task ids) in the
    # window, that address gets 429 for every task; other clients, the owner
    # included, are not affected.
    password_failures_allowed: int = 10
    password_failure_window_seconds: float = 600.0
    # Addresses or networks of reverse proxies whose X-Forwarded-For is believed;
    # from anyone else the header is ignored.
    trusted_proxies: tuple[str, ...] = ()
    # A worker renews its claim on a task this often; a claim older than the lease
    # means its worker died, and the task is queued again.
    task_lease_seconds: float = 60.0
    # Every attempt at a task (claim to outcome, image builds and lock waits included)
    # ends within this many seconds; past it the task fails with a reason saying so.
    task_deadline_seconds: float = 3600.0
    # A retrace told to stop (deadline, lost lease) that is still running after this
    # many seconds (stuck in C code) has its task failed and its process ended.
    abort_grace_seconds: float = 30.0
    # Each consumer (`retracer worker`) says it is alive this often; /metrics and
    # /health count those seen within three intervals.
    worker_heartbeat_seconds: float = 5.0
    # `retracer serve` restarts a dead worker after this many seconds, doubled after
    # each quick death up to the maximum.
    worker_restart_backoff_seconds: float = 1.0
    worker_restart_backoff_max_seconds: float = 60.0
    # Serve each release's repository read-only at /repos/<release id>/, for worker
    # hosts that mirror it with `retracer sync` (see the README's two-host section).
    serve_repositories: bool = False
    # The operator's dashboard at /admin asks for this token; without one it is off.
    admin_token: str | None = None

    def __post_init__(self) -> None:
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as error:
                raise ValueError(
                    f"trusted_proxies: {proxy!r} is not an address or network"
                ) from error
        if self.max_concurrent_uploads < 1 or self.max_connections < 1:
            raise ValueError("max_concurrent_uploads and max_connections must be at least 1")


@dataclass(frozen=True)
class QueueSettings:
    backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://localhost:6379/0"


@dataclass(frozen=True)
class WorkerSettings:
    """What this host's ``retracer worker`` takes from the queues."""

    # Architectures whose queues it serves; empty means the host's own (an x86_64 host
    # runs i386 programs too, so it serves both).
    arches: tuple[str, ...] = ()
    # The shared secret between the front end and remote workers. On the front end it
    # opens the /internal endpoints (off without it); a remote worker sends it.
    token: str | None = None
    # Set on a worker host that shares no disk with the front end: the front end's URL
    # (its internal address). The worker then downloads each task's problem files
    # from there and hands its results back; without it the worker reads the spool.
    front_end: str | None = None

    def __post_init__(self) -> None:
        if self.front_end and not self.token:
            raise ValueError("worker.token is needed with worker.front_end")

    def served_arches(self) -> tuple[str, ...]:
        if self.arches:
            return self.arches
        machine = platform.machine()
        return ("x86_64", "i386") if machine == "x86_64" else (machine,)


@dataclass(frozen=True)
class StoreSettings:
    """Where tasks, leases and spent passwords live. ``sqlite`` (the default) is a file
    under ``data_dir``, for one host; ``postgresql`` is for worker hosts that share no
    disk with the front end: ``dsn`` is a libpq connection string
    ("host=db dbname=retracer user=retracer password=...")."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    dsn: str | None = None

    def __post_init__(self) -> None:
        if self.backend == "postgresql" and not self.dsn:
            raise ValueError("store.dsn is needed with the postgresql backend")


@dataclass(frozen=True)
class Config:
    # The spool, the task database, the queue and the image cache index live here.
    data_dir: Path = Path("/var/lib/retracer")
    server: ServerSettings = ServerSettings()
    queue: QueueSettings = QueueSettings()
    store: StoreSettings = StoreSettings()
    worker: WorkerSettings = WorkerSettings()
    builder: BuilderSettings = BuilderSettings()
    sync: SyncSettings = SyncSettings()
    debuginfod: DebuginfodSettings = DebuginfodSettings()
    releases: tuple[ReleaseSettings, ...] = ()
    # Where this configuration was read from, for messages; not a key in the file.
    source: str = field(default="<defaults>", metadata={"internal": True})

    def __post_init__(self) -> None:
        ids = [release.id for release in self.releases]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"release ids must be unique, {duplicates[0]!r} is repeated")


def default_config_path() -> Path:
    return Path(str(resources.files("retracer.server").joinpath("default.yaml")))


def load_config(path: Path | str | None = None) -> Config:
    """Read, merge over the defaults and validate one configuration file.

    Raises:
        ConfigError: the file is missing or malformed, or a key is unknown or of the
            wrong type. The message names the file and the key.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or default_config_path()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(path, None, f"cannot be read ({error.strerror})") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(path, None, f"is not valid YAML ({_yaml_problem(error)})") from error
    if data is None:
        data = {}
    return _Loader(path).build(Config, data, "", extra={"source": str(path)})


def config_from_mapping(data: dict[str, Any], base_dir: Path) -> Config:
    """Validate a mapping as if it were a file in ``base_dir`` (for tests and tools)."""
    return _Loader(base_dir / "<mapping>").build(Config, data, "")


# Keys of earlier versions, each with what to do instead; kept so that an upgrade
# fails with that sentence rather than a plain "unknown key".
_REPLACED_KEYS = {
    "builder.image_cache_max_mib": (
        "is no longer used: environments are composed from a store of unpacked packages"
        " now, capped by 'builder.package_store_max_mib'"
    ),
}


class _Loader:
    """Turns plain YAML values into the settings dataclasses, naming any bad key."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def build(self, cls: type, data: Any, where: str, extra: dict[str, Any] | None = None) -> Any:
        if not isinstance(data, dict):
            raise ConfigError(self.file, where or None, f"expected a mapping, found {_kind(data)}")
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        for key in data:
            replacement = _REPLACED_KEYS.get(_join(where, str(key)))
            if replacement is not None:
                raise ConfigError(self.file, _join(where, str(key)), replacement)
            if key not in fields:
                valid = ", ".join(sorted(fields))
                raise ConfigError(
                    self.file, _join(where, str(key)), f"is not a known key (valid keys: {valid})"
                )
        hints = typing.get_type_hints(cls)
        values = {
            name: self.convert(hints[name], data[name], _join(where, name))
            for name in fields
            if name in data
        }
        try:
            return cls(**values, **(extra or {}))
        except ValueError as error:
            raise ConfigError(self.file, where or None, str(error)) from error

    def convert(self, hint: Any, value: Any, where: str) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.convert(inner, value, where)
        if origin is Literal:
            if value not in args:
                allowed = ", ".join(repr(a) for a in args)
                raise ConfigError(self.file, where, f"must be one of {allowed}, found {value!r}")
            return value
        if origin is tuple:
            if not isinstance(value, list):
                raise ConfigError(self.file, where, f"expected a list, found {_kind(value)}")
            return tuple(
                self.convert(args[0], item, f"{where}[{index}]") for index, item in enumerate(value)
            )
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, where)  # type: ignore[arg-type]
        if hint is Path:
            if not isinstance(value, str):
                raise ConfigError(self.file, where, f"expected a path, found {_kind(value)}")
            return (self.file.parent / Path(value).expanduser()).absolute()
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # YAML reads `version_id: 41` as a number
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(
                self.file, where, f"expected {_kind_name(hint)}, found {_kind(value)}"
            )
        return value


def _yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or "unreadable"
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}" if mark else problem


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind_name(hint: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return f"{name} ({value!r})" if kind in (str, bool) else name
    return f"{type(value).__name__} ({value!r})"
