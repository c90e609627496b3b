"""The manager reports what it does to the Metrics it was given."""

from __future__ import annotations

import attrs
import trio

from mmstream.cache import KiB
from mmstream.config import ByteSize, CacheConfig
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


async def test_evictions_are_counted(cache_config: CacheConfig) -> None:
    """Regression (issue 14, item 2): ``mmstream_evictions_total`` stayed 0."""
    metrics = Metrics(process=False)
    value = metrics.registry.get_sample_value
    config = attrs.evolve(cache_config, max_cache_size=ByteSize(64 * KiB), on_full="evict")
    async with open_stream_manager(config, metrics=metrics) as manager:
        for sid in ("a", "b"):
            await manager.create(sid)
            await manager.append(sid, b"x" * 32 * KiB)
            await manager.finalize(sid)
        assert value("mmstream_evictions_total") == 0
        await manager.create("c")
        assert value("mmstream_evictions_total") == 0  # a create evicts nothing
        await manager.append("c", b"y" * 30 * KiB)  # written bytes need room: "a" goes
        assert [i.stream_id for i in manager.list()] == ["b", "c"]
    assert value("mmstream_evictions_total") == 1
    assert value("mmstream_expiries_total") == 0


async def test_expiries_are_counted(cache_config: CacheConfig) -> None:
    """Regression (issue 14, item 2): ``mmstream_expiries_total`` stayed 0."""
    metrics = Metrics(process=False)
    value = metrics.registry.get_sample_value
    config = attrs.evolve(cache_config, upload_ttl=0.05, sync_interval=60.0)
    async with open_stream_manager(config, metrics=metrics) as manager:
        await manager.create("idle")
        await manager.append("idle", b"abandoned")
        await trio.sleep(0.1)
        await manager.housekeep()
        assert manager.list() == []
    assert value("mmstream_expiries_total") == 1
    assert value("mmstream_evictions_total") == 0
