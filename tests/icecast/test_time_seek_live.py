"""``?t=`` on a live stream over real HTTP: an Icecast source on the real server, a listener
that asks for a time (the live-listener route leaves it to playback)."""

from __future__ import annotations

from pathlib import Path

import httpx
from icecast_helpers import has_size, open_source, running_server, wait_until
from ogg_pages import HEADER, page

from mmstream.streams import StreamStatus


async def test_a_live_listener_starts_at_a_time_with_the_header_first(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        source = await open_source(server, "live")
        stream = HEADER + b"".join(page(i) for i in range(20))  # 20 ms pages
        await source.send_all(stream)
        await wait_until(has_size(server, "live", len(stream)))
        start = len(HEADER) + 5 * len(page(0))  # page 5 starts at 0.1 s
        more = b"".join(page(i) for i in range(20, 23))
        url = f"http://127.0.0.1:{server.port}/streams/live"
        async with httpx.AsyncClient() as client:
            bad = await client.get(url, params={"t": "soon"})
            assert bad.status_code == 400
            async with client.stream("GET", url, params={"t": "0.11"}) as response:
                assert response.status_code == 200
                assert response.headers["x-mmstream-offset"] == str(start)
                assert response.headers["x-mmstream-time"] == "0.100"
                got = b""
                pieces = response.aiter_raw()
                while len(got) < len(HEADER) + len(stream) - start:
                    got += await anext(pieces)
                assert got == HEADER + stream[start:]
                await source.send_all(more)
                await source.send_eof()
                async for piece in pieces:
                    got += piece
        assert got == HEADER + (stream + more)[start:]
        assert server.manager.stat("live").status is StreamStatus.READY
