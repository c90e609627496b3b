"""HLS from the cache: the pure playlist/segment rules (RFC 8216bis), then a real server
read by ffmpeg's HLS demuxer, finished and live."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import httpx
import pytest
import trio
from hls_rules import check_playlist
from media_files import ffmpeg_reads, media, needs_tools

from mmstream.audio import AudioFormat
from mmstream.client import connect
from mmstream.config import CacheConfig
from mmstream.server import RunningServer
from mmstream.streams import open_stream_manager
from mmstream.web.hls import (
    HlsKind,
    Segment,
    hls_kind,
    id3_timestamp,
    media_playlist,
    plan_segments,
)
from mmstream.web.hls_http import SegmentPlans

# -- the rules, without I/O ------------------------------------------------------------


def _tags(playlist: str) -> dict[str, str]:
    return dict(line[1:].partition(":")[::2] for line in playlist.splitlines() if line[:1] == "#")


def test_a_finished_stream_is_a_vod_playlist() -> None:
    bounds = [(0.0, 100, 1000.0), (3.99, 5000, 1004.0), (7.98, 9900, 1008.0)]
    segments = plan_segments(bounds, end_time=10.5, end_offset=13000, complete=True)
    assert [(s.sequence, s.start, s.stop) for s in segments] == [
        (0, 100, 5000), (1, 5000, 9900), (2, 9900, 13000)]  # fmt: skip
    text = media_playlist(
        segments, target_duration=4, ended=True, uri=lambda s: f"{s.sequence}.mp3"
    )
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U" and lines[-1] == "#EXT-X-ENDLIST"
    tags = _tags(text)
    assert tags["EXT-X-PLAYLIST-TYPE"] == "VOD" and tags["EXT-X-MEDIA-SEQUENCE"] == "0"
    # RFC 8216bis 4.4.3.1: every EXTINF, rounded, is at most the target duration.
    durations = [float(x) for x in re.findall(r"#EXTINF:([0-9.]+),", text)]
    assert durations == pytest.approx([3.99, 3.99, 2.52])
    assert all(round(d) <= int(tags["EXT-X-TARGETDURATION"]) for d in durations)
    assert re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", text)[0] == "1970-01-01T00:16:40.000Z"
    assert lines.count("0.mp3") == 1 and text.endswith("\n")


def test_a_growing_stream_lists_only_final_segments_and_no_endlist() -> None:
    bounds = [(0.0, 0, 0.0), (4.0, 4000, 4.0), (8.0, 8000, 8.0)]
    segments = plan_segments(bounds, end_time=9.0, end_offset=9000, complete=False)
    assert [s.sequence for s in segments] == [0, 1]
    text = media_playlist(segments, target_duration=4, ended=False, uri=str)
    assert _tags(text)["EXT-X-PLAYLIST-TYPE"] == "EVENT" and "#EXT-X-ENDLIST" not in text


def test_a_long_segment_raises_the_target_duration() -> None:
    segment = Segment(0, 0, 10, 0.0, 6.6, 0.0)
    text = media_playlist([segment], target_duration=4, ended=True, uri=str)
    assert _tags(text)["EXT-X-TARGETDURATION"] == "7"


def test_the_id3_timestamp_is_a_33_bit_90khz_pts() -> None:
    tag = id3_timestamp(12.5)
    assert tag[:5] == b"ID3\x04\x00"
    owner = b"com.apple.streaming.transportStreamTimestamp\x00"
    at = tag.index(owner) + len(owner)
    assert struct.unpack(">Q", tag[at : at + 8])[0] == 12.5 * 90000
    assert tag[10:14] == b"PRIV"
    assert struct.unpack(">Q", id3_timestamp(2**33 / 90000 + 1)[-8:])[0] == 90000  # wraps


def test_only_mp3_and_aac_are_packed_audio() -> None:
    assert hls_kind(AudioFormat.MP3) == HlsKind("mp3", "audio/mpeg")
    assert hls_kind(AudioFormat.AAC) == HlsKind("aac", "audio/aac")
    assert "ogg without Opus" in str(hls_kind(AudioFormat.OGG))  # or its header not yet here
    assert "unrecognised" in str(hls_kind(None))


def test_an_fmp4_playlist_names_its_init_segment() -> None:
    segments = [Segment(0, 0, 10, 0.0, 4.0, 0.0)]
    text = media_playlist(segments, target_duration=4, ended=True, uri=str, init="hls/i.mp4")
    assert _tags(text)["EXT-X-VERSION"] == "6"  # EXT-X-MAP without I-frames (RFC 8216bis 7)
    lines = text.splitlines()
    assert lines.index('#EXT-X-MAP:URI="hls/i.mp4"') < lines.index("#EXTINF:4.00000,")


# -- a real server, read by ffmpeg -------------------------------------------------------


@needs_tools
@pytest.mark.parametrize("kind", ["mp3", "aac"])
async def test_ffmpeg_plays_a_finished_stream(server: RunningServer, kind: str) -> None:
    async with connect(server.url) as client:
        info = await client.create("show", content_type="application/octet-stream")
        await client.append("show", media(kind))
        await client.finalize("show")
    base = f"http://127.0.0.1:{server.port}/streams/show"
    async with httpx.AsyncClient() as http:
        playlist = await http.get(f"{base}/index.m3u8")
        assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert "#EXT-X-ENDLIST" in playlist.text
        assert check_playlist(playlist.text).ended
        uris = [line for line in playlist.text.splitlines() if line and line[0] != "#"]
        # 12 s (and for MP3, the encoder's padding: a last segment of a frame or two)
        assert uris == [f"hls/{info.generation}-{n}.{kind}" for n in range(len(uris))]
        assert len(uris) in (3, 4)
        segment = await http.get(f"{base}/{uris[1]}")
        assert segment.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert segment.headers["etag"] == f'"{info.generation}-1"'
        assert segment.content.startswith(b"ID3\x04")
        again = await http.get(
            f"{base}/{uris[1]}", headers={"if-none-match": segment.headers["etag"]}
        )
        assert again.status_code == 304
        for bad in (f"hls/{info.generation}-{len(uris)}.{kind}", "hls/0123456789abcdef-0.mp3", "hls/x",
                    f"hls/{info.generation}-0.{'aac' if kind == 'mp3' else 'mp3'}"):  # fmt: skip
            assert (await http.get(f"{base}/{bad}")).status_code == 404, bad
    code, errors, seconds = await ffmpeg_reads(f"{base}/index.m3u8")
    assert (code, errors) == (0, "")
    assert abs(seconds - 12) < 0.2


@needs_tools
async def test_other_formats_get_a_404_that_says_why(server: RunningServer) -> None:
    async with connect(server.url) as client:
        await client.create("vorbis", content_type="audio/ogg")
        await client.append("vorbis", media("vorbis"))
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{server.port}/streams/vorbis/index.m3u8")
    assert answer.status_code == 404 and "HLS is served for MP3 and AAC" in answer.text
    assert "Opus in Ogg or WebM, as fMP4; this stream is ogg without Opus" in answer.text


@needs_tools
@pytest.mark.parametrize(
    ("kind", "content_type"),
    [("aac", "audio/aac"), ("opus", "audio/ogg"), ("webm", "audio/webm")],  # Opus: fMP4
)
async def test_ffmpeg_follows_a_live_stream_to_its_end(
    server: RunningServer, kind: str, content_type: str
) -> None:
    data = media(kind)
    url = f"http://127.0.0.1:{server.port}/streams/live/index.m3u8"
    result: list[tuple[int, str, float]] = []
    async with connect(server.url) as client:
        await client.create("live", content_type=content_type)
        await client.append("live", data[: len(data) // 2])
        async with httpx.AsyncClient() as http:
            playlist = (await http.get(url)).text
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist and "#EXT-X-ENDLIST" not in playlist
        assert playlist.count("#EXTINF") == 1  # 6 s written: one final 4 s segment
        live = check_playlist(playlist)  # LL-HLS: ffmpeg reads it too (it skips the parts)
        assert ("#EXT-X-MAP:" in playlist) == (kind != "aac")
        if kind == "aac":  # Ogg pages and WebM clusters (1 s here) are longer than a part
            assert live.hint is not None and live.last_part is not None
            assert live.last_part[0] == 1

        async def play() -> None:
            # fMP4 segments are timed exactly: not even ffmpeg's MP3 estimate warning
            result.append(await ffmpeg_reads(url, dts_warning=kind == "aac"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(play)
            await trio.sleep(1.0)
            await client.append("live", data[len(data) // 2 :])
            await client.finalize("live")
    code, errors, seconds = result[0]
    assert (code, errors) == (0, "")
    assert abs(seconds - 12) < 0.2


@needs_tools
async def test_segment_plans_are_shared_until_the_stream_changes(tmp_path: Path) -> None:
    config = CacheConfig(directory=tmp_path / "cache", sync_policy="finalize")
    data = media("mp3")
    async with open_stream_manager(config) as manager:
        await manager.create("s", content_type="audio/mpeg")
        await manager.append("s", data[: len(data) // 2])
        plans = SegmentPlans(limit=1)
        first = await plans.get(manager, manager.stat("s"), 4.0)
        assert await plans.get(manager, manager.stat("s"), 4.0) is first
        await manager.append("s", data[len(data) // 2 :])
        await manager.finalize("s")
        finished = await plans.get(manager, manager.stat("s"), 4.0)
        assert finished is not first  # only grows:
        assert finished.segments[: len(first.segments)] == first.segments
        assert finished.segments[-1].stop == len(data)
