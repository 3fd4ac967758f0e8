"""Upstream repositories for the sync tests and benchmarks: RPMs and an HTTP server."""
