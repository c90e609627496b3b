"""The reliability tests run against every built-in backend."""

from __future__ import annotations

import pytest

from mmstream.registry import BackendRegistry

#: The built-in backends (the example plugin is checked by the conformance suite).
BACKENDS = [name for name in BackendRegistry().names() if name in {"file", "mmap"}]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
