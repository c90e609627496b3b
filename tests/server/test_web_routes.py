"""Playback, the page and /metrics over real HTTP: the front door on a free loopback port,
a real manager on real files, requests from httpx (a curl stand-in) and a raw h11 client."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import http_client

from mmstream.cache import KiB, MiB
from mmstream.config import ByteSize, CacheConfig, IcecastConfig, ServerConfig
from mmstream.metrics import Metrics
from mmstream.server._admission import Slot
from mmstream.server._fanout import serve_fanout_hub
from mmstream.server._frontdoor import FrontDoor
from mmstream.server._http import Router
from mmstream.server._transports import Connection, make_transport
from mmstream.server._web import add_web_routes
from mmstream.streams import StreamManager, open_stream_manager

DATA = random.Random(7).randbytes(1_000_000)


async def _no_websockets(connection: Connection, slot: Slot) -> None:
    await connection.close()


@asynccontextmanager
async def web_server(
    tmp_path: Path, **server: Any
) -> AsyncIterator[tuple[StreamManager, Metrics, str]]:
    cache = CacheConfig(
        directory=tmp_path / "cache",
        backend="file",
        initial_size=ByteSize(64 * KiB),
        max_cache_size=ByteSize(512 * MiB),
        sync_policy="finalize",
    )
    config = ServerConfig(**server)
    metrics = Metrics(process=False)
    async with open_stream_manager(cache) as manager, trio.open_nursery() as nursery:
        hub = await nursery.start(serve_fanout_hub, manager, IcecastConfig(), metrics)
        router = Router()
        add_web_routes(router, manager, metrics, follow=hub.follow)
        door = FrontDoor(config, lambda: (make_transport(config), _no_websockets), router)
        listeners = await nursery.start(
            partial(
                trio.serve_listeners,
                door.handle,
                await trio.open_tcp_listeners(0, host="127.0.0.1"),
            )
        )
        yield manager, metrics, f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[StreamManager, Metrics, str]]:
    async with web_server(tmp_path) as served:
        yield served


async def _ready(manager: StreamManager, stream_id: str, data: bytes, content_type: str) -> None:
    await manager.create(stream_id, content_type=content_type)
    await manager.append(stream_id, data)
    await manager.finalize(stream_id)


def _port(base: str) -> int:
    return int(base.rpartition(":")[2])


async def test_curl_r_0_99(served: tuple[StreamManager, Metrics, str]) -> None:
    manager, _, base = served
    await _ready(manager, "song", DATA, "audio/ogg")
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{base}/streams/song", headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert response.content == DATA[:100]
    assert response.headers["content-length"] == "100"
    assert response.headers["content-range"] == f"bytes 0-99/{len(DATA)}"
    assert response.headers["content-type"] == "audio/ogg"
    assert response.headers["accept-ranges"] == "bytes"


async def test_whole_suffix_open_and_safari_probe(
    served: tuple[StreamManager, Metrics, str],
) -> None:
    manager, _, base = served
    await _ready(manager, "song", DATA, "audio/ogg")
    url = f"{base}/streams/song"
    async with httpx.AsyncClient() as client:
        whole = await client.get(url)
        assert (whole.status_code, whole.content) == (200, DATA)
        generation = manager.stat("song").generation
        assert whole.headers["etag"] == f'"{generation}-{hashlib.sha256(DATA).hexdigest()}"'
        probe = await client.get(url, headers={"Range": "bytes=0-1"})
        assert (probe.status_code, probe.content) == (206, DATA[:2])
        suffix = await client.get(url, headers={"Range": "bytes=-500"})
        assert (suffix.status_code, suffix.content) == (206, DATA[-500:])
        tail = await client.get(url, headers={"Range": "bytes=999000-"})
        assert (tail.status_code, tail.content) == (206, DATA[999_000:])
        many = await client.get(url, headers={"Range": "bytes=0-1,5-9"})
        assert (many.status_code, many.content) == (200, DATA)


async def test_416_and_errors(served: tuple[StreamManager, Metrics, str]) -> None:
    manager, _, base = served
    await _ready(manager, "song", DATA, "audio/ogg")
    async with httpx.AsyncClient() as client:
        past = await client.get(f"{base}/streams/song", headers={"Range": f"bytes={len(DATA)}-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{len(DATA)}"
        assert past.content == b""
        junk = await client.get(f"{base}/streams/song", headers={"Range": "bytes=x-y"})
        assert junk.status_code == 416
        missing = await client.get(f"{base}/streams/nothing")
        assert missing.status_code == 404 and missing.text.startswith("not-found")
        bad = await client.get(f"{base}/streams/bad%20id")
        assert bad.status_code == 400 and bad.text.startswith("invalid-id")
        dots = await client.get(f"{base}/streams/..%2f..%2fetc")
        assert dots.status_code in (400, 404)
        post = await client.post(f"{base}/streams/song", content=b"x")
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_head_and_keep_alive_on_one_connection(
    served: tuple[StreamManager, Metrics, str],
) -> None:
    manager, _, base = served
    await _ready(manager, "song", DATA, "audio/webm")
    async with http_client(_port(base)) as client:
        head = await client.request("HEAD", "/streams/song")
        assert head.status == 200 and head.body == b""
        assert head.headers["content-length"] == str(len(DATA))
        head_range = await client.request("HEAD", "/streams/song", [("range", "bytes=10-19")])
        assert head_range.status == 206 and head_range.body == b""
        assert head_range.headers["content-length"] == "10"
        # Had a body followed either HEAD, this response would not parse.
        get = await client.request("GET", "/streams/song", [("range", "bytes=10-19")])
        assert (get.status, get.body) == (206, DATA[10:20])
        etag = get.headers["etag"]
        not_modified = await client.request("GET", "/streams/song", [("if-none-match", etag)])
        assert not_modified.status == 304 and not_modified.body == b""
        assert not_modified.headers["content-length"] == str(len(DATA))
        whole = await client.request("GET", "/streams/song")
        assert whole.body == DATA
        assert not await client.closed_by_server(wait=0.1)


async def test_live_listener_over_http(served: tuple[StreamManager, Metrics, str]) -> None:
    manager, metrics, base = served
    await manager.create("live", content_type="audio/webm")
    await manager.append("live", DATA[:1000])
    received = bytearray()

    async def upload() -> None:
        for start in range(1000, len(DATA), 100_000):
            await manager.append("live", DATA[start : start + 100_000])
            await trio.sleep(0.005)
        await manager.finalize("live")

    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", f"{base}/streams/live") as response,
    ):
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        chunks = response.aiter_bytes()
        received += await anext(chunks)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            async for chunk in chunks:
                received += chunk
    assert bytes(received) == DATA
    assert metrics.registry.get_sample_value("mmstream_followers") == 0


async def test_a_deleted_live_stream_ends_the_body_incomplete(
    served: tuple[StreamManager, Metrics, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager, _, base = served
    caplog.set_level(logging.INFO, logger="mmstream")
    await manager.create("doomed", content_type="audio/webm")
    await manager.append("doomed", b"abc")
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", f"{base}/streams/doomed") as response:
            chunks = response.aiter_raw()
            assert await anext(chunks) == b"abc"
            await manager.delete("doomed")
            with pytest.raises(httpx.RemoteProtocolError):  # no final chunk: incomplete
                await anext(chunks)
        assert (await client.get(f"{base}/streams/doomed")).status_code == 404
    assert "response cut short" in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_slow_reader_holds_one_piece_not_the_stream(tmp_path: Path) -> None:
    """Pieces are read from the cache only as the client takes them: while the client
    pauses, what the server has read stays within socket buffers of what it received. And
    the pause may outlast the handshake timeout: only request heads have a deadline."""
    async with web_server(tmp_path, handshake_timeout=0.3) as served:
        await _slow_reader(*served)


async def _slow_reader(manager: StreamManager, metrics: Metrics, base: str) -> None:
    size = 48 * MiB
    await manager.create("big", content_type="audio/wav")
    piece = random.Random(1).randbytes(MiB)
    for _ in range(size // MiB):
        await manager.append("big", piece)
    await manager.finalize("big")
    port = _port(base)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 64 * 1024)
        await stream.send_all(b"GET /streams/big HTTP/1.1\r\nhost: x\r\n\r\n")
        received = 0
        while received < 2 * MiB:
            received += len(await stream.receive_some(16 * KiB))
        await trio.sleep(0.8)  # a client that stopped reading
        sent = metrics.registry.get_sample_value("mmstream_bytes_out_total", {"via": "http"})
        assert sent is not None
        assert sent < received + 8 * MiB < size
        while received < size:  # and it can still read to the end at its own pace
            received += len(await stream.receive_some(256 * KiB))


async def test_page_and_assets(served: tuple[StreamManager, Metrics, str]) -> None:
    _, _, base = served
    async with httpx.AsyncClient() as client:
        page = await client.get(f"{base}/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<script type="module" src="/static/app.js">' in page.text
        script = await client.get(f"{base}/static/app.js")
        assert script.headers["content-type"].startswith("text/javascript")
        again = await client.get(f"{base}/static/app.js",
                                 headers={"If-None-Match": script.headers["etag"]})  # fmt: skip
        assert again.status_code == 304 and again.content == b""
        assert (await client.get(f"{base}/static/style.css")).status_code == 200
        for path in ("/static/..%2f__init__.py", "/static/nope.js", "/static/"):
            assert (await client.get(base + path)).status_code == 404


async def test_metrics_scrape(served: tuple[StreamManager, Metrics, str]) -> None:
    manager, _, base = served
    await _ready(manager, "a", DATA[:5000], "audio/ogg")
    await manager.create("b")
    async with httpx.AsyncClient() as client:
        await client.get(f"{base}/streams/a")
        await client.get(f"{base}/streams/nope")
        response = await client.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples["mmstream_streams", (("status", "ready"),)] == 1
    assert samples["mmstream_streams", (("status", "uploading"),)] == 1
    assert samples["mmstream_streams", (("status", "error"),)] == 0
    assert samples["mmstream_cache_used_bytes", ()] == 5000
    assert samples["mmstream_cache_reserved_bytes", ()] == manager.reserved
    assert samples["mmstream_cache_max_bytes", ()] == 512 * MiB
    assert samples["mmstream_bytes_out_total", (("via", "http"),)] == 5000
    assert samples["mmstream_errors_total", (("code", "not-found"),)] == 1
