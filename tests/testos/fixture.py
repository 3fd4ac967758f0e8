"""The session fixture ``testos``; import it into a conftest.py to use it."""

from __future__ import annotations

import pytest

from tests.testos import Testos, build_testos
from tests.testos.build import is_cached


@pytest.fixture(scope="session")
def testos(request: pytest.FixtureRequest) -> Testos:
    """testos 1 with real crashes; a cold build needs (and starts) ``podman_service``."""
    if is_cached():
        return build_testos()
    return build_testos(request.getfixturevalue("podman_service").url)
