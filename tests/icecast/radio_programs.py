"""Real radio programs pushing to an Icecast port (a server's, or HAProxy's source port):
Liquidsoap with titles from its track metadata, MPD's ``shout`` output, ices2 with a
playlist of titled Ogg Vorbis files. Each is driven the same way wherever it pushes."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import trio
from icecast_helpers import FFMPEG, free_port, needs

LIQUIDSOAP = shutil.which("liquidsoap")
MPD = shutil.which("mpd")
ICES2 = shutil.which("ices2")
needs_liquidsoap = needs(LIQUIDSOAP, "liquidsoap", "liquidsoap")
needs_mpd = needs(MPD, "mpd", "mpd")
needs_ices2 = needs(ICES2, "ices2", "ices2")

#: Liquidsoap's two tracks' titles, as mmstream forms them (``ARTIST - TITLE``).
FIRST, SECOND = "Soap - First Song", "Liquid - Don't Stop"
#: MPD's one file's title.
MPD_TITLE = "Daemon - MPD Song"
#: ices2's two files' titles (in their Ogg comment headers).
ICES_TITLES = ["Ices - First Song", "Ices - Second Song"]


async def tone(path: Path, seconds: int, frequency: int, *metadata: str) -> None:
    """A sine as 128 kbit/s MP3, with ``-metadata`` items (``title=…``)."""
    tags = [arg for item in metadata for arg in ("-metadata", item)]
    await trio.run_process(
        [FFMPEG or "ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
         f"sine=f={frequency}:d={seconds}", "-c:a", "libmp3lame", "-b:a", "128k", *tags,
         str(path)]
    )  # fmt: skip


async def vorbis(path: Path, seconds: int, frequency: int, title: str) -> None:
    """A stereo sine as Ogg Vorbis, titled in its comment header (artist ``Ices``)."""
    await trio.run_process(
        [FFMPEG or "ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
         f"sine=f={frequency}:d={seconds}", "-ac", "2", "-ar", "44100", "-c:a", "libvorbis",
         "-metadata", f"title={title}", "-metadata", "artist=Ices", str(path)]
    )  # fmt: skip


async def run_liquidsoap(tmp_path: Path, port: int, stream_id: str = "radio") -> None:
    """Liquidsoap's ``output.icecast`` to ``/streams/{stream_id}``: two tracks with titles
    (``annotate:``), in turn, until cancelled.

    Liquidsoap sends a track's title (``/admin/metadata``, to the port it pushes to) only if
    its output is connected when the track starts: a title met while it (re)connects is
    dropped for good (its ``insert_metadata`` does nothing while ``Disconnected``). A first
    connection that fails on a busy machine (it retries after 3 s) loses the first titles:
    so both tracks come back in turn, and tests wait for the first title followed by the
    second, wherever in the history they are."""
    first, second = tmp_path / "first.mp3", tmp_path / "second.mp3"
    await tone(first, 2, 440)
    await tone(second, 30, 660)
    script = tmp_path / "radio.liq"
    script.write_text(
        f"""settings.init.allow_root.set(true)
settings.log.stdout.set(true)
s = rotate([
  single("annotate:title=\\"First Song\\",artist=\\"Soap\\":{first}"),
  single("annotate:title=\\"Don't Stop\\",artist=\\"Liquid\\":{second}"),
])
output.icecast(%mp3(bitrate=128), host="127.0.0.1", port={port}, password="hackme",
               mount="streams/{stream_id}", name="Liquid Radio", genre="test", fallible=true, s)
"""
    )
    await trio.run_process([LIQUIDSOAP or "liquidsoap", str(script)], capture_stdout=True,
                           capture_stderr=True)  # fmt: skip


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


async def start_mpd(
    nursery: trio.Nursery, tmp_path: Path, port: int, stream_id: str = "mpd"
) -> trio.Process:
    """MPD playing one 30 s MP3 (titled :data:`MPD_TITLE`) through its ``shout`` output
    (libshout, lame) to ``/streams/{stream_id}``; it sends the title to ``/admin/metadata``
    on the port it pushes to. Terminate the process it returns."""
    music = tmp_path / "music"
    music.mkdir()
    await tone(music / "a.mp3", 30, 440, "title=MPD Song", "artist=Daemon")
    control = free_port()
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
  port "{port}"
  mount "/streams/{stream_id}"
  password "hackme"
  user "source"
  bitrate "128"
  format "44100:16:2"
  protocol "icecast2"
}}
"""
    )
    process: trio.Process = await nursery.start(
        partial(trio.run_process, [MPD or "mpd", "--no-daemon", str(config)],
                check=False, capture_stdout=True, capture_stderr=True)
    )  # fmt: skip
    await _mpd_commands(control, ["update", "add a.mp3", "play"])
    return process


_ICES_XML = """<?xml version="1.0"?>
<ices>
  <background>0</background>
  <logpath>{dir}</logpath>
  <logfile>ices.log</logfile>
  <loglevel>3</loglevel>
  <consolelog>1</consolelog>
  <stream>
    <metadata><name>Ices Radio</name><genre>test</genre><description>ices2</description></metadata>
    <input>
      <module>playlist</module>
      <param name="type">basic</param>
      <param name="file">{dir}/playlist.txt</param>
      <param name="random">0</param>
      <param name="once">1</param>
    </input>
    <instance>
      <hostname>127.0.0.1</hostname>
      <port>{port}</port>
      <password>hackme</password>
      <mount>/streams/{stream_id}</mount>
      <reconnectdelay>1</reconnectdelay>
      <reconnectattempts>2</reconnectattempts>
    </instance>
  </stream>
</ices>
"""


async def run_ices2(
    tmp_path: Path, port: int, stream_id: str = "ices", seconds: tuple[int, int] = (1, 2)
) -> str:
    """ices2 sending a playlist of two Ogg Vorbis files (``seconds`` long, titled
    :data:`ICES_TITLES`) to ``/streams/{stream_id}``, once; its log. libshout connects
    with ``OPTIONS *`` first, offering TLS, then ``SOURCE`` without, then with, its
    password; each file goes out as a chained Ogg stream, its title in its comment
    header."""
    await vorbis(tmp_path / "a.ogg", seconds[0], 440, "First Song")
    await vorbis(tmp_path / "b.ogg", seconds[1], 660, "Second Song")
    (tmp_path / "playlist.txt").write_text(f"{tmp_path / 'a.ogg'}\n{tmp_path / 'b.ogg'}\n")
    config = tmp_path / "ices.xml"
    text = _ICES_XML.format(dir=tmp_path, port=port, stream_id=stream_id)
    config.write_text(text)
    done = await trio.run_process(
        [ICES2 or "ices2", str(config)], capture_stdout=True, capture_stderr=True, check=False
    )
    return (done.stdout + done.stderr).decode(errors="replace")
