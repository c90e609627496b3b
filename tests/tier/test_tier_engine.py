"""The tier engine with a real manager (real files) and a real S3 endpoint (moto's server)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from tier_moto import MotoServer

from mmstream.cache import Buffer, MiB
from mmstream.config import CacheConfig, TierConfig
from mmstream.metrics import Metrics
from mmstream.streams import StreamInfo, StreamManager, open_stream_manager
from mmstream.tier import (
    Manifest,
    ObjectNotFoundError,
    ObjectStore,
    Tier,
    data_key,
    manifest_key,
    open_object_store,
)


@asynccontextmanager
async def tiered_manager(
    directory: Path, config: TierConfig, metrics: Metrics | None = None
) -> AsyncIterator[tuple[StreamManager, Tier]]:
    tier = Tier(open_object_store(config), config, metrics, retry_base=0.05, retry_max=0.5)
    async with (
        open_stream_manager(CacheConfig(directory=directory), metrics=metrics) as manager,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(tier.run, manager)
        yield manager, tier
        nursery.cancel_scope.cancel()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def flip_first_byte(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"b")


async def wait_until(condition: Callable[[], bool], limit: float = 30.0) -> None:
    with trio.fail_after(limit):
        for _ in range(100_000):
            if condition():
                return
            await trio.sleep(0.02)


def location(manager: StreamManager, stream_id: str) -> str:
    return manager.stat(stream_id).location


async def put_stream(
    manager: StreamManager, stream_id: str, data: bytes, **metadata: str
) -> StreamInfo:
    await manager.create(stream_id, content_type="audio/ogg", metadata=metadata)
    for offset in range(0, len(data), MiB):
        await manager.append(stream_id, data[offset : offset + MiB])
    return await manager.finalize(stream_id, sha256=hashlib.sha256(data).hexdigest())


async def test_ready_stream_is_copied_whole_with_its_manifest(
    tmp_path: Path, tier_config: TierConfig
) -> None:
    data = os.urandom(20 * MiB + 77)  # a multipart upload of 16 MiB parts
    metrics = Metrics(process=False)
    async with tiered_manager(tmp_path / "c", tier_config, metrics) as (manager, tier):
        info = await put_stream(manager, "show", data, title="Grüße aus Köln")
        assert info.location == "local"
        await wait_until(lambda: location(manager, "show") == "local+remote")
        store = tier.store
        assert store.get(data_key("show", info.generation)) == data
        assert (
            store.get_range(data_key("show", info.generation), 16 * MiB - 5, 10)
            == (data[16 * MiB - 5 : 16 * MiB + 5])
        )
        manifest = Manifest.decode(store.get(manifest_key("show")), "show")
        assert manifest == Manifest.of(manager.stat("show"))
        assert manifest.metadata == {"title": "Grüße aus Köln"}
        assert tier.backlog == 0
        assert sample(metrics, "mmstream_tier_uploads_total") == 1
        assert sample(metrics, "mmstream_tier_uploaded_bytes_total") == len(data)
        assert sample(metrics, "mmstream_tier_backlog") == 0


async def test_uploading_and_empty_streams(tmp_path: Path, tier_config: TierConfig) -> None:
    async with tiered_manager(tmp_path / "c", tier_config) as (manager, tier):
        await manager.create("live")
        await manager.append("live", b"not finished")
        empty = await put_stream(manager, "empty", b"")
        await wait_until(lambda: location(manager, "empty") == "local+remote")
        assert tier.store.get(data_key("empty", empty.generation)) == b""
        with pytest.raises(ObjectNotFoundError):
            tier.store.get(manifest_key("live"))  # only READY streams are copied
        assert location(manager, "live") == "local"


async def test_delete_deletes_everywhere(tmp_path: Path, tier_config: TierConfig) -> None:
    async with tiered_manager(tmp_path / "c", tier_config) as (manager, tier):
        info = await put_stream(manager, "gone", os.urandom(1000))
        await wait_until(lambda: location(manager, "gone") == "local+remote")
        await manager.delete("gone")
        await wait_until(lambda: tier.backlog == 0)
        for key in (manifest_key("gone"), data_key("gone", info.generation)):
            with pytest.raises(ObjectNotFoundError):
                tier.store.get(key)


async def test_restart_finds_its_copies_and_uploads_nothing_again(
    tmp_path: Path, tier_config: TierConfig
) -> None:
    async with tiered_manager(tmp_path / "c", tier_config) as (manager, _):
        await put_stream(manager, "kept", os.urandom(3000))
        await wait_until(lambda: location(manager, "kept") == "local+remote")
    metrics = Metrics(process=False)
    async with tiered_manager(tmp_path / "c", tier_config, metrics) as (manager, tier):
        await wait_until(lambda: location(manager, "kept") == "local+remote")
        assert tier.backlog == 0
        assert sample(metrics, "mmstream_tier_uploads_total") == 0


async def test_a_stream_whose_bytes_changed_on_disk_is_not_copied(
    tmp_path: Path, tier_config: TierConfig
) -> None:
    """The upload hashes what it reads: bytes that no longer match the stream's sha256
    (a disk that flipped a bit) never complete an upload."""
    metrics = Metrics(process=False)
    directory = tmp_path / "d"
    async with open_stream_manager(CacheConfig(directory=directory)) as manager:
        await put_stream(manager, "rot", b"a" * 10_000)
    flip_first_byte(directory / "rot.data")
    async with tiered_manager(directory, tier_config, metrics) as (manager, tier):
        await wait_until(lambda: sample(metrics, "mmstream_tier_errors_total", op="upload") > 0)
        # Abandoned, not retried: a job to retry would be back in the backlog by now (the
        # error is counted in the step that schedules a retry), whatever the load.
        assert tier.backlog == 0
        assert sample(metrics, "mmstream_tier_errors_total", op="upload") == 1
        assert location(manager, "rot") == "local"
        with pytest.raises(ObjectNotFoundError):
            tier.store.get(manifest_key("rot"))
        with pytest.raises(ObjectNotFoundError):
            tier.store.get(data_key("rot", manager.stat("rot").generation))


async def test_bucket_outage_keeps_local_streams_and_nothing_is_lost(
    tmp_path: Path, own_moto: MotoServer
) -> None:
    """The bucket stops answering mid-tiering (SIGSTOP) and comes back: local reads go on,
    /metrics shows the backlog and the errors, and every stream is copied in the end."""
    own_moto.create_bucket("outage")
    config = TierConfig(enabled=True, endpoint=own_moto.endpoint, bucket="outage",
                        request_timeout=0.5)  # fmt: skip
    metrics = Metrics(process=False)
    streams = {f"s{i}": os.urandom(200_000 + i) for i in range(6)}
    async with tiered_manager(tmp_path / "c", config, metrics) as (manager, tier):
        await put_stream(manager, "s0", streams["s0"])
        await wait_until(lambda: location(manager, "s0") == "local+remote")
        own_moto.pause()
        try:
            for sid, data in list(streams.items())[1:]:
                await put_stream(manager, sid, data)
            await wait_until(lambda: sample(metrics, "mmstream_tier_errors_total", op="upload") > 0)
            assert sample(metrics, "mmstream_tier_backlog") > 0
            for sid, data in streams.items():  # local streams work throughout
                assert await manager.read(sid, 0, len(data)) == data
        finally:
            own_moto.resume()
        await wait_until(lambda: all(location(manager, s) == "local+remote" for s in streams))
        store: ObjectStore = tier.store
        for sid, data in streams.items():
            assert store.get(data_key(sid, manager.stat(sid).generation)) == data
        assert tier.backlog == 0


class PassThrough:
    """The real store behind a wrapper: tests override the calls they watch."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def put(
        self, key: str, chunks: Iterable[Buffer], *, size: int, attributes: Mapping[str, str]
    ) -> None:
        self.store.put(key, chunks, size=size, attributes=attributes)

    def get(self, key: str) -> bytes:
        return self.store.get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.store.get_range(key, start, length)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def check(self) -> None:
        self.store.check()


class GatedStore(PassThrough):
    """Uploads wait at a gate: how many are under way at once."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store)
        self.gate = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()

    def put(
        self, key: str, chunks: Iterable[Buffer], *, size: int, attributes: Mapping[str, str]
    ) -> None:
        with self._lock:
            self.waiting += 1
        self.gate.wait(60)
        super().put(key, chunks, size=size, attributes=attributes)


async def test_new_work_wakes_every_idle_worker(tmp_path: Path, tier_config: TierConfig) -> None:
    """The regression test for the lost wake-up: on main each idle worker made its own
    wake-up event in turn and new work set only the last one made, so of
    ``upload_concurrency`` idle workers one took work and the others slept until a retry
    was due (uploads went one at a time)."""
    store = GatedStore(open_object_store(tier_config))
    tier = Tier(store, tier_config, retry_base=0.05, retry_max=0.5)
    assert tier_config.upload_concurrency == 2
    async with (
        open_stream_manager(CacheConfig(directory=tmp_path / "c")) as manager,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(tier.run, manager)
        await trio.testing.wait_all_tasks_blocked()  # both workers idle
        try:
            await put_stream(manager, "a", b"a" * 1000)
            await put_stream(manager, "b", b"b" * 1000)
            await wait_until(lambda: store.waiting == 2, limit=10)
        finally:
            store.gate.set()
        await wait_until(lambda: {location(manager, s) for s in "ab"} == {"local+remote"})
        nursery.cancel_scope.cancel()
