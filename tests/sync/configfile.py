"""Write release settings as the YAML file ``retracer --config`` reads."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from retracer.sync.settings import ReleaseSettings, SyncSettings


def write_config(path: Path, release: ReleaseSettings, settings: SyncSettings) -> Path:
    entry: dict[str, Any] = {
        "id": release.id,
        "os_release": release.os_release,
        "repositories": [str(p) for p in release.repositories],
        "base_image": release.base_image,
        "upstreams": [_upstream(asdict(u)) for u in release.upstreams],
        "insecure": release.insecure,
    }
    data = {"data_dir": str(path.parent / "data"), "sync": asdict(settings), "releases": [entry]}
    path.write_text(yaml.safe_dump(data))
    return path


def _upstream(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in fields.items()
        if value not in (None, ())
    }
