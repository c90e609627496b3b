"""Titles: /admin/metadata sets them, ICY listeners hear them in-band, stat keeps them."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
import trio
from icecast_helpers import (
    FFMPEG,
    MP3_FRAME,
    admin_metadata,
    connect,
    has_size,
    live_source,
    needs,
    needs_ffmpeg,
    open_source,
    read_exactly,
    read_head,
    read_to_end,
    running_server,
    wait_until,
)
from ogg_pages import HEADER, page

from mmstream.client import connect as connect_client
from mmstream.config import AuthConfig, TokenConfig
from mmstream.icecast import metadata_block, split_icy
from mmstream.server import RunningServer


async def icy_listener(
    server: RunningServer, stream_id: str
) -> tuple[trio.SocketStream, dict[str, str], bytes]:
    stream = await connect(server)
    await stream.send_all(
        f"GET /streams/{stream_id} HTTP/1.1\r\nHost: x\r\nIcy-MetaData: 1\r\n\r\n".encode()
    )
    status, headers, rest = await read_head(stream)
    assert status == 200
    return stream, headers, rest


async def test_a_title_reaches_icy_listeners_in_band_and_others_get_bytes_unchanged(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, icy_metaint=1000, burst_size=0) as server:
        source = await live_source(server, "radio", MP3_FRAME * 3, content_type="audio/mpeg")
        status, body = await admin_metadata(
            server, "mount=/streams/radio&mode=updinfo&song=" + quote("Guns N' Roses - Don't Cry")
        )
        assert status == 200 and b"<return>1</return>" in body
        icy, headers, rest = await icy_listener(server, "radio")
        assert headers["icy-metaint"] == "1000"
        plain = await connect(server)
        await plain.send_all(b"GET /streams/radio HTTP/1.1\r\nHost: x\r\n\r\n")
        _, plain_headers, plain_rest = await read_head(plain)
        assert "icy-metaint" not in plain_headers
        await source.send_all(MP3_FRAME * 10)
        body = await read_exactly(icy, 2000 + len(metadata_block("x" * 16)), rest)
        audio, blocks = split_icy(body, 1000)
        assert blocks[0] == b"StreamTitle='Guns N' Roses - Don't Cry';"
        status, _ = await admin_metadata(server, "mount=streams/radio&mode=updinfo&song=Second")
        assert status == 200
        await source.send_all(MP3_FRAME * 10)
        more = await read_exactly(icy, len(body) + 3000, body)
        _, blocks = split_icy(more, 1000)
        assert blocks[-1] == b"StreamTitle='Second';"
        plain_body = await read_exactly(plain, len(audio), plain_rest)
        assert plain_body[: len(audio)] == audio  # the same bytes, without the blocks
        titles = server.manager.stat("radio").titles
        assert [t.title for t in titles] == ["Guns N' Roses - Don't Cry", "Second"]
        assert titles[0].offset == 3 * len(MP3_FRAME) and titles[1].offset == 13 * len(MP3_FRAME)
        await source.aclose()
        await icy.aclose()
        await plain.aclose()


async def test_charset_is_honoured_and_utf8_is_the_default(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        source = await open_source(server, "radio", content_type="audio/mpeg")
        status, _ = await admin_metadata(
            server, "mount=/streams/radio&mode=updinfo&song=Caf%E9&charset=latin1"
        )
        assert status == 200
        status, _ = await admin_metadata(
            server, "mount=/streams/radio&mode=updinfo&song=Caf%C3%A9s"
        )
        assert status == 200
        status, _ = await admin_metadata(server, "mount=/streams/radio&mode=updinfo&song=Caf%E9!")
        assert status == 200  # not UTF-8 and no charset: Latin-1, as Icecast's default
        assert [t.title for t in server.manager.stat("radio").titles] == ["Café", "Cafés", "Café!"]
        await source.aclose()


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("mode=updinfo&song=x", 400),  # no mount
        ("mount=/radio&mode=updinfo&song=x", 400),  # not /streams/{id}
        ("mount=/streams/../etc&mode=updinfo&song=x", 400),
        ("mount=/streams/radio&song=x", 400),  # no mode
        ("mount=/streams/radio&mode=updinfo", 400),  # no song
        ("mount=/streams/nope&mode=updinfo&song=x", 404),
        ("mount=/streams/radio&mode=updinfo&song=" + "x" * 2000, 413),
        ("mount=/streams/radio&mode=updinfo&song=%FF%FE&charset=utf-8", 400),
        ("mount=/streams/radio&mode=updinfo&song=x&charset=klingon", 400),
        ("mount=/streams/radio&mode=updinfo&song=" + "x" * 20000, 413),
    ],
)
async def test_hostile_metadata_requests_get_a_clean_4xx(
    tmp_path: Path, query: str, status: int
) -> None:
    async with running_server(tmp_path) as server:
        source = await open_source(server, "radio", content_type="audio/mpeg")
        got, body = await admin_metadata(server, query)
        assert got == status, body
        assert body.startswith(b"<?xml") and b"<return>0</return>" in body
        assert server.manager.stat("radio").titles == ()
        await source.aclose()


async def test_a_finished_stream_takes_no_title(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        source = await open_source(server, "radio", content_type="audio/mpeg")
        await source.send_all(MP3_FRAME)
        await source.send_eof()
        await read_to_end(source)
        got, _ = await admin_metadata(server, "mount=/streams/radio&mode=updinfo&song=late")
        assert got == 409


async def test_titles_need_write_on_the_stream_or_admin(tmp_path: Path) -> None:
    auth = AuthConfig(
        tokens=(
            TokenConfig("w" * 16, scopes=("write",), streams="radio"),
            TokenConfig("r" * 16, scopes=("read",)),
            TokenConfig("o" * 16, scopes=("write",), streams="other"),
            TokenConfig("a" * 16, scopes=("admin",)),
        )
    )
    async with running_server(tmp_path, auth) as server:
        source = await open_source(
            server, "radio", content_type="audio/mpeg", authorization="Bearer " + "w" * 16
        )
        query = "mount=/streams/radio&mode=updinfo&song=t"
        assert (await admin_metadata(server, query))[0] == 401
        for token, status in [("r", 401), ("o", 401), ("w", 200), ("a", 200)]:
            basic = base64.b64encode(f"source:{token * 16}".encode()).decode()
            got, _ = await admin_metadata(server, query, f"Authorization: Basic {basic}\r\n")
            assert got == status, token
        await source.aclose()


FFPROBE = shutil.which("ffprobe")


@needs(FFPROBE, "ffprobe", "ffmpeg")
@needs_ffmpeg
async def test_ffprobe_reads_the_stream_title(tmp_path: Path) -> None:
    async with running_server(tmp_path, icy_metaint=2000, burst_size=0) as server:
        mp3 = tmp_path / "a.mp3"
        await trio.run_process(
            [FFMPEG or "ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=20",
             "-c:a", "libmp3lame", "-b:a", "128k", str(mp3)]
        )  # fmt: skip
        data = mp3.read_bytes()
        source = await live_source(
            server, "radio", data[: len(data) // 2], content_type="audio/mpeg"
        )
        status, _ = await admin_metadata(
            server, "mount=/streams/radio&mode=updinfo&song=" + quote("Sigur Rós - Hoppípolla")
        )
        assert status == 200

        async def feed() -> None:
            for at in range(len(data) // 2, len(data), 4000):
                await source.send_all(data[at : at + 4000])
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            result = await trio.run_process(
                [FFPROBE or "ffprobe", "-v", "error", "-icy", "1", "-show_entries",
                 "format_tags", "-of", "json", f"{server.http_url}/streams/radio"],
                capture_stdout=True,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
        tags = json.loads(result.stdout)["format"]["tags"]
        assert tags["StreamTitle"] == "Sigur Rós - Hoppípolla"
        await source.aclose()


async def test_the_websocket_metadata_op_reaches_icy_listeners(tmp_path: Path) -> None:
    async with running_server(tmp_path, icy_metaint=1000, burst_size=0) as server:
        await _title_over_the_socket(server)


async def _title_over_the_socket(server: RunningServer) -> None:
    async with connect_client(server.url) as client:
        await client.create("radio", content_type="audio/mpeg")
        await client.append("radio", MP3_FRAME * 3)
        icy, _, rest = await icy_listener(server, "radio")
        await client.set_title("Over the socket", "radio")
        await client.append("radio", MP3_FRAME * 10)
        body = await read_exactly(icy, 3000, rest)
        _, blocks = split_icy(body, 1000)
        assert blocks[0] == b"StreamTitle='Over the socket';"
        await icy.aclose()


async def test_an_icy_listener_gets_its_burst_once_and_framed(tmp_path: Path) -> None:
    """Regression: a listener that asked for titles got its header, then its burst raw
    (outside the ICY framing), then the burst again, framed."""
    async with running_server(tmp_path, icy_metaint=1000) as server:
        source = await open_source(server, "radio")
        await source.send_all(HEADER + page(0) + page(1))
        await wait_until(has_size(server, "radio", len(HEADER) + 2 * len(page(0))))
        icy, _, rest = await icy_listener(server, "radio")
        await source.send_all(page(2) + page(3))
        await source.send_eof()
        audio, _ = split_icy(await read_to_end(icy, rest), 1000)
        assert audio == HEADER + b"".join(page(i) for i in range(4))
