"""Expiring old tasks and sweeping abandoned uploads: the business of the host that
holds the spool.

A local worker does it in its minutely housekeeping. Remote workers do not hold the
spool, so ``retracer serve --no-worker`` (a front end whose workers live elsewhere)
runs it on a timer of its own.
"""

from __future__ import annotations

import logging
import time

import gevent

from retracer.server.config import Config, ServerSettings
from retracer.server.offload import in_threadpool
from retracer.server.spool import Spool
from retracer.server.tasks import TaskStore, open_store

log = logging.getLogger(__name__)


def expire(
    store: TaskStore, spool: Spool, settings: ServerSettings, now: float | None = None
) -> list[str]:
    """Delete tasks past their age and folders nobody knows; returns the expired ids."""
    now = time.time() if now is None else now
    expired = store.expired(
        finished_before=now - settings.finished_task_max_age_hours * 3600,
        created_before=now - settings.unfinished_task_max_age_hours * 3600,
    )
    for task_id in expired:
        store.delete(task_id)
        spool.remove(task_id)
        log.info("task %s expired", task_id)
    # Folders first, then ids: a task's row is written before its folder moves in,
    # so a folder listed here whose id is unknown a moment later is a true orphan.
    folders = spool.task_ids()
    known = store.ids()
    for task_id in folders - known:
        spool.remove(task_id)  # its row was deleted (expiry) but the folder stayed
    spool.sweep_incoming(older_than_seconds=3600, now=now)
    return list(expired)


def expire_periodically(config: Config) -> gevent.Greenlet:
    """Run :func:`expire` every ``server.housekeeping_seconds`` on a greenlet, in the
    thread pool with a store connection of its own; a failure is logged and the next
    round tries again."""
    spool = Spool.in_data_dir(config.data_dir, config.server)

    def one_round() -> None:
        store = open_store(config.store, config.data_dir)
        try:
            expire(store, spool, config.server)
        finally:
            store.close()

    def loop() -> None:
        while True:
            gevent.sleep(config.server.housekeeping_seconds)
            try:
                in_threadpool(one_round)
            except Exception:  # any failure: the next round tries again
                log.exception("expiring old tasks failed; trying again later")

    return gevent.spawn(loop)
