"""The application factory: ``create_app(config)`` builds one independent Flask app.

Importing this module does nothing; the factory opens the task store and the spool
under ``config.data_dir``, connects the queue and registers the blueprints and the
error handler. gevent's monkey-patching is the ``serve`` command's business.
"""

from __future__ import annotations

from flask import Flask

from retracer.builder.layout import repository_index_dir
from retracer.server import api, error_replies, metrics, repositories, web, workers
from retracer.server.config import Config
from retracer.server.debuginfod import views as debuginfod
from retracer.server.jobs import JobQueue
from retracer.server.offload import OffloadedTaskStore, UploadPump, in_threadpool
from retracer.server.packages import PackageCatalog
from retracer.server.service import RetraceService
from retracer.server.spool import Spool
from retracer.server.tasks import open_store


def create_app(config: Config) -> Flask:
    app = Flask(__name__)
    # A store call may wait for a worker's write lock or the network: never on the loop.
    store = OffloadedTaskStore(open_store(config.store, config.data_dir))
    spool = Spool.in_data_dir(config.data_dir, config.server, pump=UploadPump(config.server))
    app.extensions["retracer"] = RetraceService(
        config,
        store=store,
        spool=spool,
        queue=JobQueue(config.queue, config.data_dir),
        catalog=PackageCatalog(config.releases, repository_index_dir(config.data_dir)),
        metrics=metrics.init_app(app, store, config.server),
        offload=in_threadpool,
    )
    workers.init_app(app, config, workers.WorkerDesk(config, store, spool, in_threadpool))
    repositories.init_app(app, config)
    error_replies.init_app(app)
    web.init_app(app, config)
    app.register_blueprint(api.bp)
    debuginfod.init_app(app, config, app.extensions["retracer.metrics"].registry)
    return app
