"""The manager reports what it does to the Metrics it was given."""

from __future__ import annotations

import attrs

from mmstream.config import CacheConfig
from mmstream.metrics import Metrics
from mmstream.streams import open_stream_manager


async def test_writes_reads_and_syncs_are_measured(cache_config: CacheConfig) -> None:
    metrics = Metrics(process=False)
    value = metrics.registry.get_sample_value
    config = attrs.evolve(cache_config, sync_policy="always")
    async with open_stream_manager(config, metrics=metrics) as manager:
        await manager.create("s")
        await manager.append("s", b"x" * 1000)
        await manager.append("s", b"y" * 100_000)  # past the initial size: a threaded write
        await manager.append("s", b"")
        assert await manager.read("s", 0, 10) == b"x" * 10
        await manager.read("s", 0, 101_000)
    assert value("mmstream_bytes_in_total") == 101_000
    assert value("mmstream_write_seconds_count") == 2
    assert value("mmstream_read_seconds_count") == 2
    assert value("mmstream_fsync_seconds_count") == 2  # sync_policy = "always"


async def test_no_metrics_no_cost(cache_config: CacheConfig) -> None:
    async with open_stream_manager(cache_config) as manager:
        await manager.create("s")
        assert await manager.append("s", b"abc") == 3
        assert await manager.read("s", 0, 3) == b"abc"
