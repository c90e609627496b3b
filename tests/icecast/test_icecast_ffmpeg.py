"""Interop with a tool no one here wrote: Debian's ffmpeg pushes with its icecast output,
and what mmstream serves back decodes, with the right duration."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from icecast_helpers import (
    FFMPEG,
    decode_s16,
    has_size,
    needs_ffmpeg,
    open_listener,
    read_exactly,
    read_to_end,
    running_server,
    wait_until,
)

from mmstream.streams import StreamStatus

pytestmark = needs_ffmpeg

FORMATS = {
    "ogg-opus": ["-c:a", "libopus", "-f", "ogg", "-content_type", "audio/ogg"],
    "webm-opus": ["-c:a", "libopus", "-f", "webm", "-content_type", "audio/webm"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", "-content_type", "audio/mpeg"],
}


def push_command(
    port: int, stream_id: str, fmt: str, seconds: float, *, live: bool = False
) -> list[str]:
    """ffmpeg's icecast output; ``live`` paces the input in real time (``-re``) and cuts
    WebM clusters every 0.5 s so a late listener has somewhere to start."""
    assert FFMPEG is not None
    pace = ["-re"] if live else []
    clusters = ["-cluster_time_limit", "500"] if live and fmt == "webm-opus" else []
    return [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", *pace, "-f", "lavfi",
            "-i", f"sine=frequency=440:duration={seconds}", *FORMATS[fmt], *clusters,
            "-ice_name", "tone",
            f"icecast://source:hackme@127.0.0.1:{port}/streams/{stream_id}"]  # fmt: skip


def decoded_seconds(path: Path) -> tuple[float, bytes]:
    """Decode with ffmpeg to 8 kHz mono s16: (seconds of audio, ffmpeg's error output)."""
    samples, errors = decode_s16(path)
    return len(samples) / 16000, errors


@pytest.mark.parametrize("fmt", FORMATS)
async def test_ffmpeg_pushes_and_the_stream_read_back_has_the_right_duration(
    tmp_path: Path, fmt: str
) -> None:
    async with running_server(tmp_path) as server:
        with trio.fail_after(60):
            await trio.run_process(push_command(server.port, "tone", fmt, 3))
            # ffmpeg exits once it has closed; the end of the body follows.
            await wait_until(lambda: server.manager.stat("tone").status is StreamStatus.READY)
        info = server.manager.stat("tone")
        assert info.status is StreamStatus.READY
        assert info.content_type == FORMATS[fmt][-1]
        assert info.metadata["ice-name"] == "tone"
        listener, headers, rest = await open_listener(server, "/streams/tone")
        assert int(headers["content-length"]) == info.size
        body = await read_exactly(listener, info.size, rest)  # a keep-alive response
        out = tmp_path / f"back.{fmt}"
        out.write_bytes(body)
        seconds, errors = decoded_seconds(out)
        assert errors == b""
        assert seconds == pytest.approx(3.0, rel=0.05)


@pytest.mark.parametrize("fmt", ["webm-opus", "ogg-opus"])
async def test_a_late_listener_of_a_live_ffmpeg_stream_gets_a_decodable_stream(
    tmp_path: Path, fmt: str
) -> None:
    """Header first: joining 1.5 s into a live push, the listener still gets a stream that
    ffmpeg decodes without a single error, and it is shorter than the whole."""
    async with running_server(tmp_path, burst_size=4096) as server:
        command = push_command(server.port, "live", fmt, 4, live=True)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.run_process, command)
                await wait_until(has_size(server, "live", 12_000))
                listener, headers, rest = await open_listener(server, "/streams/live")
                body = await read_to_end(listener, rest)
        assert headers["content-type"] == FORMATS[fmt][-1]
        whole = await server.manager.read("live", 0, server.manager.stat("live").size)
        assert body[:4] == whole[:4]  # EBML magic / OggS: the header came first
        assert len(body) < len(whole)
        out = tmp_path / f"late.{fmt}"
        out.write_bytes(body)
        seconds, errors = decoded_seconds(out)
        assert errors == b""
        assert 0.5 < seconds < 3.9
