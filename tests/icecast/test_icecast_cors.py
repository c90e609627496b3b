"""CORS on the wire: live listeners, playback, status and preflights."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
from icecast_helpers import (
    connect,
    live_source,
    make_config,
    read_head,
)

from mmstream.server import RunningServer, serve

SITE = "https://player.example"


@asynccontextmanager
async def cors_server(tmp_path: Path, origins: tuple[str, ...]) -> AsyncIterator[RunningServer]:
    config = make_config(tmp_path / "c")
    config = attrs.evolve(config, server=attrs.evolve(config.server, cors_origins=origins))
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(serve, config)
        yield server
        server.abort()


async def head_of(server: RunningServer, request: str) -> tuple[int, dict[str, str]]:
    stream = await connect(server)
    await stream.send_all(request.encode())
    status, headers, _ = await read_head(stream)
    await stream.aclose()
    return status, headers


async def test_browser_players_get_cors_and_icy_headers_exposed(tmp_path: Path) -> None:
    async with cors_server(tmp_path, (SITE,)) as server:
        source = await live_source(
            server, "radio", b"\xff\xfb\x90\x64" + bytes(413), content_type="audio/mpeg"
        )
        # The preflight a fetch with Icy-MetaData sends.
        status, headers = await head_of(
            server,
            f"OPTIONS /streams/radio HTTP/1.1\r\nHost: x\r\nOrigin: {SITE}\r\n"
            "Access-Control-Request-Method: GET\r\n"
            "Access-Control-Request-Headers: icy-metadata\r\n\r\n",
        )
        assert status == 204
        assert headers["access-control-allow-origin"] == SITE
        assert "icy-metadata" in headers["access-control-allow-headers"]
        # The live answer.
        status, headers = await head_of(
            server,
            f"GET /streams/radio HTTP/1.1\r\nHost: x\r\nOrigin: {SITE}\r\nIcy-MetaData: 1\r\n\r\n",
        )
        assert status == 200 and headers["icy-metaint"] == "16000"
        assert headers["access-control-allow-origin"] == SITE
        assert "icy-metaint" in headers["access-control-expose-headers"]
        # Playback (Range) and the status document go through the router.
        for target in ("/status-json.xsl", "/healthz"):
            status, headers = await head_of(
                server, f"GET {target} HTTP/1.1\r\nHost: x\r\nOrigin: {SITE}\r\n\r\n"
            )
            assert status == 200 and headers["access-control-allow-origin"] == SITE
        status, headers = await head_of(
            server,
            f"GET /streams/radio HTTP/1.1\r\nHost: x\r\nOrigin: {SITE}\r\nRange: bytes=0-3\r\n\r\n",
        )
        assert status == 206 and headers["access-control-allow-origin"] == SITE
        # Another site gets nothing to read, and no preflight.
        status, headers = await head_of(
            server,
            "GET /streams/radio HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\r\n",
        )
        assert status == 200 and "access-control-allow-origin" not in headers
        status, headers = await head_of(
            server,
            "OPTIONS /streams/radio HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n"
            "Access-Control-Request-Method: GET\r\n\r\n",
        )
        assert status == 405 and "access-control-allow-origin" not in headers
        await source.aclose()


async def test_cors_is_off_by_default(tmp_path: Path) -> None:
    async with cors_server(tmp_path, ()) as server:
        status, headers = await head_of(
            server, f"GET /status-json.xsl HTTP/1.1\r\nHost: x\r\nOrigin: {SITE}\r\n\r\n"
        )
        assert status == 200 and not any(k.startswith("access-control") for k in headers)
        status, _ = await head_of(
            server,
            f"OPTIONS /status-json.xsl HTTP/1.1\r\nHost: x\r\nOrigin: {SITE}\r\n"
            "Access-Control-Request-Method: GET\r\n\r\n",
        )
        assert status == 405
