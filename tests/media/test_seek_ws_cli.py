"""``time`` on WebSocket ``read``/``tail`` and ``mmstream get --from/--to``: a real server
on a free port, real files from ffmpeg, the client and the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio
from media_files import media, needs_tools, packets
from test_seek_http import _decodes

from mmstream.client import connect
from mmstream.config import CacheConfig, Config, ServerConfig
from mmstream.protocol.codec import MalformedRequestError, decode_request
from mmstream.server import RunningServer, serve


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> RunningServer:
    config = Config(cache=CacheConfig(directory=tmp_path / "cache"), server=ServerConfig(port=0))
    running: RunningServer = await nursery.start(serve, config)
    return running


async def _upload(server: RunningServer, stream: str, data: bytes) -> None:
    async with connect(server.url) as client:
        await client.create(stream, content_type="application/octet-stream")
        await client.append(stream, data)
        await client.finalize(stream)


@needs_tools
@pytest.mark.parametrize("kind", ["mp3", "opus", "webm"])
async def test_tail_and_read_from_a_time(server: RunningServer, kind: str) -> None:
    data = media(kind)
    await _upload(server, "take", data)
    expected = await server.manager.seek("take", seconds=5.0)
    async with connect(server.url) as client:
        assert await client.offset_at("take", 5.0) == expected.offset
        follower = await client.tail("take", time=5.0)
        assert (follower.offset, follower.header) == (expected.offset, len(expected.header))
        got = b"".join([chunk async for chunk in follower])
    assert got == expected.header + data[expected.offset :]
    assert _decodes(got) == ""
    if kind == "mp3":
        assert expected.offset in {pos for _, pos in packets(data)}


def test_time_is_a_number_and_not_an_offset_too() -> None:
    assert decode_request('{"op":"tail","id":1,"stream":"s","time":-2.5}').time == -2.5
    for text in ('{"op":"tail","id":1,"stream":"s","time":1,"offset":0}',
                 '{"op":"tail","id":1,"stream":"s","time":1,"live":true}',
                 '{"op":"read","id":1,"stream":"s","time":1,"offset":5}',
                 '{"op":"read","id":1,"stream":"s","time":"1"}',
                 '{"op":"read","id":1,"stream":"s","time":true}',
                 '{"op":"read","id":1,"stream":"s","time":1e300}'):  # fmt: skip
        with pytest.raises(MalformedRequestError):
            decode_request(text)


@needs_tools
async def test_cli_get_from_to(server: RunningServer, tmp_path: Path) -> None:
    data = media("mp3")
    await _upload(server, "show", data)
    out = tmp_path / "part.mp3"
    env = {**os.environ, "MMSTREAM_URL": server.url}
    done = await trio.run_process(
        [sys.executable, "-m", "mmstream", "get", "show", "--from", "0:03", "--to", "6.5",
         "-o", str(out)],
        env=env, capture_stderr=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    start = await server.manager.offset_at("show", 3.0)
    stop = await server.manager.offset_at("show", 6.5)
    assert out.read_bytes() == data[start:stop]
    probe = await trio.run_process(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         str(out)], capture_stdout=True, check=True,
    )  # fmt: skip
    assert abs(float(probe.stdout) - 3.5) < 0.06
    bad = await trio.run_process(
        [sys.executable, "-m", "mmstream", "get", "show", "--from", "5", "--to", "4", "-o",
         str(tmp_path / "x")], env=env, capture_stderr=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and b"--to is not after --from" in bad.stderr
