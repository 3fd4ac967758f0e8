"""The debuginfod blueprint, its metrics, and the app of ``retracer debuginfod``.

The requests and headers are those elfutils' debuginfod documents: ``GET`` or
``HEAD`` of ``/buildid/<hex>/debuginfo``, ``/executable``, ``/source/<absolute
path>`` and ``/section/<name>``; 404 for anything unknown; ``X-DEBUGINFOD-SIZE``,
``X-DEBUGINFOD-FILE`` (the file's path in the package) and ``X-DEBUGINFOD-ARCHIVE``
(the package file) on every answer, and ranges. A cached file is answered at once
and sent with sendfile(2) (see ``server.sendfile``); a cold one is unpacked in the
thread pool.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import Any, TypeVar
from urllib.parse import unquote

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from retracer.builder.layout import repository_index_dir
from retracer.server import error_replies
from retracer.server.config import Config
from retracer.server.debuginfod.artifacts import (
    Artifact,
    ArtifactCache,
    ArtifactKind,
    CachedArtifact,
)
from retracer.server.offload import in_threadpool
from retracer.server.sendfile import FAST_PATH, FastFile, FastPath, FileBody

T = TypeVar("T")

bp = Blueprint("debuginfod", __name__)

_NOT_FOUND = "No such build-id, or it has no such file in this server's repositories.\n"
_FAST_REQUEST = re.compile(r"^/buildid/([0-9a-f]+)/(debuginfo|executable|source|section)(/.*)?$")


class DebuginfodMetrics:
    """Requests by kind, cache hits and misses (unpacks), and bytes sent."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "retracer_debuginfod_requests",
            "debuginfod requests, by kind and HTTP status.",
            ["kind", "status"],
            registry=registry,
        )
        self.hits = Counter(
            "retracer_debuginfod_cache_hits", "Requests answered from the cache.", registry=registry
        )
        self.misses = Counter(
            "retracer_debuginfod_cache_misses",
            "Files unpacked from a package into the cache.",
            registry=registry,
        )
        self.bytes = Counter(
            "retracer_debuginfod_sent_bytes", "Bytes of file bodies sent.", registry=registry
        )
        # Resolved once: the fast path counts every hot answer.
        self.found = {
            kind: self.requests.labels(kind=kind, status="200")
            for kind in ("debuginfo", "executable", "source", "section")
        }


@dataclass(frozen=True)
class Debuginfod:
    """What the views use, kept in ``app.extensions``."""

    cache: ArtifactCache
    metrics: DebuginfodMetrics
    offload: Callable[[Callable[[], Any]], Any]


def init_app(app: Flask, config: Config, registry: CollectorRegistry) -> Debuginfod:
    metrics = DebuginfodMetrics(registry)
    cache = ArtifactCache(
        config.releases,
        index_dir=repository_index_dir(config.data_dir),
        cache_dir=config.data_dir / "debuginfod",
        max_bytes=config.debuginfod.cache_max_mib << 20,
        on_unpack=lambda _artifact: metrics.misses.inc(),
    )
    service = Debuginfod(cache, metrics, in_threadpool)
    app.extensions["retracer.debuginfod"] = service
    app.extensions[FAST_PATH] = _fast_path(service)
    app.register_blueprint(bp)
    return service


def create_debuginfod_app(config: Config) -> Flask:
    """The app of ``retracer debuginfod``: the debuginfod requests and /metrics only."""
    app = Flask(__name__)
    registry = CollectorRegistry()
    error_replies.init_app(app)
    init_app(app, config, registry)

    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics)
    return app


@bp.get("/buildid/<build_id>/debuginfo", defaults={"kind": "debuginfo"}, merge_slashes=False)
@bp.get("/buildid/<build_id>/executable", defaults={"kind": "executable"}, merge_slashes=False)
def whole_file(build_id: str, kind: ArtifactKind) -> Response:
    return _answer(Artifact.parse(build_id, kind), kind)


@bp.get("/buildid/<build_id>/source/<path:path>", merge_slashes=False)
def source(build_id: str, path: str) -> Response:
    return _answer(Artifact.parse(build_id, "source", path), "source")


@bp.get("/buildid/<build_id>/section/<name>", merge_slashes=False)
def section(build_id: str, name: str) -> Response:
    return _answer(Artifact.parse(build_id, "section", name), "section")


def _answer(artifact: Artifact | None, kind: str) -> Response:
    service: Debuginfod = current_app.extensions["retracer.debuginfod"]
    found = None
    if artifact is not None:
        found = service.cache.cached(artifact)
        if found is not None:
            service.metrics.hits.inc()
        else:
            fetch = service.cache.fetch
            found = service.offload(lambda: fetch(artifact))
    if found is None:
        service.metrics.requests.labels(kind=kind, status="404").inc()
        return Response(_NOT_FOUND, status=404, content_type="text/plain; charset=utf-8")
    response = _file_response(found)
    service.metrics.requests.labels(kind=kind, status=str(response.status_code)).inc()
    if request.method == "GET":
        service.metrics.bytes.inc(response.content_length or 0)
    return response


def _fast_path(service: Debuginfod) -> FastPath:
    """Cached files, answered by the WSGI handler without the app (``server.sendfile``).

    Requests with a Range, and anything not in the cache, go on to the views.
    """

    def lookup(method: str, raw_path: str, headers: Message) -> FastFile | None:
        if method not in ("GET", "HEAD") or "range" in headers:
            return None
        match = _FAST_REQUEST.match(raw_path.partition("?")[0])
        if match is None:
            return None
        build_id, kind, rest = match[1], match[2], unquote(match[3] or "")
        if (kind in ("debuginfo", "executable")) == bool(rest):
            return None
        if kind == "section":
            rest = rest[1:]
        artifact = Artifact.parse(build_id, kind, rest)  # type: ignore[arg-type]
        found = service.cache.cached(artifact) if artifact else None
        if found is None:
            return None
        metrics = service.metrics
        metrics.hits.inc()
        metrics.found[kind].inc()
        if method == "GET":
            metrics.bytes.inc(found.size)
        headers_out = (*_origin_headers(found).items(), ("Accept-Ranges", "bytes"))
        return FastFile(str(found.path), headers_out, send_body=method == "GET")

    return lookup


def _origin_headers(found: CachedArtifact) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "X-DEBUGINFOD-SIZE": str(found.size),
        "X-DEBUGINFOD-FILE": found.member,
        "X-DEBUGINFOD-ARCHIVE": found.archive,
        "Cache-Control": "public, max-age=86400, immutable",
    }


def _file_response(found: CachedArtifact) -> Response:
    headers = _origin_headers(found)
    del headers["Content-Type"]
    if request.method == "HEAD":
        response = Response(headers=headers, content_type="application/octet-stream")
        response.content_length = found.size
        return response
    try:
        file = found.path.open("rb")
    except FileNotFoundError:  # evicted since it was found: rare, and the client retries
        return Response(_NOT_FOUND, status=404, content_type="text/plain; charset=utf-8")
    response = Response(
        FileBody(file, found.size),
        headers=headers,
        content_type="application/octet-stream",
        direct_passthrough=True,
    )
    response.content_length = found.size
    response.call_on_close(file.close)
    if request.headers.get("Range"):
        response.make_conditional(request, accept_ranges=True, complete_length=found.size)
    else:
        response.accept_ranges = "bytes"
    return response
