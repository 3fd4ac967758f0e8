"""Scripts that run inside the retrace containers, not in retracer's own process.

The files here are mounted read-only into each sandbox container (see
``DRIVER_FILES`` in :mod:`retracer.builder.retrace`) and run by the release's own gdb
(``gdb -nx -batch -x gdb_report.py``), so they may import only the standard library,
gdb's ``gdb`` module and each other; nothing from ``retracer``:

- :mod:`.gdb_report`: the gdb driver; prints ABRT's text backtrace, then the same
  threads and frames as one JSON document.
- :mod:`.exploitable`: the exploitability rating; gdb loads it beside the driver, and
  the host imports its pure :func:`~retracer.images.exploitable.rate` and types.

A new file that the driver imports must be added to ``DRIVER_FILES``, or the
container will not see it.
"""
