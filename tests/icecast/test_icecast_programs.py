"""Real radio programs against mmstream: Liquidsoap pushes with titles from its track
metadata; GStreamer's icydemux and mpv read them back in-band."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from icecast_helpers import needs, needs_ffmpeg, running_server
from radio_programs import (
    FIRST,
    MPD_TITLE,
    SECOND,
    needs_liquidsoap,
    needs_mpd,
    run_liquidsoap,
    start_mpd,
)

from mmstream.server import RunningServer
from mmstream.streams import Title

GST_LAUNCH = shutil.which("gst-launch-1.0")
MPV = shutil.which("mpv")


async def _titles(server: RunningServer) -> tuple[Title, Title]:
    """The first title, then the second after it: where each track began."""
    with trio.fail_after(90):  # Liquidsoap starts slowly on a busy machine
        while True:
            try:
                marks = server.manager.stat("radio").titles
            except KeyError:
                marks = ()
            firsts = [mark for mark in marks if mark.title == FIRST]
            if firsts:
                seconds = [m for m in marks if m.title == SECOND and m.offset > firsts[0].offset]
                if seconds:
                    return firsts[0], seconds[0]
            await trio.sleep(0.1)


@asynccontextmanager
async def liquid_radio(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """mmstream with Liquidsoap pushing, once its second track's title is in."""
    async with running_server(tmp_path, burst_size=0) as server, trio.open_nursery() as nursery:
        nursery.start_soon(run_liquidsoap, tmp_path, server.port)
        await _titles(server)
        yield server
        nursery.cancel_scope.cancel()


@needs_liquidsoap
@needs_ffmpeg
async def test_liquidsoap_sets_titles_from_its_track_metadata(tmp_path: Path) -> None:
    async with liquid_radio(tmp_path) as server:
        first, second = await _titles(server)
        assert first.offset < second.offset  # where each track began
        assert server.manager.stat("radio").metadata.get("ice-name") == "Liquid Radio"


@needs_liquidsoap
@needs_ffmpeg
@needs(GST_LAUNCH, "gst-launch-1.0", "gstreamer1.0-tools gstreamer1.0-plugins-good")
async def test_gstreamer_icydemux_hears_the_title(tmp_path: Path) -> None:
    async with liquid_radio(tmp_path) as server:
        result = await trio.run_process(
            [GST_LAUNCH or "gst-launch-1.0", "-t", "souphttpsrc",
             f"location={server.http_url}/streams/radio", "iradio-mode=true", "num-buffers=40",
             "!", "icydemux", "!", "fakesink"],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        assert "title: Liquid - Don't Stop" in result.stdout.decode(errors="replace")


@needs_liquidsoap
@needs_ffmpeg
@needs(MPV, "mpv", "mpv")
async def test_mpv_shows_the_title(tmp_path: Path) -> None:
    async with liquid_radio(tmp_path) as server:
        result = await trio.run_process(
            [MPV or "mpv", "--no-config", "--no-video", "--ao=null", "--length=2",
             f"{server.http_url}/streams/radio"],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        assert "icy-title: Liquid - Don't Stop" in result.stdout.decode(errors="replace")


@needs_mpd
@needs_ffmpeg
async def test_mpd_shout_output_pushes_with_titles(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, trio.open_nursery() as nursery:
        process = await start_mpd(nursery, tmp_path, server.port)
        with trio.fail_after(20):
            while True:
                try:
                    info = server.manager.stat("mpd")
                except KeyError:
                    info = None
                if info is not None and info.titles and info.size > 32 * 1024:
                    break
                await trio.sleep(0.1)
        assert [t.title for t in info.titles] == [MPD_TITLE]
        assert info.metadata["ice-name"] == "MPD Radio"
        assert info.content_type == "audio/mpeg"
        process.terminate()
