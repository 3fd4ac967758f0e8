"""``retracer serve``: the Flask app on gevent's WSGI server, plus a worker process.

The caller (the ``serve`` command) monkey-patches first. The worker runs as the
separate command ``retracer worker`` in a child process, so that the HTTP process
never retraces and a compose file can run the two as separate services instead.
A :class:`WorkerSupervisor` restarts that child when it dies (the OOM killer, say),
with a growing pause between quick deaths; the child dies with this process.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import gevent
from gevent.pywsgi import LoggingLogAdapter

from retracer.server.app import create_app
from retracer.server.config import Config
from retracer.server.connections import make_server
from retracer.server.expiry import expire_periodically
from retracer.server.spool import Spool

log = logging.getLogger(__name__)

WORKER_STOP_SECONDS = 30.0


def serve(config: Config, with_worker: bool, announce: bool = True) -> None:
    """Serve until SIGINT or SIGTERM; then stop the worker child gracefully."""
    _allow_enough_files(config.server.max_connections)
    app = create_app(config)
    # Only this process writes to incoming, and no upload is in flight yet: whatever
    # is there was cut off by a crash of the previous run.
    swept = Spool.in_data_dir(config.data_dir, config.server).sweep_incoming(0)
    if swept:
        log.info("removed %d upload(s) cut off by the previous run", swept)
    server = make_server(
        app,
        config.server,
        log=LoggingLogAdapter(logging.getLogger("retracer.access"), logging.DEBUG),
        error_log=LoggingLogAdapter(logging.getLogger("retracer.http"), logging.ERROR),
    )
    server.start()
    if announce:
        # Tests and scripts read the port from this line (port 0 picks a free one).
        print(f"retracer: serving on http://{config.server.host}:{server.server_port}", flush=True)
    supervisor = WorkerSupervisor(config) if with_worker else None
    if supervisor is not None:
        supervisor.start()
    # Without a local worker, whose housekeeping expires tasks, this process does.
    expiry = None if with_worker else expire_periodically(config)
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    try:
        server.serve_forever()
    finally:
        if supervisor is not None:
            supervisor.stop()
        if expiry is not None:
            expiry.kill()


class WorkerSupervisor:
    """Keeps one ``retracer worker`` child running, from a greenlet.

    A child that exits while the server runs is logged and started again after a
    pause: ``worker_restart_backoff_seconds``, doubled after each death that came
    sooner than the maximum pause after its start, and reset after a longer life.
    ``sleep`` and ``clock`` are injectable for tests.
    """

    def __init__(
        self,
        config: Config,
        sleep: Callable[[float], None] = gevent.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._sleep = sleep
        self._clock = clock
        self._stopping = False
        self._greenlet: gevent.Greenlet | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        self.process = start_worker(self._config)
        self._greenlet = gevent.spawn(self._supervise)

    def stop(self) -> None:
        self._stopping = True
        if self.process is not None:
            stop_worker(self.process)
        if self._greenlet is not None:
            self._greenlet.kill()

    def _supervise(self) -> None:
        settings = self._config.server
        pause = settings.worker_restart_backoff_seconds
        while self.process is not None:
            started = self._clock()
            code = self.process.wait()
            if self._stopping:
                return
            if self._clock() - started > settings.worker_restart_backoff_max_seconds:
                pause = settings.worker_restart_backoff_seconds
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            log.error("the worker (pid %d) %s; restarting it in %g s", self.process.pid, how, pause)
            self._sleep(pause)
            if self._stopping:
                return
            pause = min(pause * 2, settings.worker_restart_backoff_max_seconds)
            self.restarts += 1
            self.process = start_worker(self._config)


def _allow_enough_files(connections: int) -> None:
    """Raise the soft limit on open files to fit every connection (a socket each) plus
    the uploads' pipes and files; systemd gives services a soft limit of 1024."""
    needed = connections + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning(
                "only %d open files are allowed; lower server.max_connections (%d) to fit",
                target,
                connections,
            )


def start_worker(config: Config) -> subprocess.Popen[bytes]:
    """``retracer worker`` as a child that the kernel kills if this process dies."""
    command = [sys.executable, "-m", "retracer.server.cli", "--config", config.source, "worker",
               "--parent", str(os.getpid())]  # fmt: skip
    log.info("starting the worker: %s", " ".join(command))
    return subprocess.Popen(command)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGINT lets huey finish running tasks; SIGKILL after WORKER_STOP_SECONDS."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGINT)
    try:
        worker.wait(timeout=WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
