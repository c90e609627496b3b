"""A stream id reused never mixes two streams on the wire (issue 14, item 1).

Each test starts a response that is sent in pieces to a slow client, deletes the stream and
creates it again under the same id with other bytes, then reads what the client got: only
bytes of the first stream, and a response that ends as documented (HTTP: the connection is
cut short of its promised length; ``read``: close 1011; ``tail``: ``end`` ``deleted``).
The old stream is all ``0x01`` bytes and the new one all ``0x02``, so one byte tells.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio_websocket
import websockets.exceptions
from server_helpers import make_config, v1_connect

from mmstream.cache import KiB, MiB
from mmstream.client import connect
from mmstream.config import ByteSize
from mmstream.errors import StreamChangedError
from mmstream.protocol import Read, Stat, Tail
from mmstream.server import RunningServer, serve
from mmstream.streams import StreamManager

SIZE = 16 * MiB
OLD, NEW = b"\x01" * SIZE, b"\x02" * SIZE
#: Time for the server to fill the socket buffers and block on the slow client.
SETTLE = 0.3


@asynccontextmanager
async def small_frames_server(tmp_path: Path, transport: str) -> AsyncIterator[RunningServer]:
    """Frames of 64 KiB: a 16 MiB reply is 256 frames, more than any client library queues."""
    config = make_config(tmp_path / "cache", transport, max_message_size=ByteSize(64 * KiB))
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(serve, config)
        yield running
        nursery.cancel_scope.cancel()


async def put(manager: StreamManager, stream_id: str, data: bytes, *, finalize: bool) -> None:
    await manager.create(stream_id)
    await manager.append(stream_id, data)
    if finalize:
        await manager.finalize(stream_id)


async def replace(manager: StreamManager, stream_id: str, *, finalize: bool) -> None:
    """Delete the stream and create it again with the new bytes."""
    await manager.delete(stream_id)
    await put(manager, stream_id, NEW, finalize=finalize)


def assert_old_only(data: bytes | bytearray) -> None:
    stray = bytes(data).strip(b"\x01")
    assert not stray, f"{len(stray)} bytes that are not the old stream's (at {data.find(2)})"


async def slow_http_get(port: int, target: str) -> tuple[trio.SocketStream, dict[str, str], bytes]:
    """A GET from a client with a small receive buffer: the head and what came with it."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KiB)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET {target} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = await stream.receive_some(16 * KiB)
        assert chunk, f"closed before the head: {raw!r}"
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    assert " 200 " in status + " ", status
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return stream, headers, body


async def read_to_eof(stream: trio.SocketStream, body: bytearray, limit: int) -> None:
    """Read until the server closes (or ``limit`` bytes, enough to show the bug)."""
    with trio.fail_after(30):
        while len(body) < limit:
            try:
                chunk = await stream.receive_some(256 * KiB)
            except trio.BrokenResourceError:
                return
            if not chunk:
                return
            body += chunk


async def test_http_get_is_cut_when_the_stream_is_replaced(server: RunningServer) -> None:
    manager = server.manager
    await put(manager, "s", OLD, finalize=True)
    stream, headers, first = await slow_http_get(server.port, "/streams/s")
    async with stream:
        assert int(headers["content-length"]) == SIZE
        etag = headers["etag"]
        await trio.sleep(SETTLE)
        await replace(manager, "s", finalize=True)
        body = bytearray(first)
        await read_to_eof(stream, body, SIZE)
    assert len(body) < SIZE, "the response went on to its promised length"
    assert_old_only(body)
    # The new stream is another representation: another ETag.
    stream, headers, _ = await slow_http_get(server.port, "/streams/s")
    async with stream:
        assert headers["etag"] != etag


async def test_http_live_listener_is_cut_when_the_stream_is_replaced(
    server: RunningServer,
) -> None:
    manager = server.manager
    await put(manager, "s", OLD, finalize=False)
    # A listener at the live edge starts the stream's broadcaster, which reads up to it.
    edge, _, got = await slow_http_get(server.port, f"/streams/s?offset={SIZE}")
    async with edge:
        await manager.append("s", b"\x01")  # the edge listener gets it: the broadcaster is there
        with trio.fail_after(10):
            while not got:
                got = await edge.receive_some(1)
        # Far behind the broadcaster: catches up from the cache at its own pace.
        stream, _, first = await slow_http_get(server.port, "/streams/s?offset=0")
        async with stream:
            await trio.sleep(SETTLE)
            await replace(manager, "s", finalize=False)
            body = bytearray(first)
            await read_to_eof(stream, body, SIZE + 1)
    assert len(body) < SIZE
    assert_old_only(body)


async def ws_bytes_until_close(
    ws: object, got: bytearray, limit: int
) -> tuple[int | None, str | None]:
    """Binary frames into ``got`` until the connection closes (its close code and reason)
    or ``limit`` bytes came."""
    receive = ws.receive  # type: ignore[attr-defined]
    with trio.fail_after(30):
        while len(got) < limit:
            try:
                message = await receive()
            except websockets.exceptions.ConnectionClosed as exc:
                frame = exc.rcvd or exc.sent
                return (frame.code, frame.reason) if frame else (None, None)
            except trio_websocket.ConnectionClosed as exc:
                return (exc.reason.code, exc.reason.reason) if exc.reason else (None, None)
            assert isinstance(message, bytes), message
            got += message
    return None, None


async def test_ws_read_ends_with_1011_when_the_stream_is_replaced(
    tmp_path: Path, transport: str
) -> None:
    async with small_frames_server(tmp_path, transport) as server:
        await put(server.manager, "s", OLD, finalize=True)
        async with v1_connect(f"{server.url}/v1", transport) as v1:
            reply = await v1.call(Read(id=1, stream="s", offset=0))
            assert reply["length"] == SIZE
            got = bytearray(await v1.receive_bytes(64 * KiB))
            await trio.sleep(SETTLE)
            await replace(server.manager, "s", finalize=True)
            code, reason = await ws_bytes_until_close(v1.ws, got, SIZE)
    assert len(got) < SIZE, "the read went on to its announced length"
    assert code == 1011
    assert reason == "read of s failed: stream-changed"
    assert_old_only(got)


@pytest.mark.parametrize("finalize", [False, True], ids=["uploading", "ready"])
async def test_tail_ends_deleted_when_the_stream_is_replaced(
    tmp_path: Path, transport: str, finalize: bool
) -> None:
    async with small_frames_server(tmp_path, transport) as server:
        await put(server.manager, "s", OLD, finalize=False)
        async with v1_connect(f"{server.url}/v1", transport) as v1:
            reply = await v1.call(Tail(id=1, stream="s", offset=0))
            assert reply["ok"], reply
            got = bytearray(await v1.receive_bytes(64 * KiB))
            await trio.sleep(SETTLE)
            await replace(server.manager, "s", finalize=finalize)
            with trio.fail_after(30):
                while len(got) <= SIZE:
                    message = await v1.ws.receive()
                    if isinstance(message, str):
                        break
                    got += message
            assert_old_only(got)
            assert len(got) < SIZE
            assert isinstance(message, str)
            end = json.loads(message)
            assert end["op"] == "end"
            assert end["status"] == "deleted"
            assert end["size"] == len(got)


async def test_read_and_tail_of_another_generation_get_stream_changed(
    server: RunningServer,
) -> None:
    """A client that reads one stream in several requests names its generation (from
    ``stat``): a stream created under the same id meanwhile is refused, not spliced in."""
    manager = server.manager
    await put(manager, "s", b"\x01" * 100, finalize=True)
    async with v1_connect(f"{server.url}/v1") as v1:
        stat = (await v1.call(Stat(id=1, stream="s")))["stat"]
        old = stat["generation"]
        assert old == manager.stat("s").generation
        reply = await v1.call(Read(id=2, stream="s", offset=0, length=10, generation=old))
        assert reply["length"] == 10 and await v1.receive_bytes(10) == b"\x01" * 10
        await manager.delete("s")
        await put(manager, "s", b"\x02" * 100, finalize=True)
        for request in (
            Read(id=3, stream="s", offset=10, generation=old),
            Tail(id=4, stream="s", offset=10, generation=old),
        ):
            reply = await v1.call(request)
            assert reply["error"]["code"] == "stream-changed", reply
        new = (await v1.call(Stat(id=5, stream="s")))["stat"]["generation"]
        assert new != old
        reply = await v1.call(Read(id=6, stream="s", offset=10, length=5, generation=new))
        assert reply["ok"] and await v1.receive_bytes(5) == b"\x02" * 5


async def test_the_client_raises_stream_changed(server: RunningServer) -> None:
    await put(server.manager, "s", b"\x01" * 100, finalize=True)
    async with connect(server.url, stream="s") as client:
        stat = await client.stat()
        assert stat.generation == server.manager.stat("s").generation
        await server.manager.delete("s")
        await put(server.manager, "s", b"\x02" * 100, finalize=True)
        with pytest.raises(StreamChangedError):
            await client.read(offset=50, generation=stat.generation)
        assert await client.read(offset=98) == b"\x02\x02"
