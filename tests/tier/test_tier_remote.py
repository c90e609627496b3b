"""Evicted and foreign streams: reads through the bucket, restores, any node serving any
tiered stream, all against a real S3 endpoint (moto's server) and real cache files."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio
from test_tier_engine import (
    PassThrough,
    flip_first_byte,
    location,
    put_stream,
    sample,
    wait_until,
)
from test_tier_server import start

from mmstream.cache import MiB
from mmstream.client import connect
from mmstream.config import ByteSize, CacheConfig, TierConfig
from mmstream.errors import StreamNotFoundError
from mmstream.metrics import Metrics
from mmstream.streams import StreamManager, open_stream_manager
from mmstream.tier import ObjectNotFoundError, ObjectStore, Tier, data_key, open_object_store


class CountingStore(PassThrough):
    """The real S3 store, counting the requests made through it."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store)
        self.gets: list[str] = []

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return self.store.get(key)


async def run_node(
    nursery: trio.Nursery, directory: Path, config: TierConfig, store: ObjectStore | None = None,
    metrics: Metrics | None = None, **cache: object,
) -> tuple[StreamManager, Tier]:  # fmt: skip
    cache_config = CacheConfig(directory=directory, **cache)  # type: ignore[arg-type]
    tier = Tier(store or open_object_store(config), config, metrics, retry_base=0.05,
                retry_max=0.5)  # fmt: skip
    manager = await nursery.start(_manager, cache_config, metrics)
    await nursery.start(tier.run, manager)
    return manager, tier


async def _manager(
    config: CacheConfig,
    metrics: Metrics | None,
    *,
    task_status: trio.TaskStatus[StreamManager] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with open_stream_manager(config, metrics=metrics) as manager:
        task_status.started(manager)
        await trio.sleep_forever()


async def test_evicted_tiered_stream_reads_through_and_comes_back(
    nursery: trio.Nursery, tmp_path: Path, tier_config: TierConfig
) -> None:
    metrics = Metrics(process=False)
    manager, _ = await run_node(nursery, tmp_path / "c", tier_config, metrics=metrics,
                                   max_cache_size=ByteSize(5 * MiB),
                                   initial_size=ByteSize(64 * 1024))  # fmt: skip
    first = os.urandom(2 * MiB + 5)
    await put_stream(manager, "first", first)
    await wait_until(lambda: location(manager, "first") == "local+remote")
    # A stream that cannot be tiered (its bytes rotted on disk) is evicted after the
    # tiered one, even though it was used less recently.
    await put_stream(manager, "rotten", os.urandom(MiB))
    flip_first_byte(tmp_path / "c" / "rotten.data")
    await manager.read("first", 0, 1)  # "first" is the most recently used
    second = os.urandom(2 * MiB + 7)
    await put_stream(manager, "second", second)  # needs room: "first" goes
    assert location(manager, "first") == "remote"
    assert location(manager, "rotten") == "local"
    assert not (tmp_path / "c" / "first.data").exists()
    assert manager.stat("first").reserved == 0
    for offset, length in ((0, 100), (MiB - 3, 2 * MiB), (len(first) - 1, 10)):
        assert await manager.read("first", offset, length) == first[offset : offset + length]
    # Read again: it is hot, and comes back into the cache (evicting what it must).
    await wait_until(lambda: location(manager, "first") == "local+remote")
    assert (tmp_path / "c" / "first.data").stat().st_size == len(first)
    assert await manager.read("first", 0, len(first)) == first
    assert manager.reserved <= 5 * MiB
    assert sample(metrics, "mmstream_evictions_total") >= 1


async def test_any_node_serves_any_tiered_stream(
    nursery: trio.Nursery, tmp_path: Path, tier_config: TierConfig
) -> None:
    """A node that does not hold an id looks in the bucket, once however many ask."""
    one, _ = await run_node(nursery, tmp_path / "one", tier_config)
    data = os.urandom(3 * MiB + 1)
    info = await put_stream(one, "shared", data, title="Nachtprogramm")
    await wait_until(lambda: location(one, "shared") == "local+remote")

    store = CountingStore(open_object_store(tier_config))
    two, _ = await run_node(nursery, tmp_path / "two", tier_config, store)
    with pytest.raises(StreamNotFoundError):
        two.stat("shared")
    found: list[str] = []

    async def find() -> None:
        found.append((await two.find("shared")).location)

    async with trio.open_nursery() as finders:
        for _ in range(10):
            finders.start_soon(find)
    assert found == ["remote"] * 10
    assert store.gets.count("streams/shared.json") == 1
    stat = two.stat("shared")
    assert (stat.generation, stat.sha256, stat.size) == (info.generation, info.sha256, len(data))
    assert stat.metadata == {"title": "Nachtprogramm"}
    assert await two.read("shared", 5, 1000) == data[5:1005]
    with pytest.raises(StreamNotFoundError):
        await two.find("never-was")
    assert store.gets.count("streams/never-was.json") == 1
    with pytest.raises(StreamNotFoundError):
        await two.find("never-was")  # a recent miss is not asked again
    assert store.gets.count("streams/never-was.json") == 1


async def test_deleting_a_remote_stream_deletes_it_everywhere(
    nursery: trio.Nursery, tmp_path: Path, tier_config: TierConfig
) -> None:
    one, _ = await run_node(nursery, tmp_path / "one", tier_config)
    info = await put_stream(one, "bye", os.urandom(1000))
    await wait_until(lambda: location(one, "bye") == "local+remote")
    two, tier = await run_node(nursery, tmp_path / "two", tier_config)
    await two.find("bye")
    await two.delete("bye")
    await wait_until(lambda: tier.backlog == 0)
    with pytest.raises(ObjectNotFoundError):
        tier.store.get(data_key("bye", info.generation))
    with pytest.raises(StreamNotFoundError):
        await two.find("bye")


async def test_a_node_serves_another_nodes_stream_over_http_and_websocket(
    nursery: trio.Nursery, tmp_path: Path, tier_config: TierConfig
) -> None:
    one = await start(nursery, tmp_path / "one", tier_config)
    two = await start(nursery, tmp_path / "two", tier_config)
    data = os.urandom(MiB + 333)
    async with connect(one.url) as client:
        await client.upload("song", data, content_type="audio/mpeg")
        with trio.fail_after(30):
            for _ in range(10_000):
                if (await client.stat("song")).location == "local+remote":
                    break
                await trio.sleep(0.05)
    url = f"{two.http_url}/streams/song"
    reply = await trio.to_thread.run_sync(
        lambda: httpx.get(url, headers={"Range": "bytes=1000-2999"})
    )
    assert reply.status_code == 206
    assert reply.content == data[1000:3000]
    assert reply.headers["content-type"].startswith("audio/mpeg")
    async with connect(two.url) as client:
        stat = await client.stat("song")
        assert stat.location == "remote"
        assert await client.read("song", 0, len(data)) == data
    whole = await trio.to_thread.run_sync(lambda: httpx.get(url))
    assert whole.status_code == 200 and whole.content == data
    async with connect(two.url) as client:  # tail of a finished remote stream: its bytes, end
        follower = await client.tail("song", 0)
        got = b"".join([piece async for piece in follower])
        assert got == data
    one.shutdown()
    two.shutdown()


async def test_remote_streams_leave_no_files_behind_a_restart(
    tmp_path: Path, tier_config: TierConfig
) -> None:
    """A remote stream has no sidecar, and shutdown (which records lagging sidecars) must
    not write one: a sidecar without data would be an ERROR stream after the restart."""
    data = os.urandom(2 * MiB)
    async with trio.open_nursery() as nursery:
        one, _ = await run_node(nursery, tmp_path / "one", tier_config,
                                max_cache_size=ByteSize(3 * MiB),
                                initial_size=ByteSize(64 * 1024))  # fmt: skip
        await put_stream(one, "evicted", data)
        await wait_until(lambda: location(one, "evicted") == "local+remote")
        await put_stream(one, "newer", os.urandom(2 * MiB))
        assert location(one, "evicted") == "remote"
        two, _ = await run_node(nursery, tmp_path / "two", tier_config)
        await two.find("evicted")
        nursery.cancel_scope.cancel()
    for directory in (tmp_path / "one", tmp_path / "two"):
        assert not (directory / "evicted.json").exists()
        assert not (directory / "evicted.data").exists()
        async with open_stream_manager(CacheConfig(directory=directory)) as manager:
            assert [i.stream_id for i in manager.list() if i.status.value == "error"] == []
            with pytest.raises(StreamNotFoundError):
                manager.stat("evicted")
