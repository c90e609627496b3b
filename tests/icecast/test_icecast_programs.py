"""Real radio programs against mmstream: Liquidsoap pushes with titles from its track
metadata; GStreamer's icydemux and mpv read them back in-band."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio
from icecast_helpers import FFMPEG, free_port, needs, needs_ffmpeg, running_server

from mmstream.server import RunningServer
from mmstream.streams import Title

LIQUIDSOAP = shutil.which("liquidsoap")
GST_LAUNCH = shutil.which("gst-launch-1.0")
MPV = shutil.which("mpv")


async def _tone(path: Path, seconds: int, frequency: int) -> None:
    await trio.run_process(
        [FFMPEG or "ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
         f"sine=f={frequency}:d={seconds}", "-c:a", "libmp3lame", "-b:a", "128k", str(path)]
    )  # fmt: skip


FIRST, SECOND = "Soap - First Song", "Liquid - Don't Stop"


async def _liquidsoap(server: RunningServer, tmp_path: Path) -> None:
    """Two tracks with titles (``annotate:``), in turn.

    Liquidsoap sends a track's title (``/admin/metadata``) only if its output is connected
    when the track starts: a title met while it (re)connects is dropped for good (its
    ``insert_metadata`` does nothing while ``Disconnected``). A first connection that fails
    on a busy machine (it retries after 3 s) loses the first titles: so both tracks come
    back in turn, and the tests wait for the first title followed by the second, wherever
    in the history they are."""
    first, second = tmp_path / "first.mp3", tmp_path / "second.mp3"
    await _tone(first, 2, 440)
    await _tone(second, 30, 660)
    script = tmp_path / "radio.liq"
    script.write_text(
        f"""settings.init.allow_root.set(true)
settings.log.stdout.set(true)
s = rotate([
  single("annotate:title=\\"First Song\\",artist=\\"Soap\\":{first}"),
  single("annotate:title=\\"Don't Stop\\",artist=\\"Liquid\\":{second}"),
])
output.icecast(%mp3(bitrate=128), host="127.0.0.1", port={server.port}, password="hackme",
               mount="streams/radio", name="Liquid Radio", genre="test", fallible=true, s)
"""
    )
    await trio.run_process([LIQUIDSOAP or "liquidsoap", str(script)], capture_stdout=True,
                           capture_stderr=True)  # fmt: skip


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


needs_liquidsoap = needs(LIQUIDSOAP, "liquidsoap", "liquidsoap")


@asynccontextmanager
async def liquid_radio(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """mmstream with Liquidsoap pushing, once its second track's title is in."""
    async with running_server(tmp_path, burst_size=0) as server, trio.open_nursery() as nursery:
        nursery.start_soon(_liquidsoap, server, tmp_path)
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


MPD = shutil.which("mpd")


async def _mpd_commands(port: int, commands: list[str]) -> None:
    """Speak MPD's own protocol: a line per command, each answered ``OK`` (or ``ACK``)."""
    with trio.fail_after(10):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                break
            except OSError:
                await trio.sleep(0.05)
        received = b""
        while b"OK MPD" not in received:
            received += await stream.receive_some(4096)
        for command in commands:
            await stream.send_all(command.encode() + b"\n")
            answer = b""
            while not answer.endswith(b"OK\n"):
                answer += await stream.receive_some(4096)
                assert b"ACK" not in answer, (command, answer)
            if command == "update":  # let the database see the file first
                await trio.sleep(0.5)
        await stream.aclose()


@needs(MPD, "mpd", "mpd")
@needs_ffmpeg
async def test_mpd_shout_output_pushes_with_titles(tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    await trio.run_process(
        [FFMPEG or "ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=30",
         "-c:a", "libmp3lame", "-metadata", "title=MPD Song", "-metadata", "artist=Daemon",
         str(music / "a.mp3")]
    )  # fmt: skip
    control = free_port()
    async with running_server(tmp_path) as server, trio.open_nursery() as nursery:
        config = tmp_path / "mpd.conf"
        config.write_text(
            f"""music_directory "{music}"
db_file "{tmp_path}/db"
state_file "{tmp_path}/state"
log_file "{tmp_path}/log"
bind_to_address "127.0.0.1"
port "{control}"
audio_output {{
  type "shout"
  encoder "lame"
  name "MPD Radio"
  host "127.0.0.1"
  port "{server.port}"
  mount "/streams/mpd"
  password "hackme"
  user "source"
  bitrate "128"
  format "44100:16:2"
  protocol "icecast2"
}}
"""
        )
        process = await nursery.start(
            partial(trio.run_process, [MPD or "mpd", "--no-daemon", str(config)],
                    check=False, capture_stdout=True, capture_stderr=True)
        )  # fmt: skip
        await _mpd_commands(control, ["update", "add a.mp3", "play"])
        with trio.fail_after(20):
            while True:
                try:
                    info = server.manager.stat("mpd")
                except KeyError:
                    info = None
                if info is not None and info.titles and info.size > 32 * 1024:
                    break
                await trio.sleep(0.1)
        assert [t.title for t in info.titles] == ["Daemon - MPD Song"]
        assert info.metadata["ice-name"] == "MPD Radio"
        assert info.content_type == "audio/mpeg"
        process.terminate()
