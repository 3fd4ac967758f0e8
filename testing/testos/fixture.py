"""The session fixtures ``testos`` and ``testos_i386``; import them into a conftest.py."""

from __future__ import annotations

import pytest

from testing.testos import Testos, build_testos
from testing.testos.build import is_cached
from testing.testos.target import I686, X86_64, Target


def _build(request: pytest.FixtureRequest, target: Target) -> Testos:
    """A cold build needs (and starts) ``podman_service``."""
    if is_cached(target):
        return build_testos(target=target)
    return build_testos(request.getfixturevalue("podman_service").url, target)


@pytest.fixture(scope="session")
def testos(request: pytest.FixtureRequest) -> Testos:
    """testos 1 (x86_64) with real crashes."""
    return _build(request, X86_64)


@pytest.fixture(scope="session")
def testos_i386(request: pytest.FixtureRequest) -> Testos:
    """testos 1's 32-bit twin, testos-1-i386, with its crasher crash."""
    return _build(request, I686)
