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


async def test_a_read_that_fills_the_buffer_is_shared_only_when_asked() -> None:
    """``receive_shared`` hands over this thread's read buffer itself for a full read (no
    allocation per read); a short read, and every ``receive_some``, is a fresh copy."""
    server_socket, client_socket = trio.socket.socketpair()
    replay = ReplayStream(trio.SocketStream(server_socket), b"", receive_size=4)
    await client_socket.send(b"abcdefghij")
    first = await replay.receive_shared()
    assert isinstance(first, bytearray)
    assert first == b"abcd"
    second = await replay.receive_shared()
    assert second is first  # the same buffer, read again
    assert second == b"efgh"
    third = await replay.receive_shared()
    assert type(third) is bytes
    assert third == b"ij"
    await client_socket.send(b"klmn")
    copied = await replay.receive_some()
    assert type(copied) is bytes
    assert copied == b"klmn"
    client_socket.close()
    await replay.aclose()
