"""The front end's repositories, read-only over HTTP, for worker hosts to mirror.

With ``server.serve_repositories`` on, ``GET /repos/<release id>/<path>`` serves the
files of that release's first repository (its all-versions mirror), so a worker host
keeps its own copy with ``retracer sync``, naming this URL as a ``baseurl`` upstream.
Nothing here writes; paths outside the repository are refused by Werkzeug's safe join.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, send_from_directory

from retracer.server.config import Config
from retracer.sync.errors import UnknownRelease

bp = Blueprint("repositories", __name__, url_prefix="/repos")


def init_app(app: Flask, config: Config) -> None:
    if config.server.serve_repositories:
        app.extensions["retracer.repositories"] = {
            release.id: release.repositories[0] for release in config.releases
            if release.repositories
        }  # fmt: skip
        app.register_blueprint(bp)


@bp.get("/<release_id>/<path:path>")
def repository_file(release_id: str, path: str) -> Response:
    roots = current_app.extensions["retracer.repositories"]
    if release_id not in roots:
        raise UnknownRelease(release_id, roots)
    return send_from_directory(roots[release_id], path, max_age=60)
