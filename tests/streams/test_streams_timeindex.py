"""The time index: arrival marks on disk (crash, power loss, delete) and seeks by time."""

from __future__ import annotations

import contextlib
import os
import struct
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from ogg_pages import HEADER, page
from streams_support import run_then_kill_9

from mmstream.config import CacheConfig
from mmstream.errors import InvalidArgumentError
from mmstream.ogg import OggChainer
from mmstream.streams import _timeindex as timeindex
from mmstream.streams import open_stream_manager
from mmstream.streams._timeindex import TimeIndex, decode_marks, encode_head, encode_mark

GEN = "0123456789abcdef"
#: MPEG-1 layer III, 128 kb/s, 44.1 kHz: 417 bytes, 1152 samples.
FRAME = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(413)
FRAME_SECONDS = 1152 / 44100


def _marks_on_disk(path: Path) -> list[tuple[int, float]]:
    blob = path.read_bytes()
    head = len(encode_head(GEN))
    return [struct.unpack_from("<Qd", blob, at) for at in range(head, len(blob) - 15, 16)]


def test_marks_decode_only_the_valid_prefix() -> None:
    good = encode_head(GEN) + encode_mark(0, 100.0) + encode_mark(500, 101.0)
    assert decode_marks(good, GEN, 1000) == ([(0, 100.0), (500, 101.0)], len(good))
    # torn last record
    assert decode_marks(good + b"\x01\x02\x03", GEN, 1000)[1] == len(good)
    # ahead of the data: dropped
    assert decode_marks(good, GEN, 499) == ([(0, 100.0)], len(good) - 16)
    # going back in offset: dropped from there
    back = good + encode_mark(10, 102.0) + encode_mark(900, 103.0)
    assert decode_marks(back, GEN, 1000)[0] == [(0, 100.0), (500, 101.0)]
    # another generation's file (a deleted stream's), or not ours at all
    assert decode_marks(good, "fedcba9876543210", 1000) == ([], 0)
    assert decode_marks(b"junk" * 10, GEN, 1000) == ([], 0)


def test_wall_clock_of_a_byte_is_interpolated() -> None:
    index = TimeIndex(GEN, 50.0, [(0, 100.0), (1000, 110.0)])
    assert index.start_wall == 100.0
    assert index.wall_of(500) == 105.0
    assert index.wall_of(5000) == 110.0
    assert TimeIndex(GEN, 50.0, []).start_wall == 50.0


def test_marks_are_kept_at_most_once_per_interval() -> None:
    index = TimeIndex(GEN, 0.0, [])
    assert index.mark(0, 10.0) == b""  # a clip (under a second) gets no file
    assert index.mark(100, 10.5) == b""
    assert index.mark(200, 11.0) == encode_mark(0, 10.0) + encode_mark(200, 11.0)
    assert index.mark(200, 13.0) == b""  # nothing new arrived
    assert index.mark(300, 13.0) == encode_mark(300, 13.0)


async def test_seek_lands_on_the_frame_playing_at_the_time(config: CacheConfig) -> None:
    data = FRAME * 400  # ~10.4 s
    async with open_stream_manager(config) as manager:
        await manager.create("tone", content_type="audio/mpeg")
        for at in range(0, len(data), 1000):
            await manager.append("tone", data[at : at + 1000])
        for wanted in (0.0, 1.0, 4.321, 10.0):
            found = await manager.seek("tone", seconds=wanted)
            assert found.offset % len(FRAME) == 0
            assert found.time == pytest.approx(found.offset // len(FRAME) * FRAME_SECONDS)
            assert 0 <= wanted - found.time < FRAME_SECONDS
            assert found.header == b""
            assert await manager.offset_at("tone", wanted) == found.offset
        back = await manager.seek("tone", seconds=-2.0)
        assert back.duration == pytest.approx(400 * FRAME_SECONDS)
        assert 0 <= back.duration - 2.0 - back.time < FRAME_SECONDS
        assert (await manager.seek("tone", seconds=1e6)).offset == len(data) - len(FRAME)
        assert (await manager.seek("tone", seconds=-1e6)).offset == 0
        with pytest.raises(InvalidArgumentError):
            await manager.seek("tone")
        with pytest.raises(InvalidArgumentError):
            await manager.seek("tone", seconds=float("nan"))


async def test_arrival_marks_survive_a_restart_and_delete_removes_them(
    config: CacheConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeindex, "MARK_INTERVAL", 0.0)
    async with open_stream_manager(config) as manager:
        info = await manager.create("rec", content_type="application/octet-stream")
        for _ in range(3):
            await manager.append("rec", b"x" * 100)
            await trio.sleep(0.01)
        first = await manager.seek("rec", seconds=0.0)
    path = config.directory / "rec.idx"
    assert path.read_bytes().startswith(encode_head(info.generation))
    async with open_stream_manager(config) as manager:
        again = await manager.seek("rec", seconds=0.0)
        assert again.started_at == first.started_at
        # Untimed: arrival time is the index; a byte that came later is found later.
        late = await manager.seek("rec", at=first.started_at + 10)
        assert late.offset == 200
        await manager.delete("rec")
        assert not path.exists()


async def test_a_new_stream_under_the_same_id_starts_a_new_index(
    config: CacheConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeindex, "MARK_INTERVAL", 0.0)
    path = config.directory / "same.idx"
    async with open_stream_manager(config) as manager:
        await manager.create("same")
        await manager.append("same", b"a" * 10)
        await manager.delete("same")
        path.write_bytes(encode_head(GEN) + encode_mark(0, 1.0))  # left by another stream
        info = await manager.create("same")
        await manager.append("same", b"b" * 10)
        await trio.sleep(0.01)
        await manager.append("same", b"b" * 10)
        assert path.read_bytes().startswith(encode_head(info.generation))
        assert (await manager.seek("same", seconds=0)).started_at > 1000


async def test_recovery_removes_an_index_without_its_stream(config: CacheConfig) -> None:
    async with open_stream_manager(config):
        pass
    orphan = config.directory / "gone.idx"
    orphan.write_bytes(encode_head(GEN))
    async with open_stream_manager(config):
        assert not orphan.exists()


_CRASHING_WRITER = textwrap.dedent(
    """
    import sys, trio
    from pathlib import Path
    from mmstream.config import CacheConfig, MmapConfig
    from mmstream.streams import open_stream_manager, _timeindex

    FRAME = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(413)

    async def main(directory, backend):
        _timeindex.MARK_INTERVAL = 0.0
        config = CacheConfig(directory=Path(directory), backend=backend, initial_size=4096,
                             mmap=MmapConfig(segment_size=1 << 20), sync_policy="finalize")
        async with open_stream_manager(config) as manager:
            await manager.create("up", content_type="audio/mpeg")
            for _ in range(10):
                await manager.append("up", FRAME * 10)
                await trio.sleep(0.002)
            await manager.flush("up")
            for _ in range(10):
                await manager.append("up", FRAME * 10)  # acknowledged, never flushed
                await trio.sleep(0.002)
            print("written", flush=True)
            await trio.sleep(60)

    trio.run(main, *sys.argv[1:])
    """
)


async def test_kill_9_never_leaves_the_index_ahead_of_the_data(
    config: CacheConfig, backend: str
) -> None:
    """A crash, then a power cut modelled on its files: the data cut back to its durable
    offset (the unsynced tail lost) while the unsynced .idx kept marks past it. Marks past
    the recovered data are dropped at first use, and the rest is kept."""
    run_then_kill_9(_CRASHING_WRITER, str(config.directory), backend)
    path = config.directory / "up.idx"
    before = _marks_on_disk(path)
    durable = len(FRAME) * 100
    assert max(offset for offset, _ in before) > durable  # marks past the durable offset
    os.truncate(config.directory / "up.data", durable)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(config.directory / "up.sum")  # the power cut took the unsynced record too
    async with open_stream_manager(config) as manager:
        recovered = manager.stat("up").size
        assert recovered <= durable
        found = await manager.seek("up", seconds=-1.0)
        assert found.offset % len(FRAME) == 0 and found.offset < recovered
        assert _marks_on_disk(path) == [m for m in before if m[0] <= recovered]
        assert found.started_at == before[0][1]
        await manager.append("up", FRAME, expected_offset=recovered)
        assert (await manager.seek("up", seconds=1e9)).offset == recovered


def test_a_torn_index_file_is_cut_back(tmp_path: Path) -> None:
    path = tmp_path / "s.idx"
    path.write_bytes(encode_head(GEN) + encode_mark(0, 5.0) + b"\x00\x01")
    indexes = timeindex.TimeIndexes(tmp_path)
    index = indexes.get("s", GEN, 1.0, 100)
    assert index.start_wall == 5.0
    assert os.path.getsize(path) == 32
    assert _marks_on_disk(path) == [(0, 5.0)]


# -- stat's duration and start time --------------------------------------------------------


def test_known_duration_never_parses() -> None:
    """Live: media seconds built plus arrival seconds since; finished: only when built."""
    index = TimeIndex(GEN, 50.0, [(0, 100.0), (1000, 110.0)])
    assert index.known_duration(1000, live=True) == 10.0  # nothing built: arrival seconds
    assert index.known_duration(1000, live=False) is None  # an import is not real time
    index.built = (500, 3.0, True)
    assert index.known_duration(1000, live=True) == 8.0  # 3 s built, 5 s arrived since
    assert index.known_duration(500, live=False) == 3.0
    assert TimeIndex(GEN, 50.0, []).known_duration(0, live=True) == 0.0
    assert TimeIndex(GEN, 50.0, []).known_duration(10, live=True) is None


async def test_stat_says_duration_and_start_time(config: CacheConfig) -> None:
    """Regression test: ``stat`` said neither (issue 17, "stat shows duration and start time")."""
    data = FRAME * 400  # ~10.4 s
    async with open_stream_manager(config) as manager:
        created = await manager.create("tone", content_type="audio/mpeg")
        await manager.append("tone", data)
        live = manager.stat("tone", times=True)
        assert live.started_at is not None
        assert created.created_at <= live.started_at <= live.last_accessed_at + 1
        assert live.duration is not None and 0 <= live.duration < 5  # arrived in a moment
        await manager.seek("tone", seconds=1.0)  # builds the index to the end
        assert manager.stat("tone", times=True).duration == pytest.approx(400 * FRAME_SECONDS)
        await manager.finalize("tone")
        assert manager.stat("tone", times=True).duration == pytest.approx(400 * FRAME_SECONDS)
        # A finished stream nothing has indexed: unknown (stat never parses it).
        await manager.create("import", content_type="audio/mpeg")
        await manager.append("import", data)
        await manager.finalize("import")
        assert manager.stat("import", times=True).duration is None
        await manager.seek("import", seconds=-1.0)
        assert manager.stat("import", times=True).duration == pytest.approx(400 * FRAME_SECONDS)
        # Only the stat request's answer carries them: other snapshots leave them out.
        assert manager.stat("tone").started_at is None
        assert all(info.duration is None for info in manager.list())


# -- the memory bound ----------------------------------------------------------------------


def test_media_points_are_held_for_at_most_n_streams(tmp_path: Path) -> None:
    """Regression test: every index kept its points (and header) until its stream went."""
    data = FRAME * 100
    indexes = timeindex.TimeIndexes(tmp_path, held=2)
    built = {}
    for name in ("a", "b", "c", "a", "d"):
        index = indexes.get(name, GEN, 0.0, len(data))
        indexes.use_points(name)
        index.build(lambda at, n: data[at : at + n], len(data))
        built[name] = index
        assert len(indexes.held()) <= 2
    assert indexes.held() == ["a", "d"]
    assert not built["b"].times and not built["c"].times  # dropped
    assert built["b"].known_duration(len(data), live=False) == pytest.approx(100 * FRAME_SECONDS)
    assert len(built["a"].times) > 0 and len(built["d"].times) > 0
    with pytest.raises(ValueError, match="at least 1"):
        timeindex.TimeIndexes(tmp_path, held=0)


def test_an_index_in_use_is_dropped_later(tmp_path: Path) -> None:
    indexes = timeindex.TimeIndexes(tmp_path, held=1)
    busy = indexes.get("busy", GEN, 0.0, 0)
    indexes.get("other", GEN, 0.0, 0)
    indexes.use_points("busy")

    async def main() -> None:
        async with busy.lock:
            indexes.use_points("other")
            assert indexes.held() == ["busy", "other"]  # in use: over the bound for now
        indexes.use_points("other")
        assert indexes.held() == ["other"]

    trio.run(main)


async def test_a_seek_after_eviction_still_lands_right(
    configure: Callable[..., CacheConfig],
) -> None:
    data = FRAME * 400
    async with open_stream_manager(configure(time_indexes=1)) as manager:
        for name in ("one", "two"):
            await manager.create(name, content_type="audio/mpeg")
            await manager.append(name, data)
        first = await manager.seek("one", seconds=4.321)
        for _ in range(2):
            await manager.seek("two", seconds=7.0)  # drops one's points
            again = await manager.seek("one", seconds=4.321)  # rebuilt from the cache
            assert again == first
            assert 0 <= 4.321 - again.time < FRAME_SECONDS
            assert again.offset % len(FRAME) == 0


def test_a_seek_into_an_earlier_ogg_chain_gets_that_chains_header() -> None:
    """Regression: a seek got the last chain's header whatever chain its point was in (a
    decoder then reads one logical stream's header and another's pages)."""
    chainer = OggChainer(serials=iter(range(500, 600)).__next__)
    data = chainer.feed(HEADER + b"".join(page(i) for i in range(10)), None)
    data += chainer.feed(b"".join(page(i) for i in range(10, 20)), "Second")
    data += chainer.feed(b"".join(page(i) for i in range(20, 30)), "Third") + chainer.flush()
    index = TimeIndex(GEN, 0.0, [])

    def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    index.build(read, len(data))
    early, middle, late = (index.seek(t, read, len(data)) for t in (0.05, 0.3, 0.5))
    assert early.header == HEADER and data[early.offset : early.offset + 4] == b"OggS"
    assert b"TITLE=Second" in middle.header and b"TITLE=Third" in late.header
    # Each header is its chain's: the BOS page's serial is the serial of the pages after.
    for seek in (early, middle, late):
        serial = int.from_bytes(seek.header[14:18], "little")
        assert int.from_bytes(data[seek.offset + 14 : seek.offset + 18], "little") == serial
