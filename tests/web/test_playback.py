"""GET/HEAD /streams/{id} decided against a real manager on real files (no sockets here;
the server tests drive the same code over HTTP)."""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator

import pytest
import trio

from mmstream.metrics import Metrics
from mmstream.server._fanout import FanoutHub
from mmstream.streams import StreamManager, StreamStatus
from mmstream.web.playback import Response, stream_response

DATA = bytes(random.Random(6).randbytes(300_000))


async def _body(response: Response) -> bytes:
    match response.body:
        case None:
            return b""
        case bytes() as body:
            return body
        case pieces:
            return b"".join([piece async for piece in pieces])


async def _ready(manager: StreamManager, stream_id: str = "song", data: bytes = DATA,
                 content_type: str = "audio/webm") -> None:  # fmt: skip
    await manager.create(stream_id, content_type=content_type)
    await manager.append(stream_id, data)
    await manager.finalize(stream_id)


async def test_whole_stream_in_bounded_pieces(manager: StreamManager, hub: FanoutHub) -> None:
    await _ready(manager)
    response = await stream_response(manager, "song", {}, piece_size=8192, follow=hub.follow)
    assert response.status == 200
    assert response.header("content-length") == str(len(DATA))
    assert response.header("content-type") == "audio/webm"
    assert response.header("accept-ranges") == "bytes"
    info = manager.stat("song")
    assert response.header("etag") == f'"{info.generation}-{info.sha256}"'
    assert str(response.header("last-modified")).endswith(" GMT")
    assert isinstance(response.body, AsyncIterator)
    sizes = [len(piece) async for piece in response.body]
    assert max(sizes) == 8192 and sum(sizes) == len(DATA)


async def test_curl_r_0_99(manager: StreamManager, hub: FanoutHub) -> None:
    await _ready(manager)
    response = await stream_response(manager, "song", {"range": "bytes=0-99"}, follow=hub.follow)
    assert response.status == 206
    assert response.header("content-range") == f"bytes 0-99/{len(DATA)}"
    assert response.header("content-length") == "100"
    assert await _body(response) == DATA[:100]


async def test_random_ranges_equal_slices(manager: StreamManager, hub: FanoutHub) -> None:
    await _ready(manager)
    rng = random.Random(3)
    for _ in range(40):
        first = rng.randrange(len(DATA))
        last = first + rng.randrange(200_000)
        response = await stream_response(
            manager, "song", {"range": f"bytes={first}-{last}"}, piece_size=4096, follow=hub.follow
        )
        assert response.status == 206
        assert await _body(response) == DATA[first : last + 1]


async def test_416(manager: StreamManager, hub: FanoutHub) -> None:
    await _ready(manager)
    response = await stream_response(
        manager, "song", {"range": f"bytes={len(DATA)}-"}, follow=hub.follow
    )
    assert response.status == 416
    assert response.header("content-range") == f"bytes */{len(DATA)}"
    assert await _body(response) == b""


async def test_conditional_requests(manager: StreamManager, hub: FanoutHub) -> None:
    await _ready(manager)
    info = manager.stat("song")
    etag = f'"{info.generation}-{info.sha256}"'
    response = await stream_response(manager, "song", {"if-none-match": etag}, follow=hub.follow)
    assert response.status == 304 and response.body is None
    stale = await stream_response(
        manager, "song", {"range": "bytes=0-9", "if-range": '"x"'}, follow=hub.follow
    )
    assert stale.status == 200
    fresh = await stream_response(
        manager, "song", {"range": "bytes=0-9", "if-range": etag}, follow=hub.follow
    )
    assert fresh.status == 206
    # The same bytes under the same id, after a delete: another stream, another ETag.
    await manager.delete("song")
    await _ready(manager)
    assert manager.stat("song").sha256 == info.sha256
    again = await stream_response(manager, "song", {"if-none-match": etag}, follow=hub.follow)
    assert again.status == 200 and again.header("etag") != etag
    await _body(again)
    ranged = await stream_response(
        manager, "song", {"range": "bytes=0-9", "if-range": etag}, follow=hub.follow
    )
    assert ranged.status == 200  # an If-Range of the old stream gets the whole new one
    await _body(ranged)


@pytest.mark.parametrize(
    ("stream_id", "status"), [("nope", 404), ("../etc/passwd", 400), ("a" * 500, 400), ("", 400)]
)
async def test_bad_ids(manager: StreamManager, hub: FanoutHub, stream_id: str, status: int) -> None:
    response = await stream_response(manager, stream_id, {}, follow=hub.follow)
    assert response.status == status
    assert isinstance(response.body, bytes) and response.body.endswith(b"\n")


async def test_generic_type_is_sniffed(manager: StreamManager, hub: FanoutHub) -> None:
    wav = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + b"\x00" * 40
    await _ready(manager, "w", wav, content_type="application/octet-stream")
    response = await stream_response(manager, "w", {}, follow=hub.follow)
    assert response.header("content-type") == "audio/wav"
    await _ready(manager, "x", b"\x00" * 10, content_type="application/octet-stream")
    assert (await stream_response(manager, "x", {}, follow=hub.follow)).header(
        "content-type"
    ) == "application/octet-stream"


async def test_live_listener_gets_everything_then_the_end(
    manager: StreamManager, hub: FanoutHub
) -> None:
    metrics = hub.metrics
    assert metrics is not None
    await manager.create("live", content_type="audio/webm")
    await manager.append("live", DATA[:1000])
    response = await stream_response(
        manager, "live", {"range": "bytes=0-"}, metrics=metrics, follow=hub.follow
    )
    assert response.status == 200
    assert response.header("content-length") is None
    assert response.header("cache-control") == "no-store"
    assert isinstance(response.body, AsyncIterator)
    received = bytearray()

    async def listen() -> None:
        assert isinstance(response.body, AsyncIterator)
        async for piece in response.body:
            received.extend(piece)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        for start in range(1000, len(DATA), 50_000):
            await trio.sleep(0.001)
            await manager.append("live", DATA[start : start + 50_000])
        await trio.sleep(0.01)
        assert metrics.registry.get_sample_value("mmstream_followers") == 1
        # Followed through the hub, the server's one follow path (no loop of its own).
        assert hub.statistics()["followers"] == 1
        await manager.finalize("live")
    assert bytes(received) == DATA
    assert metrics.registry.get_sample_value("mmstream_followers") == 0
    assert metrics.registry.get_sample_value("mmstream_bytes_out_total", {"via": "http"}) == len(
        DATA
    )


async def test_live_listener_on_delete_stops_short(manager: StreamManager, hub: FanoutHub) -> None:
    await manager.create("gone")
    await manager.append("gone", b"abc")
    response = await stream_response(manager, "gone", {}, follow=hub.follow)
    assert isinstance(response.body, AsyncIterator)
    assert await anext(response.body) == b"abc"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.delete, "gone")
        with pytest.raises(KeyError):
            await anext(response.body)


async def test_ranges_on_a_growing_stream(manager: StreamManager, hub: FanoutHub) -> None:
    await manager.create("g")
    await manager.append("g", DATA[:5000])
    part = await stream_response(manager, "g", {"range": "bytes=100-"}, follow=hub.follow)
    assert (part.status, part.header("content-range")) == (206, "bytes 100-4999/*")
    assert await _body(part) == DATA[100:5000]
    past = await stream_response(manager, "g", {"range": "bytes=5000-"}, follow=hub.follow)
    assert (past.status, past.header("content-range")) == (416, None)


async def test_a_stream_in_error_is_not_served(manager: StreamManager, hub: FanoutHub) -> None:
    await manager.create("broken")
    await manager.append("broken", b"abc")
    # As a failed fsync leaves it (the fault-injection tests in tests/streams do it for real).
    manager._get("broken").set_status(StreamStatus.ERROR, error="fsync failed: EIO")
    metrics = Metrics(process=False)
    response = await stream_response(manager, "broken", {}, metrics=metrics, follow=hub.follow)
    assert response.status == 503
    assert await _body(response) == b"io-error: stream broken is in error: fsync failed: EIO\n"
    assert metrics.registry.get_sample_value("mmstream_errors_total", {"code": "io-error"}) == 1
