"""Listener limits per stream (Icecast's max-listeners)."""

from __future__ import annotations

from pathlib import Path

import trio
from icecast_helpers import (
    MP3_FRAME,
    connect,
    live_source,
    open_listener,
    read_head,
    read_to_end,
    running_server,
)

from mmstream.config import MountConfig
from mmstream.server import RunningServer


async def refused(server: RunningServer, stream_id: str) -> bool:
    stream = await connect(server)
    await stream.send_all(f"GET /streams/{stream_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, _, rest = await read_head(stream)
    body = await read_to_end(stream, rest) if status != 200 else b""
    await stream.aclose()
    return status == 403 and body == b"max listeners reached\n"


async def test_max_listeners_per_stream_as_icecast(tmp_path: Path) -> None:
    mounts = (MountConfig("small-*", max_listeners=2),)
    async with running_server(tmp_path, max_listeners=3, mounts=mounts) as server:
        sources = []
        for stream_id in ("small-1", "big"):
            source = await live_source(server, stream_id, MP3_FRAME * 4, content_type="audio/mpeg")
            sources.append(source)
        first, _, _ = await open_listener(server, "/streams/small-1")
        second, _, _ = await open_listener(server, "/streams/small-1?offset=0")
        assert await refused(server, "small-1")
        stats = await connect(server)
        await stats.send_all(b"GET /admin/stats HTTP/1.0\r\n\r\n")
        body = await read_to_end(stats)
        assert b'<source mount="/streams/small-1">' in body
        assert body.count(b"<max_listeners>2</max_listeners>") == 1
        assert body.count(b"<max_listeners>3</max_listeners>") == 1
        # Another stream has its own count (the default, 3).
        big = [(await open_listener(server, "/streams/big"))[0] for _ in range(3)]
        assert await refused(server, "big")
        # One leaves: one more may join.
        await first.aclose()
        with trio.fail_after(5):
            while True:
                stream = await connect(server)
                await stream.send_all(b"GET /streams/small-1 HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _, _ = await read_head(stream)
                if status == 200:
                    break
                await stream.aclose()
                await trio.sleep(0.02)
        for held in [second, stream, *big, *sources]:
            await held.aclose()
