"""Fallbacks that keep listeners: real sources and a raw HTTP listener on a real server.

The listener asks for ``live-a``; ``[[icecast.fallback]]`` sends ``live-*`` to ``jingles``.
It must hear jingles before live-a starts, live-a while its source sends, jingles again when
that source drops, live-a again when a source continues it, and never be disconnected.
"""

from __future__ import annotations

import array
import itertools
import re
import socket
import struct
from pathlib import Path
from urllib.parse import quote

import trio
from icecast_helpers import (
    FFMPEG,
    admin_metadata,
    connect,
    decode_s16,
    has_size,
    live_source,
    needs_ffmpeg,
    open_listener,
    open_source,
    read_head,
    read_to_end,
    running_server,
    wait_until,
)
from ogg_pages import HEADER, page

from mmstream.fallbacks import FallbackRule
from mmstream.icecast import split_icy
from mmstream.server import RunningServer
from mmstream.streams import StreamStatus

RULES = (FallbackRule("live-*", "jingles"),)


class Pages:
    """What a listener hears, as labels of Ogg pages: "H" for a header (OpusHead) page, the
    data byte of a data page; ``ended`` once the response ends."""

    def __init__(self, stream: trio.SocketStream, rest: bytes) -> None:
        self.stream = stream
        self.buffer = bytearray(rest)
        self.labels: list[str | int] = []
        self.ended = False

    async def run(self) -> None:
        while True:
            self._parse()
            piece = await self.stream.receive_some(65536)
            if not piece:
                self.ended = True
                return
            self.buffer += piece

    def _parse(self) -> None:
        while len(self.buffer) >= 27:
            assert self.buffer[:4] == b"OggS", bytes(self.buffer[:32])
            count = self.buffer[26]
            if len(self.buffer) < 27 + count:
                return
            size = 27 + count + sum(self.buffer[27 : 27 + count])
            if len(self.buffer) < size:
                return
            payload = bytes(self.buffer[27 + count : size])
            del self.buffer[:size]
            if payload.startswith(b"OpusHead"):
                self.labels.append("H")
            elif payload and not payload.startswith(b"OpusTags"):  # (not an empty EOS page)
                self.labels.append(payload[0])

    def segments(self) -> list[list[str | int]]:
        """The labels split at each header: one list per stream heard."""
        out: list[list[str | int]] = []
        for label in self.labels:
            if label == "H":
                out.append([])
            else:
                out[-1].append(label)
        return out

    async def heard(self, label: int) -> None:
        """Until the current stream (after the last header) has given ``label``."""
        await wait_until(lambda: bool(self.segments()) and label in self.segments()[-1])


def drop(source: trio.SocketStream) -> None:
    """Cut the connection as a crashed source does (a reset, no clean end)."""
    source.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    source.socket.close()


def pages(numbers: range) -> bytes:
    return b"".join(page(i) for i in numbers)


async def test_listeners_move_to_the_fallback_and_back_without_a_disconnect(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, fallback=RULES, burst_size=2500) as server:
        jingles = await live_source(server, "jingles", HEADER + pages(range(100, 110)))
        # Before live-a exists: jingles.
        stream, headers, rest = await open_listener(server, "/streams/live-a")
        assert headers["content-type"].startswith("audio/ogg")
        heard = Pages(stream, rest)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heard.run)
            await heard.heard(109)
            # live-a starts: its listener moves there (header first, then its pages).
            live = await open_source(server, "live-a")
            await live.send_all(HEADER + pages(range(0, 5)))
            await heard.heard(4)
            # Its source drops: back to jingles, which kept playing.
            size = len(HEADER) + 5 * len(page(0))
            await wait_until(has_size(server, "live-a", size))
            drop(live)
            await jingles.send_all(pages(range(110, 112)))
            await heard.heard(111)
            # A source continues live-a (the same stream, from where it was): back again.
            live = await open_source(server, "live-a")
            await live.send_all(HEADER + pages(range(5, 8)))
            await heard.heard(7)
            # live-a finalized: the rest of it, then jingles.
            await live.send_all(page(8))
            await live.send_eof()
            await wait_until(lambda: server.manager.stat("live-a").status is StreamStatus.READY)
            await jingles.send_all(pages(range(112, 114)))
            await heard.heard(113)
            # Nothing of the chain on air any more: the response ends.
            await jingles.send_eof()
            await wait_until(lambda: heard.ended)
        info = server.manager.stat("live-a")
        assert info.size == 2 * len(HEADER) + 9 * len(page(0))  # one stream, two sources
        # One list per stretch of one stream (a source that continues live-a sends its
        # header again: the listener may hear it in-band, within the stretch).
        stretches: list[list[int]] = []
        for segment in heard.segments():
            pages_heard = [label for label in segment if isinstance(label, int)]
            if stretches and (stretches[-1][0] >= 100) == (pages_heard[0] >= 100):
                stretches[-1] += pages_heard
            else:
                stretches.append(pages_heard)
        kinds = ["jingles" if stretch[0] >= 100 else "live" for stretch in stretches]
        assert kinds == ["jingles", "live", "jingles", "live", "jingles"], heard.segments()
        assert stretches[1][-1] == 4 and stretches[3][-2:] == [7, 8]
        assert stretches[2][-1] == 111 and stretches[4][-1] == 113
        for stretch in stretches:  # each stream's pages in order, none twice
            assert stretch == sorted(set(stretch)), stretch


async def test_a_listener_without_anything_on_air_is_answered_as_before(tmp_path: Path) -> None:
    async with running_server(tmp_path, fallback=RULES) as server:
        target = "/streams/live-x"
        conn = await trio.open_tcp_stream("127.0.0.1", server.port)
        await conn.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (await conn.receive_some(100)).startswith(b"HTTP/1.1 404")


def tone_push(port: int, stream_id: str, frequency: int, seconds: float) -> list[str]:
    """Debian's ffmpeg pushing a sine tone as live MP3 (paced in real time)."""
    assert FFMPEG is not None
    return [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-re", "-f", "lavfi",
            "-i", f"sine=frequency={frequency}:duration={seconds}", "-c:a", "libmp3lame",
            "-b:a", "128k", "-f", "mp3", "-content_type", "audio/mpeg",
            f"icecast://source:hackme@127.0.0.1:{port}/streams/{stream_id}"]  # fmt: skip


def tones(path: Path) -> list[int]:
    """Decode with ffmpeg (it must succeed) and name the tone of each 0.25 s: 440 or 880
    Hz by its zero crossings (0 for anything else, such as silence)."""
    samples = array.array("h", decode_s16(path)[0])
    named = []
    for at in range(0, len(samples) - 2000, 2000):
        window = samples[at : at + 2000]
        crossings = sum(1 for a, b in itertools.pairwise(window) if (a < 0) != (b < 0))
        named.append(440 if 200 <= crossings <= 240 else 880 if 420 <= crossings <= 460 else 0)
    return named


@needs_ffmpeg
async def test_ffmpeg_sources_and_a_listener_that_decodes_across_the_switches(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, fallback=RULES, burst_size=4096) as server:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.run_process, tone_push(server.port, "jingles", 440, 5))
            await wait_until(has_size(server, "jingles", 8192))
            stream, headers, rest = await open_listener(server, "/streams/live-a")
            assert headers["content-type"] == "audio/mpeg"
            await trio.sleep(1)
            await trio.run_process(tone_push(server.port, "live-a", 880, 1.5))
            with trio.fail_after(20):
                body = await read_to_end(stream, rest)  # jingles ends: so does the response
        out = tmp_path / "heard.mp3"
        out.write_bytes(body)
        heard = [tone for tone, _ in itertools.groupby(t for t in tones(out) if t)]
        assert heard == [440, 880, 440]


async def titled_sources(
    server: RunningServer, jingle_pages: range
) -> tuple[trio.SocketStream, trio.SocketStream]:
    """Sources of ``jingles`` (those pages, titled "Jingle") and ``live-a`` (pages 0-2,
    titled "Live A"), both live."""
    jingles = await open_source(server, "jingles")
    await jingles.send_all(HEADER + pages(jingle_pages))
    live = await open_source(server, "live-a")
    await live.send_all(HEADER + pages(range(0, 3)))
    await wait_until(has_size(server, "live-a", len(HEADER) + 3 * len(page(0))))
    for stream_id, song in (("jingles", "Jingle"), ("live-a", "Live A")):
        query = f"mount=/streams/{stream_id}&mode=updinfo&song={quote(song)}"
        assert (await admin_metadata(server, query))[0] == 200
    return jingles, live


async def test_icy_titles_follow_the_listener_to_the_fallback_and_back(tmp_path: Path) -> None:
    """Regression: a listener moved by a fallback got no ``icy-metaint`` and no titles. Its
    Ogg comments follow too: each stream's chains carry its title."""
    async with running_server(tmp_path, fallback=RULES, icy_metaint=500) as server:
        jingles, live = await titled_sources(server, range(100, 110))
        icy = await connect(server)
        await icy.send_all(b"GET /streams/live-a HTTP/1.1\r\nHost: x\r\nIcy-MetaData: 1\r\n\r\n")
        _, headers, rest = await read_head(icy)
        assert headers["icy-metaint"] == "500"
        body = bytearray(rest)

        def titles() -> list[bytes]:
            _, blocks = split_icy(bytes(body), 500)
            return [title for title, _ in itertools.groupby(blocks)]

        def heard_pages() -> list[str | int]:
            heard = Pages(icy, split_icy(bytes(body), 500)[0])
            heard._parse()
            return [label for label in heard.labels if label != "H"]

        async def read() -> None:
            while piece := await icy.receive_some(65536):
                body.extend(piece)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await live.send_all(pages(range(3, 6)))
            await wait_until(lambda: titles() == [b"StreamTitle='Live A';"])
            drop(live)
            await jingles.send_all(pages(range(110, 114)))
            await wait_until(lambda: titles()[-1:] == [b"StreamTitle='Jingle';"])
            await wait_until(lambda: 113 in heard_pages())
            back = await open_source(server, "live-a")
            await back.send_all(HEADER + pages(range(6, 10)))
            await wait_until(lambda: len(titles()) == 3 and 9 in heard_pages())
            nursery.cancel_scope.cancel()
        assert titles() == [b"StreamTitle='Live A';", b"StreamTitle='Jingle';",
                            b"StreamTitle='Live A';"]  # fmt: skip
        # The audio between the blocks is whole Ogg pages throughout the moves.
        labels = heard_pages()
        assert labels[:6] == [0, 1, 2, 3, 4, 5] and labels[-3:] == [7, 8, 9]
        assert 113 in labels  # jingles in between
        # And in the Ogg comments of the chains the listener heard (titles in Ogg).
        audio = split_icy(bytes(body), 500)[0]
        chained = [t for t, _ in itertools.groupby(re.findall(rb"TITLE=(Live A|Jingle)", audio))]
        assert chained == [b"Live A", b"Jingle", b"Live A"]


async def test_a_slow_icy_listeners_owed_bytes_keep_its_framing_across_a_move(
    tmp_path: Path,
) -> None:
    """An ``Icy-MetaData`` listener whose socket is full when its source drops has framed
    bytes owed (counted in its metaint cycle, not sent): they go out before the fallback's,
    so every block is where the cycle says, and the audio between is whole Ogg pages."""
    async with running_server(tmp_path, fallback=RULES, icy_metaint=500, burst_size=0) as server:
        jingles, live = await titled_sources(server, range(200, 203))
        # A listener that takes little at a time and reads nothing for now.
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", server.port))
        icy = trio.SocketStream(sock)
        await icy.send_all(b"GET /streams/live-a HTTP/1.1\r\nHost: x\r\nIcy-MetaData: 1\r\n\r\n")
        _, headers, rest = await read_head(icy)
        assert headers["icy-metaint"] == "500"
        # 197 KB: far more than the two sockets hold, well within the queue (512 KiB).
        await live.send_all(pages(range(3, 200)))
        await wait_until(has_size(server, "live-a", len(HEADER) + 200 * len(page(0))))
        await trio.sleep(0.2)  # the rounds have filled the listener's socket
        drop(live)  # it moves to jingles with bytes owed
        body = bytearray(rest)
        listener = Pages(icy, b"")

        async def read() -> None:
            while piece := await icy.receive_some(65536):
                body.extend(piece)
                listener.buffer = bytearray(split_icy(bytes(body), 500)[0])
                listener.labels = []
                listener._parse()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                i = 203
                while 210 not in listener.labels[-5:]:
                    if i <= 210:
                        await jingles.send_all(page(i))
                        i += 1
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
        audio, blocks = split_icy(bytes(body), 500)
        assert [t for t, _ in itertools.groupby(blocks)] == [
            b"StreamTitle='Live A';",
            b"StreamTitle='Jingle';",
        ]
        listener = Pages(icy, audio)
        listener._parse()  # every page whole ("OggS" where each begins)
        *live_chains, jingle_pages = listener.segments()  # (titles chain Ogg: headers)
        live_pages = [label for chain in live_chains for label in chain]
        assert live_pages == list(range(live_pages[0], 200))  # all of it, then the fallback's
        assert jingle_pages == list(range(jingle_pages[0], 211))
