from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from mmstream.cache import MAX_FILE_SIZE, KiB, MiB
from mmstream.config import ByteSize, CacheConfig
from mmstream.errors import (
    CacheClosedError,
    ChecksumMismatchError,
    ConfigError,
    InvalidArgumentError,
    NotUploadingError,
    OffsetConflictError,
    OutOfRangeError,
    QuotaExceededError,
    StreamExistsError,
    StreamNotFoundError,
    TooLargeError,
)
from mmstream.streams import StreamStatus, open_stream_manager


def _pattern(size: int, seed: int = 0) -> bytes:
    """Bytes that differ at every offset, so a misplaced copy shows."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def test_create_append_read_stat(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        info = await manager.create("s1", content_type="audio/ogg", metadata={"title": "t"})
        assert (info.status, info.size, info.content_type) == (
            StreamStatus.UPLOADING,
            0,
            "audio/ogg",
        )
        assert dict(info.metadata) == {"title": "t"}
        assert info.reserved == config.initial_size
        assert await manager.append("s1", b"hello ") == 6
        assert await manager.append("s1", bytearray(b"world"), expected_offset=6) == 11
        assert await manager.append("s1", memoryview(b"")) == 11
        assert await manager.read("s1", 0, 100) == b"hello world"
        assert await manager.read("s1", 6, 3) == b"wor"
        assert await manager.read("s1", 11, 5) == b""
        stat = manager.stat("s1")
        assert (stat.size, stat.durable_offset, stat.sha256) == (11, 0, None)
        assert [i.stream_id for i in manager.list()] == ["s1"]
        with pytest.raises(StreamExistsError):
            await manager.create("s1")
        with pytest.raises(StreamNotFoundError):
            manager.stat("nope")
        with pytest.raises(StreamNotFoundError):
            await manager.append("nope", b"x")


async def test_files_live_in_the_cache_directory_private(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.flush("s")
    names = sorted(os.listdir(config.directory))
    assert names == ["s.data", "s.json", "s.sum"]
    assert os.stat(config.directory).st_mode & 0o777 == 0o700
    for name in names:
        assert os.stat(config.directory / name).st_mode & 0o077 == 0


async def test_a_second_manager_on_the_same_directory_is_refused(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        with pytest.raises(ConfigError, match="in use by another mmstream server"):
            async with open_stream_manager(config):
                pass  # pragma: no cover
        assert manager.stat("s").size == 0
    async with open_stream_manager(config) as manager:  # released with the first
        assert [info.stream_id for info in manager.list()] == ["s"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"content_type": ""}, "content_type"),
        ({"content_type": "a\nb"}, "content_type"),
        ({"content_type": "x" * 256}, "content_type"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": {"": "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 1025}}, "metadata"),
        ({"metadata": {str(i): "" for i in range(65)}}, "metadata"),
        ({"metadata": ["k"]}, "metadata"),
    ],
)
async def test_create_rejects_bad_arguments(
    config: CacheConfig, kwargs: dict[str, object], match: str
) -> None:
    async with open_stream_manager(config) as manager:
        with pytest.raises(InvalidArgumentError, match=match):
            await manager.create("s", **kwargs)  # type: ignore[arg-type]
        assert manager.list() == []
    assert os.listdir(config.directory) == []


@pytest.mark.parametrize(
    "metadata",
    [{"k": "v" * 1025}, {"k" * 129: "v"}, {str(i): "" for i in range(65)}],
)
async def test_metadata_past_its_limits_is_too_large(
    config: CacheConfig, metadata: dict[str, str]
) -> None:
    async with open_stream_manager(config) as manager:
        with pytest.raises(TooLargeError, match="metadata"):
            await manager.create("s", metadata=metadata)


async def test_resume_through_offset_conflict(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", b"abc", expected_offset=0)
        # A client that lost track (reconnect) sends its idea of the offset: wrong.
        with pytest.raises(OffsetConflictError) as info:
            await manager.append("s", b"def", expected_offset=0)
        assert info.value.actual == 3
        assert info.value.code == "offset-conflict"
        with pytest.raises(OffsetConflictError):
            await manager.append("s", b"def", expected_offset=10)
        # ...and resumes at the offset the error carried, without duplicating bytes.
        await manager.append("s", b"def", expected_offset=info.value.actual)
        assert await manager.read("s", 0, 10) == b"abcdef"
        for bad in (-1, 2**64, "3", 1.5, True):
            with pytest.raises(InvalidArgumentError):
                await manager.append("s", b"x", expected_offset=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            await manager.append("s", "text")  # type: ignore[arg-type]
        assert manager.stat("s").size == 6


async def test_hostile_numbers_in_read(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", b"0123456789")
        end = 10
        for offset in (-1, -(2**63), 2**64, 2**63, MAX_FILE_SIZE, end + 1):
            with pytest.raises(InvalidArgumentError):
                await manager.read("s", offset, 1)
        with pytest.raises(OutOfRangeError):
            await manager.read("s", end + 1, 0)
        for length in (-1, -(2**63), 2**64):
            with pytest.raises(InvalidArgumentError):
                await manager.read("s", 0, length)
        for bad in ("1", 1.0, None, True):
            with pytest.raises(InvalidArgumentError):
                await manager.read("s", bad, 1)  # type: ignore[arg-type]
        assert await manager.read("s", 0, MAX_FILE_SIZE) == b"0123456789"
        assert await manager.read("s", end, 2**63 - 1) == b""
        assert await manager.read("s", 0, 0) == b""
        for offset in (-1, 2**64):
            with pytest.raises(InvalidArgumentError):
                await manager.wait_for_data("s", offset)


async def test_a_size_hint_makes_the_first_reservation_no_larger(
    configure: Callable[..., CacheConfig],
) -> None:
    """A clip says its size in ``create``: it reserves that (in whole blocks), not the
    default ``initial_size``; a hint is never more than ``initial_size`` and never a limit."""
    config = configure(initial_size=ByteSize(MiB))
    data = _pattern(40_000)
    async with open_stream_manager(config) as manager:
        assert (await manager.create("clip", size_hint=16 * KiB)).reserved == 16 * KiB
        assert (await manager.create("odd", size_hint=5000)).reserved == 8 * KiB
        assert (await manager.create("empty", size_hint=0)).reserved == 4 * KiB
        assert (await manager.create("big", size_hint=10 * MiB)).reserved == MiB
        assert (await manager.create("plain")).reserved == MiB
        with pytest.raises(InvalidArgumentError):
            await manager.create("bad", size_hint=-1)
        assert await manager.append("odd", data) == len(data)  # the hint was wrong: it grows
        info = await manager.finalize("odd", expected_size=len(data))
        assert await manager.read("odd", 0, len(data) + 1) == data
        assert info.size == len(data)


async def test_large_writes_and_reads_go_through_threads(config: CacheConfig) -> None:
    data = _pattern(3 * MiB + 17)
    async with open_stream_manager(config) as manager:
        await manager.create("big")
        # small appends that outgrow the 16 KiB reservation, then a large one
        await manager.append("big", data[:10_000])
        await manager.append("big", data[10_000:40_000])
        await manager.append("big", data[40_000:])
        assert manager.stat("big").reserved >= len(data)
        assert await manager.read("big", 0, len(data)) == data
        assert await manager.read("big", MiB - 5, 2 * MiB) == data[MiB - 5 : 3 * MiB - 5]
        info = await manager.finalize("big", expected_size=len(data))
        assert info.reserved == len(data)
        assert await manager.read("big", 0, len(data)) == data


async def test_finalize_checks_before_going_ready(config: CacheConfig) -> None:
    data = _pattern(100_000)
    digest = hashlib.sha256(data).hexdigest()
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", data)
        with pytest.raises(ChecksumMismatchError, match="holds 100000 bytes"):
            await manager.finalize("s", expected_size=99_999)
        with pytest.raises(ChecksumMismatchError, match="sha256"):
            await manager.finalize("s", sha256=hashlib.sha256(b"other").hexdigest())
        for bad in ("abc", "g" * 64, 123):
            with pytest.raises(InvalidArgumentError):
                await manager.finalize("s", sha256=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            await manager.finalize("s", expected_size=-1)
        assert manager.stat("s").status is StreamStatus.UPLOADING
        await manager.append("s", b"more")  # still writable after a failed finalize
        data += b"more"
        info = await manager.finalize(
            "s", expected_size=len(data), sha256=hashlib.sha256(data).hexdigest().upper()
        )
        assert info.status is StreamStatus.READY
        assert info.sha256 == hashlib.sha256(data).hexdigest() != digest
        assert info.durable_offset == info.size == len(data)
        assert info.finalized_at is not None
        with pytest.raises(NotUploadingError):
            await manager.append("s", b"x")
        with pytest.raises(NotUploadingError):
            await manager.finalize("s")
        assert await manager.read("s", 0, len(data)) == data
        assert (await manager.flush("s")).status is StreamStatus.READY


async def test_finalize_an_empty_stream(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("empty")
        info = await manager.finalize("empty", expected_size=0, sha256=hashlib.sha256().hexdigest())
        assert (info.status, info.size) == (StreamStatus.READY, 0)
        assert await manager.read("empty", 0, 10) == b""
    async with open_stream_manager(config) as manager:
        assert manager.stat("empty").status is StreamStatus.READY
        assert await manager.read("empty", 0, 10) == b""


async def test_quota_rejects_growth_past_max_cache_size(
    configure: Callable[..., CacheConfig],
) -> None:
    config = configure(max_cache_size=ByteSize(100 * KiB), on_full="reject")
    async with open_stream_manager(config) as manager:
        await manager.create("a")
        await manager.create("b")
        assert manager.reserved == 32 * KiB
        await manager.append("a", _pattern(60 * KiB))  # grows a; the growth is capped by the quota
        assert manager.reserved <= config.max_cache_size
        with pytest.raises(QuotaExceededError) as info:
            await manager.append("b", _pattern(50 * KiB))
        assert info.value.code == "quota"
        assert manager.stat("b").status is StreamStatus.UPLOADING
        assert manager.stat("b").size == 0
        await manager.append("b", b"fits in the reservation")
        await manager.delete("a")  # deleting frees the space
        await manager.append("b", _pattern(50 * KiB))
        assert manager.reserved <= config.max_cache_size
    blocks = sum(os.stat(p).st_blocks * 512 for p in config.directory.glob("*.data"))
    assert blocks <= config.max_cache_size


async def test_quota_applies_to_create(configure: Callable[..., CacheConfig]) -> None:
    config = configure(max_cache_size=ByteSize(40 * KiB), on_full="evict")
    async with open_stream_manager(config) as manager:
        await manager.create("a")
        await manager.create("b")
        assert manager.reserved == 32 * KiB
        await manager.append("a", _pattern(16 * KiB))
        await manager.append("b", _pattern(24 * KiB))
        with pytest.raises(QuotaExceededError):
            await manager.create("c")
        assert sorted(os.listdir(config.directory)) == [
            "a.data",
            "a.json",
            "a.sum",
            "b.data",
            "b.json",
            "b.sum",
        ]


async def test_a_ready_stream_whose_sidecar_is_being_recorded_can_still_be_evicted(
    configure: Callable[..., CacheConfig],
) -> None:
    """A durability round rewrites a finalized stream's sidecar in a worker thread under its
    sync lock. Meanwhile the stream is not in use: a create must not be refused with quota
    for it, and the write that needs its room waits for the record, then evicts it."""
    config = configure(max_cache_size=ByteSize(32 * KiB), on_full="evict")
    async with open_stream_manager(config) as manager:
        await manager.create("old")
        await manager.append("old", _pattern(32 * KiB))
        await manager.finalize("old")
        recording = manager._streams["old"].sync_lock  # as _record_sidecars holds it
        await recording.acquire()
        try:
            await manager.create("new")  # reserves nothing: the cache is full
            async with trio.open_nursery() as nursery:
                nursery.start_soon(manager.append, "new", _pattern(16 * KiB))
                await trio.testing.wait_all_tasks_blocked()
                assert manager.stat("old").status is StreamStatus.READY  # not under the record
                recording.release()
        finally:
            if recording.locked():
                recording.release()
        assert [info.stream_id for info in manager.list()] == ["new"]
        assert manager.stat("new").size == 16 * KiB


async def test_wait_for_data_wakes_on_append_finalize_and_delete(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager, trio.open_nursery() as nursery:
        await manager.create("s")
        seen: list[object] = []

        async def follow() -> None:
            offset = 0
            while True:
                try:
                    info = await manager.wait_for_data("s", offset)
                except StreamNotFoundError:
                    seen.append("deleted")
                    return
                if info.size > offset:
                    seen.append(await manager.read("s", offset, info.size - offset))
                    offset = info.size
                else:
                    seen.append(info.status)
                    return

        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        for chunk in (b"a", b"bc", b"def"):
            await manager.append("s", chunk)
            await trio.testing.wait_all_tasks_blocked()
        await manager.finalize("s")
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [b"a", b"bc", b"def", StreamStatus.READY]
        assert await manager.wait_for_data("s", 0) == manager.stat("s")

        await manager.create("t")
        await manager.append("t", b"xy")
        assert (await manager.wait_for_data("t", 1)).size == 2  # data already there: no wait

        async def wait_on_t() -> None:
            with pytest.raises(StreamNotFoundError):
                await manager.wait_for_data("t", 2)
            seen.append("t deleted")

        nursery.start_soon(wait_on_t)
        await trio.testing.wait_all_tasks_blocked()
        await manager.delete("t")
        await trio.testing.wait_all_tasks_blocked()
        assert seen[-1] == "t deleted"


async def test_no_wakeup_is_missed_with_many_followers(config: CacheConfig) -> None:
    data = _pattern(50_000)
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        got: list[bytes] = []

        async def follow() -> None:
            buf, offset = bytearray(), 0
            while (info := await manager.wait_for_data("s", offset)).size > offset:
                buf += await manager.read("s", offset, info.size - offset)
                offset = info.size
            got.append(bytes(buf))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(follow)
                for start in range(0, len(data), 997):
                    await manager.append("s", data[start : start + 997])
                    if start % 3:
                        await trio.lowlevel.checkpoint()
                await manager.finalize("s")
        assert got == [data] * 20


async def test_delete_removes_files_and_frees_the_id(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", b"secret")
        await manager.delete("s")
        assert os.listdir(config.directory) == []
        with pytest.raises(StreamNotFoundError):
            manager.stat("s")
        with pytest.raises(StreamNotFoundError):
            await manager.delete("s")
        info = await manager.create("s")  # a new stream never shows the old bytes
        assert info.size == 0
        assert await manager.read("s", 0, 100) == b""
        with pytest.raises(OutOfRangeError):
            await manager.read("s", 1, 1)


async def test_delete_while_a_large_read_runs(config: CacheConfig) -> None:
    data = _pattern(8 * MiB)
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", data)
        results: list[bytes] = []

        async def reader() -> None:
            results.append(await manager.read("s", 0, len(data)))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(reader)
            await trio.lowlevel.checkpoint()  # the readers are now in their worker threads
            await manager.delete("s")
        assert results == [data] * 4
        assert os.listdir(config.directory) == []


@pytest.mark.parametrize("policy", ["always", "interval", "finalize"])
async def test_sync_policies(configure: Callable[..., CacheConfig], policy: str) -> None:
    config = configure(sync_policy=policy, sync_interval=0.01)
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", b"abc")
        info = manager.stat("s")
        if policy == "always":
            assert info.durable_offset == 3
        elif policy == "finalize":
            await trio.sleep(0.05)
            assert manager.stat("s").durable_offset == 0
        else:
            with trio.fail_after(10):
                while manager.stat("s").durable_offset < 3:  # noqa: ASYNC110  # no event to wait on
                    await trio.sleep(0.01)
        assert (await manager.flush("s")).durable_offset == 3
        await manager.append("s", b"de")
    async with open_stream_manager(config) as manager:
        # a clean shutdown flushes whatever the policy
        assert manager.stat("s").durable_offset == 5
        assert await manager.read("s", 0, 10) == b"abcde"


async def test_closed_manager_refuses_calls(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
    with pytest.raises(CacheClosedError):
        manager.stat("s")
    with pytest.raises(CacheClosedError):
        manager.list()
    with pytest.raises(CacheClosedError):
        await manager.append("s", b"x")
    with pytest.raises(CacheClosedError):
        await manager.create("t")
    await manager.aclose()  # idempotent


async def test_followers_are_released_when_the_manager_closes(config: CacheConfig) -> None:
    async with trio.open_nursery() as nursery, open_stream_manager(config) as manager:
        await manager.create("s")

        async def follow() -> None:
            with pytest.raises(CacheClosedError):
                await manager.wait_for_data("s", 0)

        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()


async def test_errors_from_the_block_are_not_wrapped(config: CacheConfig) -> None:
    with pytest.raises(StreamNotFoundError):
        async with open_stream_manager(config) as manager:
            manager.stat("missing")
    with pytest.raises(ZeroDivisionError):
        async with open_stream_manager(configure_interval(config)) as manager:
            await manager.create("s")
            1 / 0  # noqa: B018
    async with open_stream_manager(config) as manager:
        assert manager.stat("s").status is StreamStatus.UPLOADING  # the exit still closed it


async def test_cancelling_the_block_still_closes_cleanly(config: CacheConfig) -> None:
    with trio.CancelScope() as scope:
        async with open_stream_manager(configure_interval(config)) as manager:
            await manager.create("s")
            await manager.append("s", b"abc")
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    async with open_stream_manager(config) as manager:
        assert manager.stat("s").durable_offset == 3


def configure_interval(config: CacheConfig) -> CacheConfig:
    return attrs.evolve(config, sync_policy="interval", sync_interval=0.01)


async def test_one_log_line_per_state_change(
    config: CacheConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mmstream.streams")
    async with open_stream_manager(config) as manager:
        await manager.create("logged")
        await manager.append("logged", b"abc")
        await manager.finalize("logged")
        await manager.delete("logged")
    lines = [r.getMessage() for r in caplog.records if "logged" in r.getMessage()]
    assert [line.split(":")[1].split()[0] for line in lines] == ["created", "uploading", "deleted"]
    assert all(r.name == "mmstream.streams" for r in caplog.records)


async def test_one_writer_at_a_time(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        outcomes: list[object] = []

        async def write(data: bytes) -> None:
            try:
                outcomes.append(await manager.append("s", data * 300_000, expected_offset=0))
            except OffsetConflictError as exc:
                outcomes.append(("conflict", exc.actual))

        async with trio.open_nursery() as nursery:  # both believe the stream is empty
            nursery.start_soon(write, b"a")
            nursery.start_soon(write, b"b")
        assert sorted(outcomes, key=str) == [("conflict", 300_000), 300_000]
        content = await manager.read("s", 0, 10**6)
        assert content in (b"a" * 300_000, b"b" * 300_000)


async def test_concurrent_growths_cannot_overshoot_the_quota(
    configure: Callable[..., CacheConfig],
) -> None:
    config = configure(max_cache_size=ByteSize(256 * KiB), on_full="reject")
    async with open_stream_manager(config) as manager:
        await manager.create("a")
        await manager.create("b")
        outcomes: list[str] = []

        async def grow(sid: str) -> None:
            try:
                await manager.append(sid, _pattern(200 * KiB))  # growth runs in a thread
            except QuotaExceededError:
                outcomes.append("quota")
            else:
                outcomes.append("ok")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(grow, "a")
            nursery.start_soon(grow, "b")
        assert sorted(outcomes) == ["ok", "quota"]
        assert manager.reserved <= config.max_cache_size


async def test_append_many_writes_the_chunks_in_order_with_one_wakeup(
    config: CacheConfig,
) -> None:
    data = _pattern(300 * KiB + 17, seed=5)
    cuts = [0, 1, 4 * KiB, 4 * KiB, 70 * KiB, 200 * KiB, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        assert await manager.append("s", b"head") == 4
        woken = []

        async def follow() -> None:
            info = await manager.wait_for_data("s", 4)
            woken.append(info.size)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            # bytes, bytearray, memoryview and empty chunks, growing past the reservation
            mixed = [bytearray(c) if i % 2 else memoryview(c) for i, c in enumerate(chunks)]
            assert await manager.append_many("s", mixed, expected_offset=4) == 4 + len(data)
        assert woken == [4 + len(data)]  # the follower saw the whole batch at once
        assert await manager.read("s", 0, 4 + len(data)) == b"head" + data
        assert await manager.append_many("s", []) == 4 + len(data)
        with pytest.raises(OffsetConflictError) as conflict:
            await manager.append_many("s", [b"x"], expected_offset=4)
        assert conflict.value.actual == 4 + len(data)
        with pytest.raises(InvalidArgumentError):
            await manager.append_many("s", [b"ok", 12])  # type: ignore[list-item]
        assert manager.stat("s").size == 4 + len(data)


async def test_append_many_splits_into_backend_batches_and_growths(
    configure: Callable[..., CacheConfig],
) -> None:
    """More chunks than a backend batch holds, with some that need the file to grow (a
    worker thread) between runs that fit the reservation (inline batches): every byte
    lands in order and the size is exact."""
    config = configure(batch_limit=8, initial_size=ByteSize(64 * KiB))
    sizes = [1, 4 * KiB, 0, 7, *([3 * KiB] * 30), 200 * KiB, *([5] * 20), 2 * MiB, 11]
    chunks = [_pattern(n, seed=i) for i, n in enumerate(sizes)]
    data = b"".join(chunks)
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        assert await manager.append_many("s", [memoryview(c) for c in chunks]) == len(data)
        assert manager.stat("s").size == len(data)
        assert await manager.read("s", 0, len(data) + 1) == data


async def test_append_many_stops_short_at_the_quota(
    configure: Callable[..., CacheConfig],
) -> None:
    """Chunks that fit are written and their size returned; the error is raised only when
    nothing was written, so the caller can report it for the chunk that met it."""
    config = configure(max_cache_size=ByteSize(64 * KiB), on_full="reject")
    async with open_stream_manager(config) as manager:
        await manager.create("a")
        chunks = [_pattern(8 * KiB, seed=n) for n in range(12)]  # 96 KiB > 64 KiB quota
        size = await manager.append_many("a", chunks)
        assert 0 < size < 96 * KiB and size % (8 * KiB) == 0
        assert await manager.read("a", 0, size) == b"".join(chunks)[:size]
        rest = chunks[size // (8 * KiB) :]
        with pytest.raises(QuotaExceededError):
            await manager.append_many("a", rest, expected_offset=size)
        assert manager.stat("a").status is StreamStatus.UPLOADING
        assert manager.stat("a").size == size


async def test_read_shared_reads_once_per_range_and_size(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", b"abcdef")
        first = await manager.read_shared("s", 2, 100)
        assert first == b"cdef"
        assert await manager.read_shared("s", 2, 100) is first  # shared, not read again
        other = await manager.read_shared("s", 3, 100)
        assert other == b"def"
        # followers at different offsets share their reads too, while the size holds
        assert await manager.read_shared("s", 2, 100) is first
        assert await manager.read_shared("s", 3, 100) is other
        await manager.append("s", b"gh")
        assert await manager.read_shared("s", 2, 100) == b"cdefgh"  # a new size reads anew
        with pytest.raises(OutOfRangeError):
            await manager.read_shared("s", 9, 1)
        await manager.delete("s")
        with pytest.raises(StreamNotFoundError):
            await manager.read_shared("s", 2, 100)
