"""Test 5, quota and expiry: a 64 MiB cap under 50 concurrent uploads never has more blocks
allocated than the cap; eviction takes READY streams least recently accessed first (an
order that survives a restart) and never one in use; idle uploads expire."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.lowlevel
from faulty import load_backend, one_backend
from soak import rounds
from workload import chunk

from mmstream.cache import KiB, MiB
from mmstream.config import ByteSize, CacheConfig, MmapConfig
from mmstream.errors import QuotaExceededError, StreamNotFoundError
from mmstream.streams import StreamManager, StreamStatus, open_stream_manager

#: The allowance per stream for its sidecar (one block, and one more while it is replaced).
SIDECAR_ALLOWANCE = 8 * KiB


def allocated(directory: Path) -> tuple[int, int, int]:
    """Bytes allocated (st_blocks * 512) to data files, to every file, and the file count."""
    data = total = count = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                blocks = entry.stat(follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:  # removed while we looked
                continue
            total += blocks
            count += 1
            if entry.name.endswith(".data"):
                data += blocks
    return data, total, count


def config_for(directory: Path, backend: str, **changes: object) -> CacheConfig:
    settings: dict[str, object] = {
        "directory": directory,
        "backend": backend,
        "initial_size": ByteSize(256 * KiB),
        "max_cache_size": ByteSize(64 * MiB),
        "mmap": MmapConfig(segment_size=ByteSize(4 * MiB)),
        "sync_policy": "interval",
        "sync_interval": 0.05,
        "on_full": "evict",
    }
    settings.update(changes)
    return CacheConfig(**settings)  # type: ignore[arg-type]


async def test_fifty_uploads_never_exceed_the_cap(
    ram_path: Path,
    backend: str,
    caplog: pytest.LogCaptureFixture,
    figure: Callable[[str, str, str], None],
) -> None:
    caplog.set_level(logging.WARNING, logger="mmstream.streams")
    config = config_for(ram_path / "cache", backend)
    uploads = 50
    waves = rounds(2, 8)
    peak = peak_total = rejected = finished = 0

    def sample() -> None:
        nonlocal peak, peak_total
        data, total, count = allocated(config.directory)
        peak = max(peak, data)
        peak_total = max(peak_total, total)
        assert total <= config.max_cache_size + SIDECAR_ALLOWANCE * count // 2
        assert data <= config.max_cache_size, f"{data} bytes allocated to data"

    async def upload(manager: StreamManager, sid: str, size: int, seed: int) -> None:
        nonlocal rejected, finished
        rng = random.Random(seed)
        try:
            await manager.create(sid)
        except QuotaExceededError:
            rejected += 1
            return
        sent = 0
        try:
            while sent < size:
                piece = chunk(sid, sent, min(rng.choice([16, 64, 192]) * KiB, size - sent))
                sent = await manager.append(sid, piece)
                sample()
                await trio.lowlevel.checkpoint()
        except QuotaExceededError:
            rejected += 1
            await manager.delete(sid)  # the client gives up; its space comes back
            return
        await manager.finalize(sid)
        finished += 1
        sample()

    async with open_stream_manager(config, registry=one_backend(load_backend(backend))) as m:
        for wave in range(waves):
            async with trio.open_nursery() as nursery:
                for n in range(uploads):
                    size = random.Random(wave * 1000 + n).randrange(256 * KiB, 3 * MiB)
                    nursery.start_soon(upload, m, f"w{wave}-u{n}", size, n)
            sample()
            assert m.reserved <= config.max_cache_size
    evictions = len(evicted(caplog))
    assert finished > 0 and evictions > 0  # the cap was reached and eviction happened
    figure(
        "5. Quota",
        f"{backend} backend: 64 MiB cap, {waves} waves of {uploads} concurrent uploads of "
        f"0.25-3 MiB (~{waves * uploads * 1.6:.0f} MiB offered), on_full = evict; "
        "st_blocks sampled after every append",
        f"peak data blocks {peak / MiB:.2f} MiB <= 64 MiB (with sidecars "
        f"{peak_total / MiB:.2f} MiB); {finished} finished, {evictions} READY evicted, "
        f"{rejected} uploads refused with quota",
    )


def evicted(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(r.args[0]) for r in caplog.records  # type: ignore[index]
            if "evicted" in r.getMessage()]  # fmt: skip


async def make_ready(manager: StreamManager, sid: str, size: int) -> None:
    await manager.create(sid)
    await manager.append(sid, chunk(sid, 0, size))
    await manager.finalize(sid)


async def test_eviction_is_lru_and_survives_a_restart(
    ram_path: Path,
    backend: str,
    caplog: pytest.LogCaptureFixture,
    figure: Callable[[str, str, str], None],
) -> None:
    config = config_for(
        ram_path / "cache", backend, max_cache_size=ByteSize(1 * MiB),
        initial_size=ByteSize(128 * KiB),
    )  # fmt: skip
    names = [f"s{n}" for n in range(6)]
    order = ["s3", "s0", "s5", "s1", "s4", "s2"]  # read in this order: s3 is least recent
    registry = one_backend(load_backend(backend))
    async with open_stream_manager(config, registry=registry) as manager:
        for sid in names:
            await make_ready(manager, sid, 128 * KiB)
        for sid in order:
            await manager.read(sid, 0, 10)
            await trio.sleep(0.01)  # distinct access times
    # A restart: the access times were recorded at shutdown.
    caplog.set_level(logging.WARNING, logger="mmstream.streams")
    async with open_stream_manager(config, registry=registry) as manager:
        with manager.hold("s3"):  # held (a response in flight): never evicted
            await make_ready(manager, "big", 640 * KiB)  # 3 x 128 KiB more than is free
        assert evicted(caplog) == ["s0", "s5", "s1"]  # least recent first, s3 skipped
        assert sorted(i.stream_id for i in manager.list()) == ["big", "s2", "s3", "s4"]
        await make_ready(manager, "more", 100 * KiB)
        assert evicted(caplog)[3:] == ["s3"]  # no longer held: the least recent
    figure(
        "5. Quota",
        f"{backend} backend: 1 MiB cap, 6 READY streams read in a known order, a restart, "
        "then new streams needing room while one stream is held",
        "evicted exactly in least-recently-read order across the restart; the held stream "
        "was skipped until released",
    )


async def test_eviction_spares_uploads_and_followed_streams_and_reject_rejects(
    ram_path: Path, backend: str
) -> None:
    config = config_for(
        ram_path / "cache", backend, max_cache_size=ByteSize(512 * KiB),
        initial_size=ByteSize(128 * KiB),
    )  # fmt: skip
    registry = one_backend(load_backend(backend))
    async with open_stream_manager(config, registry=registry) as manager:
        await make_ready(manager, "old", 128 * KiB)
        await manager.create("up")
        await manager.append("up", chunk("up", 0, 128 * KiB))
        # 640 KiB cannot fit even with "old" gone: nothing is evicted for nothing.
        with pytest.raises(QuotaExceededError):
            await manager.append("up", chunk("up", 1, 512 * KiB))
        assert {i.stream_id for i in manager.list()} == {"old", "up"}
        for sid in ("x", "y"):  # the cap is reached, every reservation written into
            await manager.create(sid)
            await manager.append(sid, chunk(sid, 0, 128 * KiB))
        async with trio.open_nursery() as nursery:  # followed uploads are spared too
            nursery.start_soon(manager.wait_for_data, "x", 128 * KiB)
            await trio.sleep(0.01)
            await manager.create("z")  # reserves nothing: a create evicts nothing
            assert {i.stream_id for i in manager.list()} == {"old", "up", "x", "y", "z"}
            await manager.append("z", chunk("z", 0, 128 * KiB))  # evicts the one READY stream
            assert {i.stream_id for i in manager.list()} == {"up", "x", "y", "z"}
            with pytest.raises(QuotaExceededError):
                await manager.create("w")  # only uploads are left: none is evicted
            nursery.cancel_scope.cancel()
        assert {i.stream_id for i in manager.list()} == {"up", "x", "y", "z"}
    reject = config_for(
        ram_path / "cache2", backend, max_cache_size=ByteSize(256 * KiB),
        initial_size=ByteSize(128 * KiB), on_full="reject",
    )  # fmt: skip
    async with open_stream_manager(reject, registry=registry) as manager:
        await make_ready(manager, "old", 128 * KiB)
        await make_ready(manager, "old2", 128 * KiB)
        with pytest.raises(QuotaExceededError):
            await manager.create("new")
        assert len(manager.list()) == 2


async def test_idle_uploads_expire(
    ram_path: Path, backend: str, figure: Callable[[str, str, str], None]
) -> None:
    config = config_for(ram_path / "cache", backend, upload_ttl=0.3, sync_interval=0.02)
    registry = one_backend(load_backend(backend))
    async with open_stream_manager(config, registry=registry) as manager:
        await manager.create("idle")
        await manager.append("idle", b"abandoned")
        await manager.create("busy")
        await make_ready(manager, "done", 1000)
        follower_saw: list[type[BaseException]] = []

        async def follow() -> None:
            try:
                await manager.wait_for_data("idle", 100)
            except StreamNotFoundError as exc:
                follower_saw.append(type(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            for n in range(40):  # 0.8 s: "busy" keeps writing, "idle" does not
                await manager.append("busy", b"x")
                await trio.sleep(0.02)
                if n == 30:
                    assert "idle" not in {i.stream_id for i in manager.list()}
        names = {i.stream_id for i in manager.list()}
        assert names == {"busy", "done"}
        assert manager.stat("busy").status is StreamStatus.UPLOADING
        assert follower_saw == [StreamNotFoundError]
    assert sorted(os.listdir(config.directory)) == ["busy.data", "busy.json", "busy.sum",
                                                    "done.data", "done.json"]  # fmt: skip
    figure(
        "5. Quota",
        f"{backend} backend: upload_ttl 0.3 s; one upload idle, one writing every 20 ms, "
        "one READY stream, a follower waiting on the idle one",
        "the idle upload's files removed within 0.6 s and its follower told not-found; the "
        "others untouched",
    )


async def test_creates_never_evict_ready_streams_only_written_bytes_do(
    ram_path: Path,
    backend: str,
    caplog: pytest.LogCaptureFixture,
    figure: Callable[[str, str, str], None],
) -> None:
    """Regression (issue 14, item 2): ten empty creates in a cache full of READY recordings
    used to evict ten of them. A create's reservation is speculative: it takes what is free
    (here nothing) and evicts nothing; the bytes written later evict what they need."""
    caplog.set_level(logging.WARNING, logger="mmstream.streams")
    config = config_for(ram_path / "cache", backend, max_cache_size=ByteSize(1 * MiB),
                        initial_size=ByteSize(128 * KiB))  # fmt: skip
    async with open_stream_manager(config, registry=one_backend(load_backend(backend))) as manager:
        recordings = [f"rec{n}" for n in range(8)]
        for sid in recordings:
            await make_ready(manager, sid, 128 * KiB)  # 8 x 128 KiB: the cache is full
        for n in range(10):
            info = await manager.create(f"live-{n}")
            assert info.reserved == 0  # nothing is free: nothing reserved
        assert evicted(caplog) == []
        assert [i.stream_id for i in manager.list() if i.status is StreamStatus.READY] == (
            recordings
        )
        assert manager.reserved <= config.max_cache_size
        # Bytes written need room: now the least recently used recording goes, one only.
        await manager.append("live-0", chunk("live-0", 0, 64 * KiB))
        assert evicted(caplog) == ["rec0"]
        assert manager.reserved <= config.max_cache_size
    figure(
        "5. Quota (creates)",
        f"{backend} backend: 1 MiB cap full of 8 READY recordings, `on_full = evict`; "
        "10 empty creates, then 64 KiB written to one of them",
        "the creates reserved nothing and evicted 0 recordings; the write evicted 1 (the "
        "least recently used)",
    )


async def test_creates_claim_a_block_each_against_what_could_be_evicted(
    ram_path: Path, backend: str
) -> None:
    """Streams created with nothing reserved still count one block each (what their first
    write may evict), so their number stays bounded by the quota as before."""
    config = config_for(ram_path / "cache", backend, max_cache_size=ByteSize(64 * KiB),
                        initial_size=ByteSize(16 * KiB))  # fmt: skip
    async with open_stream_manager(config, registry=one_backend(load_backend(backend))) as manager:
        for n in range(4):
            await make_ready(manager, f"rec{n}", 16 * KiB)  # full
        for n in range(16):  # 16 x 4 KiB: what the four recordings could give back
            await manager.create(f"live-{n}")
        with pytest.raises(QuotaExceededError):
            await manager.create("one-too-many")
        assert len([i for i in manager.list() if i.status is StreamStatus.READY]) == 4


async def test_unwritten_reservations_give_way_before_ready_streams(
    ram_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Empty creates that took every free byte must not make the next writer evict: bytes
    that need room take it first from reservations nobody wrote into (the longest idle
    first, only what is needed), and READY streams go only when that is not enough."""
    caplog.set_level(logging.WARNING, logger="mmstream.streams")
    config = config_for(ram_path / "cache", backend, max_cache_size=ByteSize(1 * MiB),
                        initial_size=ByteSize(256 * KiB))  # fmt: skip
    async with open_stream_manager(config, registry=one_backend(load_backend(backend))) as manager:
        await make_ready(manager, "rec0", 256 * KiB)
        await make_ready(manager, "rec1", 256 * KiB)
        await manager.create("empty0")
        await trio.sleep(0.01)
        await manager.create("empty1")  # the cache is full: 512 KiB READY, 512 KiB unwritten
        await manager.create("writer")
        await manager.append("writer", chunk("writer", 0, 100 * KiB))
        assert evicted(caplog) == []
        assert manager.stat("empty0").reserved == 156 * KiB  # the longest idle gave 100 KiB
        assert manager.stat("empty1").reserved == 256 * KiB
        await manager.append("writer", chunk("writer", 1, 400 * KiB))
        assert evicted(caplog) == []
        assert manager.stat("empty0").reserved + manager.stat("empty1").reserved <= 12 * KiB
        await manager.append("writer", chunk("writer", 2, 200 * KiB))  # now a READY one goes
        assert evicted(caplog) == ["rec0"]
        assert manager.reserved <= config.max_cache_size
    data = sum(os.stat(p).st_blocks * 512 for p in config.directory.glob("*.data"))
    assert data <= config.max_cache_size
