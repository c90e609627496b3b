"""Titles a source sends inside its Ogg stream (a new chained logical stream whose comment
header has TITLE= / ARTIST=, as ices2 and Liquidsoap send them): they become the stream's
title, as if set through /admin/metadata, for stat, /status-json.xsl and ICY listeners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from icecast_helpers import (
    FFMPEG,
    body_json,
    connect,
    exchange,
    needs_ffmpeg,
    open_source,
    read_head,
    read_to_end,
    running_server,
    wait_until,
)
from ogg_pages import HEADER, page

from mmstream.client import connect as connect_client
from mmstream.icecast import split_icy
from mmstream.ogg import OggChainer
from mmstream.server import RunningServer


async def opus(path: Path, seconds: int, *metadata: str) -> bytes:
    tags = [arg for item in metadata for arg in ("-metadata", item)]
    await trio.run_process(
        [FFMPEG or "ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", f"sine=d={seconds}",
         "-c:a", "libopus", "-b:a", "32k", *tags, str(path)]
    )  # fmt: skip
    return await trio.Path(path).read_bytes()


def titles(server: RunningServer, stream_id: str) -> list[str]:
    return [t.title for t in server.manager.stat(stream_id).titles]


async def status_json_title(server: RunningServer) -> str:
    status, _, body = await exchange(
        server, "GET /status-json.xsl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200
    source = body_json(body)["icestats"]["source"]
    return str((source[0] if isinstance(source, list) else source)["title"])


async def read_until(stream: trio.SocketStream, body: bytearray, wanted: bytes) -> None:
    with trio.fail_after(10):
        while wanted not in body:
            piece = await stream.receive_some()
            assert piece, "the listener's connection ended"
            body += piece


@needs_ffmpeg
async def test_a_sources_ogg_titles_reach_stat_status_json_and_icy_listeners(
    tmp_path: Path,
) -> None:
    first = await opus(tmp_path / "a.opus", 2, "title=First Song")
    second = await opus(tmp_path / "b.opus", 2, "title=Second Song", "artist=Été")
    async with running_server(tmp_path, icy_metaint=1000, burst_size=0) as server:
        source = await open_source(server, "radio")
        await source.send_all(first)
        await wait_until(lambda: titles(server, "radio") == ["First Song"])
        assert await status_json_title(server) == "First Song"
        icy = await connect(server)
        await icy.send_all(b"GET /streams/radio HTTP/1.1\r\nHost: x\r\nIcy-MetaData: 1\r\n\r\n")
        status, headers, rest = await read_head(icy)
        assert status == 200 and headers["icy-metaint"] == "1000"
        body = bytearray(rest)
        await trio.sleep(1.1)  # titles from the stream: at most one a second
        for at in range(0, len(second), 1000):  # a live source: its pages keep coming
            await source.send_all(second[at : at + 1000])
            await trio.sleep(0.01)
        wanted = "StreamTitle='Été - Second Song';".encode()
        await read_until(icy, body, wanted)
        _, blocks = split_icy(bytes(body), 1000)
        assert blocks[-1] == wanted
        assert titles(server, "radio") == ["First Song", "Été - Second Song"]
        assert await status_json_title(server) == "Été - Second Song"
        await source.send_eof()
        await read_to_end(source)
        await icy.aclose()
        # The titles were in the bytes already: no chain was written for them.
        stored = await server.manager.read("radio", 0, server.manager.stat("radio").size)
        assert stored == first + second


@needs_ffmpeg
async def test_a_websocket_uploads_ogg_titles_become_the_streams(tmp_path: Path) -> None:
    """Regression: titles in a WebSocket upload's Ogg stream were not heard. They are, as
    an Icecast source's, also when the upload resumes on a new connection in the middle of
    a page, and the bytes are stored as sent (the upload's offsets are its client's)."""
    first = await opus(tmp_path / "a.opus", 2, "title=First Song")
    second = await opus(tmp_path / "b.opus", 2, "title=Second Song", "artist=Été")
    cut = len(first) + 101  # inside the second file's first page
    sent = first + second
    async with running_server(tmp_path, burst_size=0) as server:
        async with connect_client(server.url, stream="radio") as client:
            await client.create("radio", content_type="audio/ogg")
            await client.append("radio", first[:7])  # a first frame too short to tell
            await client.append("radio", first[7:])
            await wait_until(lambda: titles(server, "radio") == ["First Song"])
            assert await status_json_title(server) == "First Song"
            await client.append("radio", sent[len(first) : cut])
        await trio.sleep(1.1)  # titles from the stream: at most one a second
        async with connect_client(server.url, stream="radio") as client:
            for at in range(cut, len(sent), 1000):
                await client.append("radio", sent[at : at + 1000], offset=at)
            await wait_until(lambda: titles(server, "radio")[-1:] == ["Été - Second Song"])
            assert titles(server, "radio") == ["First Song", "Été - Second Song"]
            assert await status_json_title(server) == "Été - Second Song"
            await client.finalize("radio")
        assert await server.manager.read("radio", 0, len(sent) + 1) == sent


async def _flood_through_icecast(server: RunningServer, pieces: list[bytes]) -> None:
    source = await open_source(server, "radio")
    for piece in pieces:  # a new titled chain every few milliseconds
        await source.send_all(piece)
        await trio.sleep(0.005)
    await source.send_eof()
    await read_to_end(source)


async def _flood_through_websocket(server: RunningServer, pieces: list[bytes]) -> None:
    async with connect_client(server.url, stream="radio") as client:
        await client.create("radio", content_type="audio/ogg")
        for piece in pieces:
            await client.append("radio", piece)
            await trio.sleep(0.005)
        await client.finalize("radio")


@pytest.mark.parametrize("flood", [_flood_through_icecast, _flood_through_websocket])
async def test_a_source_changing_titles_at_every_page_does_not_flood_the_history(
    tmp_path: Path, flood: Callable[[RunningServer, list[bytes]], Awaitable[None]]
) -> None:
    chainer = OggChainer()
    pieces = [chainer.feed(HEADER + page(0), None)]
    pieces += [chainer.feed(page(i), f"Title {i}") for i in range(1, 60)]
    pieces.append(chainer.flush())
    async with running_server(tmp_path) as server:
        await flood(server, pieces)
        history = titles(server, "radio")
    # One title a second at most, and the newest is the stream's at the source's end.
    assert 1 <= len(history) <= 3 and history[-1] == "Title 59", history
