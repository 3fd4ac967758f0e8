"""Web pages for people: the front page with an upload form, each task's page, and the
operator's dashboard (see :mod:`retracer.server.web.views`)."""

from __future__ import annotations

from flask import Flask

from retracer.server.config import Config
from retracer.server.web import security
from retracer.server.web.views import bp


def init_app(app: Flask, config: Config) -> None:
    app.extensions["retracer.web"] = config
    security.init_app(app)
    app.register_blueprint(bp)
