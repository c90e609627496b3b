"""The time index: arrival marks on disk (crash, power loss, delete) and seeks by time."""

from __future__ import annotations

import contextlib
import os
import struct
import textwrap
from pathlib import Path

import pytest
import trio
from streams_support import run_then_kill_9

from mmstream.config import CacheConfig
from mmstream.errors import InvalidArgumentError
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
    from mmstream.config import CacheConfig
    from mmstream.streams import open_stream_manager, _timeindex

    FRAME = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(413)

    async def main(directory, backend):
        _timeindex.MARK_INTERVAL = 0.0
        config = CacheConfig(directory=Path(directory), backend=backend, initial_size=4096,
                             segment_size=1 << 20, sync_policy="finalize")
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
