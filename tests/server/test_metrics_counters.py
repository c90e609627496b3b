"""Every metric of /metrics moves when its event happens: one test per counter, histogram
and gauge of mmstream/metrics.py, scraped from a real server over HTTP after the event was
caused through the real routes (WebSocket client, HTTP GET, Icecast PUT on a raw socket)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import eventually

from mmstream import __version__
from mmstream.cache import KiB, MiB
from mmstream.client import connect
from mmstream.config import ByteSize, CacheConfig, Config, ServerConfig
from mmstream.errors import OffsetConflictError, StreamNotFoundError
from mmstream.server import RunningServer, serve

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@asynccontextmanager
async def running(tmp_path: Path, **cache: Any) -> AsyncIterator[RunningServer]:
    settings: dict[str, Any] = {"initial_size": ByteSize(64 * KiB), "sync_interval": 0.05}
    settings.update(cache)
    config = Config(
        cache=CacheConfig(directory=tmp_path / "cache", **settings),
        server=ServerConfig(port=0),
    )
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(serve, config)
        yield server
        server.abort()


async def scrape(server: RunningServer) -> Samples:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        text = (await http.get("/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def icecast_put(server: RunningServer, stream_id: str, body: bytes) -> bytes:
    """A source with a Content-Length body; the server's whole answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(
            f"PUT /streams/{stream_id} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        answer = b""
        while piece := await stream.receive_some(65536):
            answer += piece
    return answer


async def test_build_info(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        samples = await scrape(server)
    assert value(samples, "mmstream_build_info", version=__version__) == 1


async def test_bytes_in_counts_websocket_and_icecast_uploads(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        async with connect(server.url) as client:
            await client.upload("ws", b"w" * 5000)
        assert b" 200 " in await icecast_put(server, "ice", b"i" * 3000)
        samples = await scrape(server)
    assert value(samples, "mmstream_bytes_in_total") == 8000


async def test_bytes_out_counts_every_path(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        async with connect(server.url) as client:
            await client.upload("s", b"x" * 4000)
            assert await client.read("s", 0, 1000) == b"x" * 1000
            follower = await client.tail("s", 0)  # READY: the bytes, then end
            assert len(b"".join([piece async for piece in follower])) == 4000
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert len((await http.get("/streams/s")).content) == 4000
        samples = await scrape(server)
    assert value(samples, "mmstream_bytes_out_total", via="websocket") == 5000
    assert value(samples, "mmstream_bytes_out_total", via="http") == 4000


async def test_active_connections(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        idle = value(await scrape(server), "mmstream_active_connections")
        async with connect(server.url) as a, connect(server.url) as b:
            await a.list()
            await b.list()
            busy = value(await scrape(server), "mmstream_active_connections")

        async def settled() -> bool:
            return value(await scrape(server), "mmstream_active_connections") == idle

        await eventually(settled)
    assert busy == idle + 2


async def test_followers_count_websocket_tails_and_http_listeners(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        async with connect(server.url) as writer, connect(server.url) as reader:
            await writer.create("live", content_type="audio/mpeg")
            await writer.append("live", b"\xff\xfb" + b"x" * 2000)
            follower = await reader.tail("live", 0)
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                request = http.build_request("GET", "/streams/live?offset=0")
                listener = await http.send(request, stream=True)

                async def two() -> bool:
                    return value(await scrape(server), "mmstream_followers") == 2

                await eventually(two)
                await writer.finalize("live")
                assert len(b"".join([piece async for piece in follower])) == 2002
                assert len(await listener.aread()) == 2002

        async def none() -> bool:
            return value(await scrape(server), "mmstream_followers") == 0

        await eventually(none)
        samples = await scrape(server)
    assert value(samples, "mmstream_bytes_out_total", via="websocket") == 2002
    assert value(samples, "mmstream_bytes_out_total", via="http") == 2002


async def test_evictions(tmp_path: Path) -> None:
    async with running(tmp_path, max_cache_size=ByteSize(256 * KiB)) as server:
        async with connect(server.url) as client:
            for n in range(4):
                await client.upload(f"rec{n}", b"r" * 64 * KiB)
            await client.create("new")  # nothing free: a create evicts nothing
            assert value(await scrape(server), "mmstream_evictions_total") == 0
            await client.append("new", b"n" * 60 * KiB)  # written bytes: one recording goes
            with pytest.raises(StreamNotFoundError):
                await client.stat("rec0")
        samples = await scrape(server)
    assert value(samples, "mmstream_evictions_total") == 1


async def test_expiries(tmp_path: Path) -> None:
    async with running(tmp_path, upload_ttl=0.2) as server:
        async with connect(server.url) as client:
            await client.create("abandoned")
            await client.append("abandoned", b"a" * 100)

        async def expired() -> bool:
            return value(await scrape(server), "mmstream_expiries_total") == 1

        await eventually(expired)
        assert server.manager.list() == []


async def test_errors_count_every_route_by_code(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        async with connect(server.url) as client:
            with pytest.raises(StreamNotFoundError):
                await client.stat("missing")  # a WebSocket error reply
            await client.create("s")
            with pytest.raises(OffsetConflictError):
                await client.append("s", b"x", offset=5)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (await http.get("/streams/missing")).status_code == 404
        await client_upload_ready(server, "done")
        assert b" 409 " in await icecast_put(server, "done", b"late")  # an Icecast error
        samples = await scrape(server)
    assert value(samples, "mmstream_errors_total", code="not-found") == 2
    assert value(samples, "mmstream_errors_total", code="offset-conflict") == 1
    assert value(samples, "mmstream_errors_total", code="not-uploading") == 1


async def client_upload_ready(server: RunningServer, stream_id: str) -> None:
    async with connect(server.url) as client:
        await client.upload(stream_id, b"ready")


async def test_write_read_and_fsync_seconds(tmp_path: Path) -> None:
    async with running(tmp_path, sync_policy="finalize") as server:
        before = await scrape(server)
        async with connect(server.url) as client:
            await client.create("s")
            await client.append("s", b"x" * 100 * KiB)
            after_write = await scrape(server)
            await client.read("s", 0, 10)
            after_read = await scrape(server)
            await client.sync("s")
        after_sync = await scrape(server)
    for name, moved in [
        ("mmstream_write_seconds_count", after_write),
        ("mmstream_read_seconds_count", after_read),
        ("mmstream_fsync_seconds_count", after_sync),
    ]:
        assert value(moved, name) > value(before, name), name


async def test_streams_and_cache_gauges(tmp_path: Path) -> None:
    async with running(tmp_path, max_cache_size=ByteSize(1 * MiB)) as server:
        async with connect(server.url) as client:
            await client.upload("done", b"d" * 5000)
            await client.create("up")
            await client.append("up", b"u" * 1000)
        samples = await scrape(server)
        reserved = server.manager.reserved
    assert value(samples, "mmstream_streams", status="ready") == 1
    assert value(samples, "mmstream_streams", status="uploading") == 1
    assert value(samples, "mmstream_streams", status="error") == 0
    assert value(samples, "mmstream_cache_used_bytes") == 6000
    assert value(samples, "mmstream_cache_reserved_bytes") == reserved > 6000
    assert value(samples, "mmstream_cache_max_bytes") == 1 * MiB
