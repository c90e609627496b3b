"""One writer per stream across every route (issue 14, item 7): a WebSocket upload, an
Icecast ``PUT`` or ``SOURCE``; the second writer is refused (409 / ``busy``) and the first
is untouched. The lease dies with the connection and yields to a new writer after
``cache.writer_timeout`` of silence; a second ``hello`` with a read-only token ends the
write rights the first one gave."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from server_helpers import eventually, v1_connect

from mmstream.client import connect
from mmstream.config import AuthConfig, ByteSize, CacheConfig, Config, ServerConfig, TokenConfig
from mmstream.errors import StreamBusyError
from mmstream.protocol import Append, Create, Hello, Stat
from mmstream.server import RunningServer, serve
from mmstream.streams import StreamStatus

WRITER = "writer-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"


@asynccontextmanager
async def running(
    tmp_path: Path, *, auth: AuthConfig | None = None, **cache: Any
) -> AsyncIterator[RunningServer]:
    config = Config(
        cache=CacheConfig(directory=tmp_path / "cache", initial_size=ByteSize(64 * 1024), **cache),
        server=ServerConfig(port=0),
        auth=auth or AuthConfig(),
    )
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(serve, config)
        yield server
        server.abort()


async def read_answer(stream: trio.SocketStream) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the server's whole answer (it closes after an error)."""
    data = b""
    while piece := await stream.receive_some(65536):
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def put(server: RunningServer, stream_id: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """An Icecast source with a Content-Length body."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(
            f"PUT /streams/{stream_id} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return await read_answer(stream)


async def test_an_icecast_put_cannot_write_into_a_websocket_upload(tmp_path: Path) -> None:
    """Regression: the PUT appended into the upload and finalized it."""
    async with running(tmp_path) as server, connect(server.url) as uploader:
        await uploader.create("live", content_type="audio/mpeg")
        await uploader.append("live", b"w" * 1000)  # the upload stays bound
        status, body = await put(server, "live", b"intruder")
        assert (status, body["error"]["code"]) == (409, "busy")
        info = server.manager.stat("live")
        assert (info.status, info.size) == (StreamStatus.UPLOADING, 1000)
        await uploader.append("live", b"v" * 500)
        stat = await uploader.finalize("live", size=1500)
        assert stat.status == "ready"
        assert await server.manager.read("live", 0, 2000) == b"w" * 1000 + b"v" * 500


async def test_a_second_websocket_writer_is_refused(tmp_path: Path) -> None:
    """Regression: a second connection's append bound too, and its finalize ended the
    first one's upload."""
    async with (
        running(tmp_path) as server,
        connect(server.url) as first,
        connect(server.url) as second,
    ):
        await first.create("s")
        await first.append("s", b"1" * 100)
        with pytest.raises(StreamBusyError):
            await second.append("s", b"2" * 100)
        with pytest.raises(StreamBusyError):
            await second.finalize("s")
        await first.append("s", b"1" * 100)
        assert (await first.finalize("s", size=200)).status == "ready"
        assert await server.manager.read("s", 0, 300) == b"1" * 200


async def test_a_websocket_writer_is_refused_while_a_source_is_connected(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as source:
            await source.send_all(
                b"PUT /streams/radio HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\n"
                b"Content-Length: 8\r\n\r\nfirst"
            )

            async def started() -> bool:
                await trio.lowlevel.checkpoint()
                return any(i.size == 5 for i in server.manager.list())

            await eventually(started)
            async with connect(server.url) as client:
                with pytest.raises(StreamBusyError):
                    await client.append("radio", b"ws bytes")
                with pytest.raises(StreamBusyError):
                    await client.finalize("radio")
            second_status, second = await put(server, "radio", b"x")
            assert (second_status, second["error"]["code"]) == (409, "busy")
            await source.send_all(b"end")
            status, body = await read_answer(source)
        assert (status, body["size"], body["status"]) == (200, 8, "ready")
        assert await server.manager.read("radio", 0, 100) == b"firstend"


async def test_the_lease_dies_with_the_connection_and_a_resume_takes_over(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        async with connect(server.url) as first:
            await first.create("s")
            await first.append("s", b"a" * 1000)
        # The first connection is gone: a resumed upload on a new one goes on at once.
        async with connect(server.url) as second:
            stat = await second.upload("s", b"a" * 1500, resume=True)
        assert (stat.status, stat.size) == ("ready", 1500)


async def test_an_idle_writer_yields_after_writer_timeout(tmp_path: Path) -> None:
    async with (
        running(tmp_path, writer_timeout=0.3) as server,
        connect(server.url) as idle,
        connect(server.url) as resumed,
    ):
        await idle.create("s")
        await idle.append("s", b"a" * 100)  # bound, then silent (a connection that died unseen)
        with pytest.raises(StreamBusyError):
            await resumed.append("s", b"b" * 100, offset=100)
        await trio.sleep(0.4)
        assert await resumed.append("s", b"b" * 100, offset=100) == 200
        with pytest.raises(StreamBusyError):
            await idle.append("s", b"c" * 100)  # the newer writer is active: refused
        assert await server.manager.read("s", 0, 300) == b"a" * 100 + b"b" * 100


async def test_a_read_only_hello_ends_the_upload_binding(tmp_path: Path) -> None:
    """Regression: binary frames sent after a second hello with a read-only token were
    still appended under the first token's write rights."""
    auth = AuthConfig(
        tokens=(TokenConfig(token=WRITER), TokenConfig(token=READER, scopes=("read",)))
    )
    async with (
        running(tmp_path, auth=auth) as server,
        v1_connect(f"{server.url}/v1/streams/s") as v1,
    ):
        assert (await v1.call(Hello(id=1, token=WRITER)))["ok"]
        assert (await v1.call(Create(id=2)))["ok"]
        await v1.upload(b"granted", request_id=3)
        assert (await v1.call(Hello(id=4, token=READER)))["ok"]
        await v1.ws.send(b"smuggled")
        event = await v1.ws.receive_json()
        assert (event["op"], event["error"]["code"]) == ("error", "bad-request")
        stat = await v1.call(Stat(id=5))
        assert stat["stat"]["size"] == len(b"granted")
        refused = await v1.call(Append(id=6))
        assert refused["error"]["code"] == "unauthorized"
        # The writer's token gives the right back.
        assert (await v1.call(Hello(id=7, token=WRITER)))["ok"]
        await v1.upload(b"!", offset=7, request_id=8)
        assert await server.manager.read("s", 0, 100) == b"granted!"
