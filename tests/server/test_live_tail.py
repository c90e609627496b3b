"""``tail`` with ``live``: a WebSocket follower joining mid-stream gets the stream's header,
then bytes from a decoder start point near the live edge — what HTTP live listeners get."""

from __future__ import annotations

import io
import json
import struct
import wave
from pathlib import Path

import pytest
import trio
from websockets.trio.client import connect as ws_connect

from mmstream.client import connect
from mmstream.config import CacheConfig, Config, ServerConfig
from mmstream.server import RunningServer, serve

RATE, WIDTH, CHANNELS = 16_000, 2, 2  # block_align 4: a start point is a whole sample frame


def wav_stream(seconds: float) -> tuple[bytes, int]:
    """A WAV stream and its header's length."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(CHANNELS)
        writer.setsampwidth(WIDTH)
        writer.setframerate(RATE)
        frames = range(int(RATE * seconds))
        writer.writeframes(b"".join(struct.pack("<hh", i % 3000, -(i % 3000)) for i in frames))
    data = out.getvalue()
    return data, data.index(b"data") + 8


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> RunningServer:
    config = Config(cache=CacheConfig(directory=tmp_path / "cache"), server=ServerConfig(port=0))
    running: RunningServer = await nursery.start(serve, config)
    return running


async def test_a_late_websocket_follower_gets_the_header_then_a_start_point(
    server: RunningServer,
) -> None:
    data, header_length = wav_stream(3.0)
    async with connect(server.url) as uploader, connect(server.url) as listener:
        await uploader.create("w", content_type="audio/wav")
        await uploader.append("w", data[: len(data) // 2])
        follower = await listener.tail("w", live=True)
        assert follower.header == header_length
        start = follower.offset
        assert header_length <= start <= len(data) // 2
        assert (start - header_length) % (WIDTH * CHANNELS) == 0  # a whole sample frame
        await uploader.append("w", data[len(data) // 2 :])
        await uploader.finalize("w")
        received = b"".join([chunk async for chunk in follower])
    assert received[:header_length] == data[:header_length]
    assert received[header_length:] == data[start:]
    assert follower.end is not None and follower.end.status == "ready"


async def test_live_on_a_finished_stream_starts_at_its_end(server: RunningServer) -> None:
    data, _ = wav_stream(0.5)
    async with connect(server.url) as client:
        await client.create("done", content_type="audio/wav")
        await client.append("done", data)
        await client.finalize("done")
    async with connect(server.url) as client:
        follower = await client.tail("done", live=True)
        assert (follower.header, follower.offset) == (0, len(data))
        assert [chunk async for chunk in follower] == []


@pytest.mark.parametrize(
    ("request_text", "code"),
    [
        ('{"op":"tail","id":1,"offset":0,"live":true}', "bad-request"),
        ('{"op":"tail","id":1,"live":1}', "bad-request"),  # a flag is true or false
        ('{"op":"tail","id":1,"live":"yes"}', "bad-request"),
    ],
)
async def test_bad_live_tails_are_refused(
    server: RunningServer, request_text: str, code: str
) -> None:
    async with connect(server.url) as client:
        await client.create("x")
    async with ws_connect(f"{server.url}/v1/streams/x") as ws:
        await ws.send(request_text)
        reply = json.loads(await ws.recv())
    assert reply["re"] == 1 and reply["ok"] is False and reply["error"]["code"] == code


async def test_a_late_follower_starts_near_the_live_edge(server: RunningServer) -> None:
    """With the stream followed as it is recorded (in 4 KiB pieces), a late live follower
    starts within a burst of the edge, on a sample frame, after the header."""
    data, header_length = wav_stream(4.0)
    half = len(data) // 2
    async with (
        connect(server.url) as uploader,
        connect(server.url) as early,
        connect(server.url) as late,
    ):
        await uploader.create("rec", content_type="audio/wav")
        await uploader.append("rec", data[: header_length + 4096])
        first = await early.tail("rec", live=True)  # the stream's broadcaster starts here
        for at in range(header_length + 4096, half, 4096):
            await uploader.append("rec", data[at : min(at + 4096, half)])
        await trio.sleep(0.3)  # the broadcaster reads what was appended
        follower = await late.tail("rec", live=True)
        burst = 64 * 1024  # icecast.burst_size's default
        assert half - burst - 4096 <= follower.offset <= half
        assert (follower.offset - header_length) % (WIDTH * CHANNELS) == 0
        await uploader.append("rec", data[half:])
        await uploader.finalize("rec")
        received = b"".join([chunk async for chunk in follower])
        whole = b"".join([chunk async for chunk in first])
    assert received == data[:header_length] + data[follower.offset :]
    assert whole[:header_length] == data[:header_length]
    assert whole[first.header :] == data[first.offset :]
