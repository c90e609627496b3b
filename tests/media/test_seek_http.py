"""``GET /streams/{id}?t=`` and ``?at=``: real files, a real manager, the answer checked by
ffprobe/ffmpeg (no sockets here; tests/server drives the same code over HTTP)."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from media_files import FFMPEG, KINDS, media, needs_tools, packets

from mmstream.config import CacheConfig
from mmstream.errors import InvalidArgumentError
from mmstream.media import parse_clock
from mmstream.server._fanout import FanoutHub
from mmstream.streams import StreamManager, open_stream_manager
from mmstream.web.playback import Response, stream_response
from mmstream.web.timeseek import TimeQuery, parse_time_query

#: How far before the asked time a seek may land: one Ogg page or WebM cluster (ffmpeg
#: writes them about a second apart), one MP3/AAC frame, one WAV sample frame.
GRANULE = {"opus": 1.05, "vorbis": 1.05, "webm": 1.05, "mp3": 0.027, "aac": 0.024,
           "wav": 1 / 8000}  # fmt: skip


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[StreamManager]:
    config = CacheConfig(directory=tmp_path / "cache", sync_policy="finalize")
    async with open_stream_manager(config) as manager:
        yield manager


async def _body(response: Response) -> bytes:
    assert response.body is not None and not isinstance(response.body, bytes)
    return b"".join([piece async for piece in response.body])


def _decodes(data: bytes) -> str:
    """ffmpeg's complaints decoding ``data`` (empty: clean)."""
    done = subprocess.run([str(FFMPEG), "-v", "error", "-i", "-", "-f", "null", "-"],
                          input=data, capture_output=True, check=False)  # fmt: skip
    return done.stderr.decode(errors="replace") + ("" if done.returncode == 0 else "failed")


@needs_tools
@pytest.mark.parametrize("kind", KINDS)
async def test_a_seek_lands_on_a_boundary_before_the_time(
    manager: StreamManager, hub: FanoutHub, kind: str
) -> None:
    data = media(kind)
    await manager.create("take", content_type="application/octet-stream")
    await manager.append("take", data)
    await manager.finalize("take")
    for wanted in (3.0, 7.6):
        response = await stream_response(
            manager, "take", {}, query=f"t={wanted}", follow=hub.follow
        )
        assert response.status == 200
        offset = int(str(response.header("x-mmstream-offset")))
        time = float(str(response.header("x-mmstream-time")))
        body = await _body(response)
        header = body[: len(body) - (len(data) - offset)]
        assert int(str(response.header("content-length"))) == len(body)
        assert body[len(header) :] == data[offset:]
        assert header == (data[: len(header)] if kind not in ("webm",) else header)
        assert 0 <= wanted - time <= GRANULE[kind] + 1e-3
        assert _decodes(body) == ""
        if kind in ("opus", "vorbis", "webm"):
            # The container's own clock says the answer starts where the index says.
            assert abs(packets(body)[0][0] - time) < 0.03
        elif kind != "wav":
            # The answer starts on the frame ffprobe times at `time` in the whole file.
            assert abs(dict((pos, t) for t, pos in packets(data))[offset] - time) < 1e-3


@needs_tools
async def test_back_from_the_live_edge(manager: StreamManager, hub: FanoutHub) -> None:
    data = media("opus")
    await manager.create("live", content_type="audio/ogg")
    await manager.append("live", data)
    response = await stream_response(manager, "live", {}, query="t=-2", follow=hub.follow)
    assert response.header("cache-control") == "no-store"
    assert response.header("content-length") is None
    offset = int(str(response.header("x-mmstream-offset")))
    time = float(str(response.header("x-mmstream-time")))
    assert 0 <= 12 - 2 - time <= GRANULE["opus"]
    got: list[bytes] = []

    async def listen() -> None:
        got.append(await _body(response))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        await trio.sleep(0.1)
        await manager.finalize("live")
    assert got[0].endswith(data[offset:]) and got[0].startswith(b"OggS")
    assert _decodes(got[0]) == ""


@needs_tools
async def test_at_a_wall_clock_time(manager: StreamManager, hub: FanoutHub) -> None:
    await manager.create("rec", content_type="audio/mpeg")
    await manager.append("rec", media("mp3"))
    started = manager.stat("rec").created_at
    early = datetime.datetime.fromtimestamp(started - 60, datetime.UTC).isoformat()
    response = await stream_response(manager, "rec", {}, query=f"at={early}", follow=hub.follow)
    assert response.header("x-mmstream-time") == "0.000"
    late = datetime.datetime.fromtimestamp(started + 5, datetime.UTC)
    later = late.strftime("%Y-%m-%dT%H:%M:%SZ")
    response = await stream_response(manager, "rec", {}, query=f"at={later}", follow=hub.follow)
    assert float(str(response.header("x-mmstream-time"))) > 11  # all arrived at once


async def test_bad_times_are_the_clients_fault(manager: StreamManager, hub: FanoutHub) -> None:
    await manager.create("s")
    for query in ("t=abc", "t=1e400", "t=1&t=2", "t=1&at=2026-01-01", "at=yesterday", "t="):
        response = await stream_response(manager, "s", {}, query=query, follow=hub.follow)
        assert response.status == 400, query
    response = await stream_response(manager, "nope", {}, query="t=1", follow=hub.follow)
    assert response.status == 404


def test_time_queries() -> None:
    assert parse_time_query("") is None
    assert parse_time_query("offset=5") is None
    assert parse_time_query("t=90") == TimeQuery(seconds=90.0)
    assert parse_time_query("x=1&t=-12.5") == TimeQuery(seconds=-12.5)
    assert parse_time_query("t=1:02:03.5") == TimeQuery(seconds=3723.5)
    assert parse_time_query("at=2026-12-04T10:00:00Z") == TimeQuery(at=1796378400.0)
    assert parse_time_query("at=2026-12-04T11:00:00%2B01:00") == TimeQuery(at=1796378400.0)
    assert parse_time_query("at=2026-12-04T10:00:00") == TimeQuery(at=1796378400.0)
    assert parse_clock("-1:30") == -90.0
    for bad in ("1:2:3:4", "nan", "inf", "--1", "1e3"):
        with pytest.raises(ValueError):
            parse_clock(bad)
    with pytest.raises(InvalidArgumentError):
        parse_time_query("t=1&at=2026-12-04")
