"""Shared fixture code for ``tests/`` and ``bench/``: not part of the retracer package.

- :mod:`.testos`: builds the synthetic RPM release "testos" with real crashes (and its
  32-bit twin), cached under ``$RETRACER_TEST_CACHE``; ``python -m testing.testos``.
- :mod:`.podman_service`: a private ``podman system service`` with its own storage.
- :mod:`.cache`: where slow fixtures are cached, keyed by their inputs.
- :mod:`.server`: live servers (the app in a thread, ``retracer serve`` as a process),
  their settings, and the archives and hostile uploads the server is fed.
- :mod:`.sync`: small RPMs and an upstream repository served over HTTP.

Tests and benchmarks import from here; neither imports the other.
"""
