"""A real StreamManager on real files under tmp_path, for the HTTP-side tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mmstream.cache import KiB, MiB
from mmstream.config import ByteSize, CacheConfig, MmapConfig
from mmstream.registry import BackendRegistry
from mmstream.streams import StreamManager, open_stream_manager

BACKENDS = [name for name in BackendRegistry().names() if name in {"file", "mmap"}]


@pytest.fixture(params=BACKENDS)
def cache_config(request: pytest.FixtureRequest, tmp_path: Path) -> CacheConfig:
    return CacheConfig(
        directory=tmp_path / "cache",
        backend=request.param,
        initial_size=ByteSize(16 * KiB),
        max_cache_size=ByteSize(256 * MiB),
        mmap=MmapConfig(segment_size=ByteSize(1 * MiB)),
        sync_policy="finalize",
    )


@pytest.fixture
async def manager(cache_config: CacheConfig) -> AsyncIterator[StreamManager]:
    async with open_stream_manager(cache_config) as manager:
        yield manager
