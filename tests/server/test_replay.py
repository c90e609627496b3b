from __future__ import annotations

import trio
import trio.testing

from mmstream.server._replay import ReplayStream


async def test_prefix_first_in_pieces_then_the_stream() -> None:
    left, right = trio.testing.memory_stream_pair()
    replay = ReplayStream(right, b"abcdef")
    assert await replay.receive_some(4) == b"abcd"
    assert await replay.receive_some() == b"ef"
    await left.send_all(b"more")
    assert await replay.receive_some(100) == b"more"
    await replay.send_all(b"back")
    assert await left.receive_some() == b"back"
    await replay.send_eof()
    assert await left.receive_some() == b""
    await replay.aclose()


async def test_stream_may_be_checked_like_any_trio_stream() -> None:
    async def make() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        left, right = trio.testing.memory_stream_pair()
        return left, ReplayStream(right, b"")

    await trio.testing.check_half_closeable_stream(make, None)
