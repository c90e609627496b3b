"""A live stream's titles: where each began, kept across a restart, gone with the stream."""

from __future__ import annotations

import json

import pytest

from mmstream.config import CacheConfig
from mmstream.errors import (
    NotUploadingError,
    StreamChangedError,
    StreamNotFoundError,
    TooLargeError,
)
from mmstream.streams import open_stream_manager
from mmstream.streams._titles import MAX_TITLES


async def test_titles_record_offset_and_time_and_survive_a_restart(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("radio", content_type="audio/mpeg")
        first = await manager.set_title("radio", "Artist - One")
        await manager.append("radio", b"x" * 1000)
        second = await manager.set_title("radio", "Ünïcode - 'Two'")
        await manager.append("radio", b"x" * 10)
        assert await manager.set_title("radio", "Ünïcode - 'Two'") == second  # no change
        assert (first.offset, second.offset) == (0, 1000)
        assert first.time <= second.time
        assert manager.stat("radio").titles == (first, second)
    async with open_stream_manager(config) as manager:
        assert manager.stat("radio").titles == (first, second)


async def test_only_the_newest_titles_are_kept(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("radio")
        for n in range(MAX_TITLES + 5):
            await manager.set_title("radio", f"song {n}")
        titles = manager.stat("radio").titles
        assert len(titles) == MAX_TITLES and titles[-1].title == f"song {MAX_TITLES + 4}"


async def test_a_deleted_stream_s_titles_do_not_reach_its_namesake(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("radio")
        await manager.set_title("radio", "old")
        await manager.delete("radio")
        assert not list(config.directory.glob("radio.*"))
        await manager.create("radio")
        assert manager.stat("radio").titles == ()


async def test_a_stale_titles_file_is_ignored_then_replaced(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("radio")
    (config.directory / "radio.titles").write_bytes(b"\xff not json")
    async with open_stream_manager(config) as manager:
        assert manager.stat("radio").titles == ()
        await manager.set_title("radio", "new")
    async with open_stream_manager(config) as manager:
        assert [t.title for t in manager.stat("radio").titles] == ["new"]


async def test_another_incarnation_s_titles_are_ignored(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("radio")
        await manager.set_title("radio", "mine")
    path = config.directory / "radio.titles"
    record = json.loads(path.read_bytes())
    record["generation"] = "0" * 16
    path.write_text(json.dumps(record))
    async with open_stream_manager(config) as manager:
        assert manager.stat("radio").titles == ()


async def test_titles_are_refused_for_finished_unknown_or_huge(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("radio")
        with pytest.raises(TooLargeError):
            await manager.set_title("radio", "x" * 1025)
        await manager.finalize("radio")
        with pytest.raises(NotUploadingError):
            await manager.set_title("radio", "late")
        with pytest.raises(StreamNotFoundError):
            await manager.set_title("nope", "t")
        assert manager.stat("radio").titles == ()


async def test_the_current_title_is_one_look_up(config: CacheConfig) -> None:
    """What a source's Ogg chainer asks for with every piece: the newest title, from where
    the titles are held, no snapshot built; a deleted stream's is not its namesake's."""
    async with open_stream_manager(config) as manager:
        generation = (await manager.create("radio")).generation
        assert manager.current_title("radio") is None
        await manager.set_title("radio", "One")
        await manager.set_title("radio", "Two")
        assert manager.current_title("radio", generation=generation) == "Two"
        await manager.delete("radio")
        await manager.create("radio")
        assert manager.current_title("radio") is None
        with pytest.raises(StreamChangedError):
            manager.current_title("radio", generation=generation)
        with pytest.raises(StreamNotFoundError):
            manager.current_title("nope")
