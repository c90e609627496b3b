"""The example plugin tests itself exactly as an outside backend would."""

from __future__ import annotations

import pytest
from mmstream_example_backend import BufferedFileCache

from mmstream.cache import CacheFactory
from mmstream.registry import BackendRegistry
from mmstream.testing import CacheConformance


class TestBufferedFileCache(CacheConformance):
    @pytest.fixture
    def make_cache(self) -> CacheFactory:
        return BufferedFileCache


def test_registered_as_example() -> None:
    assert BackendRegistry().load("example") is BufferedFileCache
