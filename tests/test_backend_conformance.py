"""The conformance suite against every backend the registry lists: the built-ins and any
installed plugin (the test bootstrap installs the example under tests/plugins)."""

from __future__ import annotations

import pytest

from mmstream.cache import CacheFactory
from mmstream.registry import BackendRegistry
from mmstream.testing import CacheConformance


class TestEveryInstalledBackend(CacheConformance):
    @pytest.fixture(params=BackendRegistry().names())
    def make_cache(self, request: pytest.FixtureRequest) -> CacheFactory:
        name: str = request.param
        return BackendRegistry().load(name)


def test_the_public_surface_of_mmstream_testing() -> None:
    import mmstream.testing

    assert mmstream.testing.__all__ == ["SEGMENT", "CacheConformance", "pattern"]
