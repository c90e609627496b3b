"""HLS of Opus streams (Ogg and WebM) as fMP4 from a real server: ffmpeg's HLS demuxer
decodes every segment of a finished stream (a live one: test_hls.py); the initialisation
segment and the segments are immutable."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from hls_rules import check_playlist
from media_files import FFMPEG, ffmpeg_reads, media, needs_tools, opus_file

from mmstream.capability import decorate_playlist
from mmstream.client import connect
from mmstream.ogg import BOS, OggChainer, OggPage, OggPages
from mmstream.server import RunningServer
from mmstream.web.hls import Segment, media_playlist

CONTENT_TYPES = {"opus": "audio/ogg", "webm": "audio/webm"}


@needs_tools
@pytest.mark.parametrize("kind", ["opus", "webm"])
async def test_ffmpeg_plays_a_finished_opus_stream(server: RunningServer, kind: str) -> None:
    async with connect(server.url) as client:
        info = await client.create("show", content_type=CONTENT_TYPES[kind])
        await client.append("show", media(kind))
        await client.finalize("show")
    base = f"http://127.0.0.1:{server.port}/streams/show"
    gen = info.generation
    async with httpx.AsyncClient() as http:
        playlist = (await http.get(f"{base}/index.m3u8")).text
        assert "#EXT-X-VERSION:6" in playlist and "#EXT-X-ENDLIST" in playlist
        assert f'#EXT-X-MAP:URI="hls/{gen}-init.mp4"' in playlist
        uris = [line for line in playlist.splitlines() if line and line[0] != "#"]
        assert uris == [f"hls/{gen}-{n}.m4s" for n in range(len(uris))]
        assert len(uris) in (3, 4)
        for name, etag in ((f"{gen}-init.mp4", f'"{gen}-init"'), (f"{gen}-1.m4s", f'"{gen}-1"')):
            answer = await http.get(f"{base}/hls/{name}")
            assert answer.headers["content-type"] == "audio/mp4"
            assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert answer.headers["etag"] == etag
            assert answer.content[4:8] == (b"ftyp" if "init" in name else b"styp")
            again = await http.get(f"{base}/hls/{name}", headers={"if-none-match": etag})
            assert again.status_code == 304
        for bad in (f"{gen}-init.m4s", f"{gen}-1.mp3", f"{gen}-{len(uris)}.m4s",
                    f"{gen}-init.mp3", "0123456789abcdef-init.mp4"):  # fmt: skip
            assert (await http.get(f"{base}/hls/{bad}")).status_code == 404, bad
    code, errors, seconds = await ffmpeg_reads(f"{base}/index.m3u8", dts_warning=False)
    assert (code, errors) == (0, "")
    assert abs(seconds - 12) < 0.1


async def _ffmpeg_decodes_finished(server: RunningServer, data: bytes) -> float:
    """Upload ``data`` (Ogg) as a finished stream; the seconds ffmpeg's HLS demuxer decodes
    from its playlist, which it must do without an error or a warning."""
    async with connect(server.url) as client:
        await client.create("ogg", content_type="audio/ogg")
        await client.append("ogg", data)
        await client.finalize("ogg")
    url = f"http://127.0.0.1:{server.port}/streams/ogg/index.m3u8"
    code, errors, seconds = await ffmpeg_reads(url, dts_warning=False)
    assert (code, errors) == (0, "")
    return seconds


@needs_tools
async def test_ffmpeg_plays_a_chained_ogg_stream(server: RunningServer) -> None:
    """A second chain (another serial, its own OpusHead and tags, stereo after mono: the
    same decoder) continues the track: no error, no timestamp warning, every second."""
    data = media("opus") + opus_file("-ac", "2", "-serial_offset", "7", "-f", "ogg", seconds=6)
    assert await _ffmpeg_decodes_finished(server, data) == pytest.approx(18, abs=0.1)


@needs_tools
async def test_short_webm_clusters_give_fmp4_parts(server: RunningServer, tmp_path: Path) -> None:
    """WebM clusters within a part (MediaRecorder with a short timeslice; here ffmpeg's
    200 ms) make LL-HLS parts: each an fMP4 fragment of its packets, continuing the one
    before, that ffmpeg decodes after the init segment."""
    data = opus_file("-cluster_time_limit", "200", "-f", "webm")
    async with connect(server.url) as client:
        info = await client.create("short", content_type="audio/webm")
        await client.append("short", data[: len(data) // 2])
        base = f"http://127.0.0.1:{server.port}/streams/short"
        async with httpx.AsyncClient() as http:
            live = check_playlist((await http.get(f"{base}/index.m3u8")).text)
            assert live.parts and all(uri.endswith(".m4s") for uri in live.parts.values())
            init = (await http.get(f"{base}/hls/{info.generation}-init.mp4")).content
            fragments = [(await http.get(f"{base}/{live.parts[key]}")).content
                         for key in sorted(live.parts)]  # fmt: skip
        await client.finalize("short")
    decode_times = [int.from_bytes(f[f.index(b"tfdt") + 8 : f.index(b"tfdt") + 16], "big")
                    for f in fragments]  # fmt: skip
    assert decode_times == sorted(decode_times) and len(set(decode_times)) == len(fragments)
    path = tmp_path / "parts.mp4"
    path.write_bytes(init + b"".join(fragments))
    done = await trio.run_process([str(FFMPEG), "-v", "error", "-i", str(path), "-f", "null", "-"],
                                  capture_stderr=True, check=False)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, b"")


def test_a_capability_reaches_the_init_segment() -> None:
    """A player that sends no token fetches the init segment by the playlist's capability,
    as it fetches the segments (EXT-X-MAP's URI attribute is decorated too)."""
    segments = [Segment(0, 0, 10, 0.0, 4.0, 0.0)]
    playlist = media_playlist(segments, target_duration=4, ended=True,
                              uri=lambda s: f"hls/g-{s.sequence}.m4s", init="hls/g-init.mp4")  # fmt: skip
    decorated = decorate_playlist(playlist, "exp=60&sig=abc")
    assert '#EXT-X-MAP:URI="hls/g-init.mp4?exp=60&sig=abc"' in decorated
    assert "hls/g-0.m4s?exp=60&sig=abc" in decorated.splitlines()


@needs_tools
async def test_titles_as_ogg_chains_play_seamlessly(server: RunningServer) -> None:
    """Titles set while a source streams Ogg Opus become chains (mmstream.ogg.OggChainer,
    what the server stores): HLS continues the track across them, its headers left out,
    with no gap or overlap (not even a timestamp warning from ffmpeg)."""
    data, chainer = media("opus"), OggChainer()
    third = len(data) // 3
    parts = [(data[:third], None), (data[third : 2 * third], "one"), (data[2 * third :], "two")]
    stored = b"".join(chainer.feed(part, title) for part, title in parts) + chainer.flush()
    found: list[OggPage] = []
    OggPages().feed(stored, 0, found)
    assert sum(1 for page in found if page.flags & BOS) == 3
    assert await _ffmpeg_decodes_finished(server, stored) == pytest.approx(12, abs=0.1)
