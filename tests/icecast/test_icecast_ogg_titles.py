"""Titles in Ogg on a real server: a title set while an Icecast source streams Opus or
Vorbis becomes a chained logical stream in the stored bytes, which ffprobe, mpv and ffmpeg
read from a live listener and from the finished file."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import trio
from icecast_helpers import (
    admin_metadata,
    connect,
    has_size,
    open_source,
    read_head,
    read_to_end,
    running_server,
    wait_until,
)

from mmstream.ogg import BOS, OggPage, OggPages
from mmstream.server import RunningServer
from mmstream.streams import StreamStatus

FFMPEG, FFPROBE, MPV = shutil.which("ffmpeg"), shutil.which("ffprobe"), shutil.which("mpv")
needs_ffmpeg = pytest.mark.skipif(
    None in (FFMPEG, FFPROBE), reason="ffmpeg is not installed (apt-get install ffmpeg)"
)
CODECS = {"opus": ["-c:a", "libopus", "-b:a", "32k"], "vorbis": ["-c:a", "libvorbis"]}
FIRST, SECOND = "Sigur Rós — Hoppípolla", "été"


def encode(tmp_path: Path, codec: str, seconds: int) -> bytes:
    out = tmp_path / f"tone-{codec}.ogg"
    subprocess.run([str(FFMPEG), "-v", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={seconds}", *CODECS[codec], str(out)],
                   check=True)  # fmt: skip
    return out.read_bytes()


def chains(data: bytes) -> list[bytes]:
    """``data`` cut at each beginning-of-stream page."""
    found: list[OggPage] = []
    OggPages().feed(data, 0, found)
    starts = [p.offset for p in found if p.flags & BOS] + [len(data)]
    return [data[a:b] for a, b in itertools.pairwise(starts)]


def probe_title(data: bytes | str) -> str:
    """ffprobe's title of the stream at a URL or in bytes (from their first chain)."""
    source, given = (data, None) if isinstance(data, str) else ("pipe:", data)
    return subprocess.run([str(FFPROBE), "-v", "error", "-show_entries", "stream_tags=title",
                           "-of", "default=nw=1:nk=1", source], input=given,
                          capture_output=True, check=True, timeout=30).stdout.decode().strip()  # fmt: skip


async def send_slowly(source: trio.SocketStream, data: bytes) -> None:
    for at in range(0, len(data), 2000):
        await source.send_all(data[at : at + 2000])
        await trio.sleep(0.01)


async def listen(server: RunningServer, out: list[bytes]) -> None:
    stream = await connect(server)
    await stream.send_all(b"GET /streams/radio HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, rest = await read_head(stream)
    assert status == 200
    out.append(await read_to_end(stream, rest))


@needs_ffmpeg
@pytest.mark.parametrize("codec", CODECS)
async def test_a_title_becomes_a_chain_for_listeners_and_in_the_file(
    tmp_path: Path, codec: str
) -> None:
    data = encode(tmp_path, codec, 9)
    third = len(data) // 3
    async with running_server(tmp_path, burst_size=1000) as server:
        source = await open_source(server, "radio")
        await send_slowly(source, data[:third])
        await wait_until(has_size(server, "radio", third))
        early: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen, server, early)
            status, _ = await admin_metadata(server, "mount=/streams/radio&mode=updinfo&song="
                                    + quote(FIRST))  # fmt: skip
            assert status == 200
            await send_slowly(source, data[third : 2 * third])
            await wait_until(has_size(server, "radio", 2 * third + 100))
            # A listener joining now gets the chain's header: the new title.
            url = f"{server.http_url}/streams/radio"
            assert await trio.to_thread.run_sync(probe_title, url) == FIRST
            # A title in Latin-1 (charset=) is written as UTF-8 like any other.
            status, _ = await admin_metadata(server, "mount=/streams/radio&mode=updinfo&charset=latin1"
                                    "&song=" + quote(SECOND.encode("latin-1")))  # fmt: skip
            assert status == 200
            await send_slowly(source, data[2 * third :])
            await source.send_eof()
            await read_to_end(source)
        assert server.manager.stat("radio").status is StreamStatus.READY
        stored = await server.manager.read("radio", 0, server.manager.stat("radio").size)
        for got in (early[0], stored):
            titles = [probe_title(chain) for chain in chains(got)]
            assert titles[-2:] == [FIRST, SECOND]
        # The file is a valid chained Ogg: ffmpeg decodes it whole without a complaint.
        path = tmp_path / f"stored.{codec}.ogg"
        path.write_bytes(stored)
        done = await trio.run_process([str(FFMPEG), "-v", "error", "-i", str(path), "-f",
                                       "null", "-"], capture_stderr=True, check=False)  # fmt: skip
        assert done.returncode == 0 and done.stderr == b""


@needs_ffmpeg
@pytest.mark.skipif(MPV is None, reason="mpv is not installed (apt-get install mpv)")
async def test_mpv_shows_a_new_title_while_it_listens(tmp_path: Path) -> None:
    data = encode(tmp_path, "opus", 12)
    async with running_server(tmp_path) as server:
        source = await open_source(server, "radio")
        step = len(data) // 12  # about a second of audio

        async def stream_and_retitle() -> None:
            await send_slowly(source, data[: 2 * step])
            await trio.sleep(1.5)  # mpv is listening now
            await admin_metadata(server, "mount=/streams/radio&mode=updinfo&song=" + quote(FIRST))
            for at in range(2 * step, len(data), step // 4):
                await source.send_all(data[at : at + step // 4])
                await trio.sleep(0.25)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_and_retitle)
            await wait_until(has_size(server, "radio", step))
            result = await trio.run_process(
                [MPV or "mpv", "--no-config", "--no-video", "--ao=null", "--length=6",
                 "--stream-lavf-o=icy=0",  # the title from the Ogg comments alone
                 f"{server.http_url}/streams/radio"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
        shown = result.stdout.decode(errors="replace")
        # mpv prints the stream's tags again when a chain brings new ones (with ffmpeg 5's
        # Opus demuxer the old title stays, joined by ";": the new one is last).
        assert "Title: " in shown and shown.rsplit("Title: ", 1)[1].split("\n")[0].endswith(FIRST)
