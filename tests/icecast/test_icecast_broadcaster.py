"""The broadcaster alone, on a real manager: what a task-driven follower (a WebSocket tail,
a stream without a socket of its own) gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from ogg_pages import HEADER, page

from mmstream.config import ByteSize, CacheConfig, IcecastConfig
from mmstream.errors import StreamNotFoundError
from mmstream.ogg import OggChainer
from mmstream.server._fanout import FanoutHub, serve_fanout_hub
from mmstream.streams import open_stream_manager


async def _collect(hub: FanoutHub, stream_id: str, out: list[bytes]) -> None:
    async for piece in hub.get(stream_id).follow():
        out.append(piece)


async def test_follow_gives_the_header_a_burst_then_live_bytes_until_finalize(
    tmp_path: Path,
) -> None:
    config = CacheConfig(directory=tmp_path / "c", initial_size=ByteSize(1 << 20))
    settings = IcecastConfig(burst_size=ByteSize(1000), send_interval=0.001)
    async with open_stream_manager(config) as manager, trio.open_nursery() as nursery:
        hub: FanoutHub = await nursery.start(serve_fanout_hub, manager, settings)
        await manager.create("f", content_type="audio/ogg")
        await manager.append("f", HEADER + page(0) + page(1) + page(2))
        got: list[bytes] = []
        async with trio.open_nursery() as followers:
            followers.start_soon(_collect, hub, "f", got)
            with trio.fail_after(10):
                while True:
                    if sum(map(len, got)) >= len(HEADER) + len(page(2)):
                        break
                    await trio.sleep(0.001)
            await manager.append("f", page(3))
            await manager.finalize("f")
        assert b"".join(got) == HEADER + page(2) + page(3)
        nursery.cancel_scope.cancel()


async def test_follow_raises_when_the_stream_is_deleted(tmp_path: Path) -> None:
    config = CacheConfig(directory=tmp_path / "c", initial_size=ByteSize(1 << 20))
    async with open_stream_manager(config) as manager, trio.open_nursery() as nursery:
        hub: FanoutHub = await nursery.start(serve_fanout_hub, manager, IcecastConfig())
        await manager.create("gone")
        await manager.append("gone", b"\x00" * 100)
        follower = hub.get("gone").follow()
        assert await anext(follower) == b"\x00" * 100
        await manager.delete("gone")
        with pytest.raises(StreamNotFoundError), trio.fail_after(10):
            await anext(follower)
        await follower.aclose()
        nursery.cancel_scope.cancel()


async def test_a_broadcaster_never_follows_a_stream_created_again_under_its_id(
    tmp_path: Path,
) -> None:
    """The hub keeps one broadcaster per stream *generation*: the old stream's ends as at a
    deletion, even if it was not waiting when the new stream came, and never reads it."""
    config = CacheConfig(directory=tmp_path / "c", initial_size=ByteSize(1 << 20))
    async with open_stream_manager(config) as manager, trio.open_nursery() as nursery:
        hub: FanoutHub = await nursery.start(serve_fanout_hub, manager, IcecastConfig())
        old = (await manager.create("s")).generation
        await manager.append("s", b"\x01" * 100)
        await manager.delete("s")
        new = (await manager.create("s")).generation
        await manager.append("s", b"\x02" * 100)
        stale = hub.get("s", old)  # started only now: the id already names the new stream
        current = hub.get("s")
        assert stale is not current and current is hub.get("s", new)
        with trio.fail_after(10):
            await stale.wait_ready()  # ready once it ended
        assert stale.ended and stale.failed is not None and "generation" in stale.failed
        assert b"\x02" not in stale.window
        follower = current.follow(0)
        assert await anext(follower) == b"\x02" * 100
        await follower.aclose()
        nursery.cancel_scope.cancel()


async def test_a_listener_of_a_long_stream_starts_near_its_live_edge(tmp_path: Path) -> None:
    """A broadcaster made for a stream that is already long (written over WebSocket, or
    before a restart) reads it from the start for its header; a listener that arrives
    meanwhile still starts near the live edge, not where the reading has got to."""
    config = CacheConfig(directory=tmp_path / "c", initial_size=ByteSize(1 << 20))
    settings = IcecastConfig(burst_size=ByteSize(0), send_interval=0.001)
    async with open_stream_manager(config) as manager, trio.open_nursery() as nursery:
        hub: FanoutHub = await nursery.start(serve_fanout_hub, manager, settings)
        await manager.create("long", content_type="audio/ogg")
        pages = b"".join(page(i) for i in range(2000))  # 2 MB: several reads
        await manager.append("long", HEADER + pages)
        follower = hub.get("long").follow()
        first = await anext(follower)
        assert first == HEADER + page(1999)
        await follower.aclose()
        nursery.cancel_scope.cancel()


async def test_a_follower_from_an_offset_gets_every_byte_from_the_cache(tmp_path: Path) -> None:
    """``follow(start)`` for a start before the window, and a follower slower than the
    writer: the gap comes from the cache, never skipped (regression: it started at the
    window's base and was skipped to the live edge when it fell behind)."""
    config = CacheConfig(directory=tmp_path / "c", initial_size=ByteSize(1 << 20))
    settings = IcecastConfig(queue_size=ByteSize(4096), burst_size=ByteSize(0), send_interval=0.001)
    written = bytes(range(256)) * 2000  # 512 KB, far more than the window
    async with open_stream_manager(config) as manager, trio.open_nursery() as nursery:
        hub: FanoutHub = await nursery.start(serve_fanout_hub, manager, settings)
        await manager.create("far", content_type="application/octet-stream")
        await manager.append("far", written[:100_000])
        follower = hub.get("far").follow(0)
        with trio.fail_after(10):
            got = bytearray(await anext(follower))
            for at in range(100_000, len(written), 50_000):  # each append leaves it behind
                await manager.append("far", written[at : at + 50_000])
                await trio.sleep(0.01)
            await manager.finalize("far")
            async for piece in follower:
                got += piece
        assert got == written
        nursery.cancel_scope.cancel()


async def test_a_listener_joining_after_an_ogg_chain_starts_inside_it(tmp_path: Path) -> None:
    """Regression: the burst began at a sync point before the chain, under the chain's
    header (a header of one logical stream, then pages of another)."""
    pages = [page(i) for i in range(4)]
    chainer = OggChainer(serials=lambda: 4242)
    stream = chainer.feed(HEADER + pages[0] + pages[1], None)
    stream += chainer.feed(pages[2] + pages[3], "Chained") + chainer.flush()
    chain_at = stream.index(b"OggS\x00\x02", 1)  # the new chain's BOS page
    config = CacheConfig(directory=tmp_path / "c", initial_size=ByteSize(1 << 20))
    settings = IcecastConfig(burst_size=ByteSize(3000), send_interval=0.001)
    async with open_stream_manager(config) as manager, trio.open_nursery() as nursery:
        hub: FanoutHub = await nursery.start(serve_fanout_hub, manager, settings)
        await manager.create("f", content_type="audio/ogg")
        await manager.append("f", stream)
        got: list[bytes] = []
        async with trio.open_nursery() as followers:
            followers.start_soon(_collect, hub, "f", got)
            await manager.finalize("f")
        # The chain's header (its BOS and comment pages), then its pages: no page of
        # the chain before, though the burst reached back that far.
        assert b"".join(got) == stream[chain_at:]
        nursery.cancel_scope.cancel()
