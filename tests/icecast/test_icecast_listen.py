"""Live listeners: header first, burst from a sync point, the live edge, slow listeners."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import trio
from icecast_helpers import (
    connect,
    has_size,
    live_source,
    open_listener,
    open_source,
    read_exactly,
    read_head,
    read_to_end,
    running_server,
    wait_until,
)
from ogg_pages import HEADER, page

from mmstream.config import ServerConfig
from mmstream.server import RunningServer
from mmstream.streams import StreamStatus


async def wait_size(server: RunningServer, stream_id: str, size: int) -> None:
    await wait_until(has_size(server, stream_id, size))


async def test_a_late_listener_gets_the_header_a_burst_from_a_page_then_live(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, burst_size=3000) as server:
        source = await open_source(server, "live")
        stream = HEADER + b"".join(page(i) for i in range(20))
        await source.send_all(stream)
        await wait_size(server, "live", len(stream))
        listener, headers, rest = await open_listener(server, "/streams/live")
        assert headers["content-type"] == "audio/ogg"
        assert headers["icy-name"] == "a test"
        assert "content-length" not in headers and headers["connection"] == "close"
        # The header, then the newest page at least burst_size (3000) before the edge:
        # 3 pages of 1031 bytes.
        start = len(stream) - 3 * len(page(0))
        got = await read_exactly(listener, len(HEADER) + len(stream) - start, rest)
        assert got == HEADER + stream[start:]
        # Then what the source sends, as it sends it; the response ends at finalize.
        more = b"".join(page(i) for i in range(20, 25))
        await source.send_all(more)
        got = await read_exactly(listener, len(more))
        assert got == more
        await source.send_all(page(25))
        await source.send_eof()
        assert await read_to_end(listener) == page(25)
        assert server.manager.stat("live").status is StreamStatus.READY


async def test_a_listener_from_the_start_gets_every_byte(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        source = await open_source(server, "s")
        listener, _, rest = await open_listener(server, "/streams/s")  # nothing uploaded yet
        stream = HEADER + b"".join(page(i) for i in range(10))
        for at in range(0, len(stream), 999):
            await source.send_all(stream[at : at + 999])
        await source.send_eof()
        assert await read_to_end(listener, rest) == stream


async def test_offset_gives_the_bytes_from_there_without_a_header(tmp_path: Path) -> None:
    async with running_server(tmp_path, queue_size=4096, burst_size=0) as server:
        source = await open_source(server, "o")
        stream = HEADER + b"".join(page(i) for i in range(30))  # more than the window
        await source.send_all(stream)
        await wait_size(server, "o", len(stream))
        listener, _, rest = await open_listener(server, "/streams/o?offset=5")
        got = await read_exactly(listener, len(stream) - 5, rest)
        assert got == stream[5:]
        # An offset past the end, or not a number: 416.
        for bad in [f"{len(stream) * 10}", "-1", "x", "9" * 30]:
            probe = await connect(server)
            await probe.send_all(
                f"GET /streams/o?offset={bad} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            status, _, _ = await read_head(probe)
            assert status == 416, bad
        await source.send_all(page(30))
        await source.send_eof()
        assert await read_to_end(listener) == page(30)


async def test_range_requests_and_finished_streams_are_left_to_playback(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        source = await live_source(server, "p", HEADER)
        ranged = await connect(server)
        await ranged.send_all(b"GET /streams/p HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n\r\n")
        status, headers, rest = await read_head(ranged)
        assert status == 206
        assert await read_exactly(ranged, 4, rest) == b"OggS"
        await source.send_eof()
        await read_to_end(source)
        done = await connect(server)
        await done.send_all(b"GET /streams/p HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, rest = await read_head(done)
        assert status == 200 and headers["content-length"] == str(len(HEADER))


async def source_and_stuck_listener(
    server: RunningServer, stream_id: str
) -> tuple[trio.SocketStream, trio.SocketStream]:
    """A source that has sent 4 KiB, and a listener with a tiny receive buffer that will
    never read."""
    source = await live_source(
        server, stream_id, bytes(range(256)) * 16, content_type="application/octet-stream"
    )
    stuck = await connect(server)
    stuck.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await stuck.send_all(f"GET /streams/{stream_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return source, stuck


class Reader:
    """A listener that reads as fast as it can."""

    def __init__(self, stream: trio.SocketStream, received: int) -> None:
        self.stream = stream
        self.received = received
        self.progress = trio.Event()

    async def run(self) -> None:
        while piece := await self.stream.receive_some(65536):
            self.received += len(piece)
            self.progress.set()
            self.progress = trio.Event()

    async def until(self, count: int) -> None:
        while self.received < count:
            await self.progress.wait()


async def _push(source: trio.SocketStream, reader: Reader, start: int, total: int) -> None:
    """Batches of 32 KiB (half the queue), each sent once the reading listener has the
    previous one: the reader keeps up, the stuck listener cannot."""
    piece = bytes(range(256)) * 128  # not a known format: every piece is a start point
    sent = 0
    while sent < total:
        await source.send_all(piece)
        sent += len(piece)
        await reader.until(start + sent)
    await source.send_eof()


async def test_a_listener_that_never_reads_delays_nobody(tmp_path: Path) -> None:
    """The uploader and a reading listener finish although one listener reads nothing: it
    is skipped ahead instead (no timing assertion: a blocked fan-out would hang here)."""
    total = 4 * 1024 * 1024
    async with running_server(
        tmp_path, queue_size=64 * 1024, burst_size=0, send_interval=0.005
    ) as server:
        source, stuck = await source_and_stuck_listener(server, "slow")
        listener, _, rest = await open_listener(server, "/streams/slow")
        reader = Reader(listener, len(rest))
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.run)
                await reader.until(1)
                start = reader.received - 4096  # it started at the one piece sent so far
                await _push(source, reader, start, total)
        # The reading listener got everything from its start point to the end.
        size = server.manager.stat("slow").size
        assert server.manager.stat("slow").status is StreamStatus.READY
        assert reader.received == size
        # The stuck one was skipped ahead: far less than the whole stream reached it.
        stuck_bytes = len(await read_to_end(stuck))
        assert stuck_bytes < size // 2


async def test_slow_listener_disconnect_policy(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, queue_size=64 * 1024, burst_size=0, slow_listener="disconnect"
    ) as server:
        source, stuck = await source_and_stuck_listener(server, "d")
        await trio.sleep(0.1)
        with trio.fail_after(30):
            piece = bytes(range(256)) * 16
            for _ in range(256):  # 1 MiB, far past the queue
                await source.send_all(piece)
            await wait_size(server, "d", 4096 * 257)
            # Dropped: its connection ends although the stream is still uploading.
            await read_to_end(stuck)
        assert server.manager.stat("d").status is StreamStatus.UPLOADING


async def _read_slowly(stream: trio.SocketStream, out: bytearray) -> None:
    """A listener on a slow link: small reads with pauses, far slower than the source."""
    while piece := await stream.receive_some(8192):
        out += piece
        await trio.sleep(0.002)


async def source_and_small_offset_listener(
    server: RunningServer, stream_id: str, first: bytes
) -> tuple[trio.SocketStream, trio.SocketStream, bytes]:
    """A source that has sent ``first``, and a ``?offset=0`` listener with a tiny receive
    buffer (its socket fills at once); the bytes read past the listener's response head."""
    source = await live_source(server, stream_id, first, content_type="application/octet-stream")
    listener = await connect(server)
    listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    await listener.send_all(
        f"GET /streams/{stream_id}?offset=0 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    status, _, rest = await read_head(listener)
    assert status == 200
    return source, listener, rest


async def test_a_slow_listener_with_an_offset_gets_every_byte(tmp_path: Path) -> None:
    """``?offset=0`` asked for bytes, not for the live edge: however far behind the listener
    falls, it catches up from the cache and is never skipped ahead (regression: it was
    skipped to the newest sync point like a live-edge listener)."""
    written = os.urandom(2 * 1024 * 1024)
    async with running_server(
        tmp_path, queue_size=64 * 1024, burst_size=0, send_interval=0.005
    ) as server:
        source, listener, rest = await source_and_small_offset_listener(
            server, "fast", written[:4096]
        )
        received = bytearray(rest)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_slowly, listener, received)
                for at in range(4096, len(written), 32 * 1024):  # as fast as it goes
                    await source.send_all(written[at : at + 32 * 1024])
                await source.send_eof()
        assert server.manager.stat("fast").status is StreamStatus.READY
        assert len(received) == len(written)
        assert received == written
        # Counted as sent, whichever way they went (rounds, the cache, the drain at the end).
        assert server.metrics is not None
        sent = server.metrics.registry.get_sample_value("mmstream_bytes_out_total", {"via": "http"})
        assert sent == len(written)


async def test_a_listener_gets_the_bytes_its_socket_refused_while_the_source_is_quiet(
    tmp_path: Path,
) -> None:
    """Bytes a round could not write (the listener's socket was full) are sent once the
    socket drains, even if the source sends nothing more (regression: they waited for the
    source's next bytes, so a listener of a paused stream stalled short of its end)."""
    written = os.urandom(512 * 1024)
    async with running_server(tmp_path, burst_size=0, send_interval=0.005) as server:
        source, listener, rest = await source_and_small_offset_listener(
            server, "quiet", written[:4096]
        )
        await source.send_all(written[4096:])  # then nothing: the source stays connected
        await wait_size(server, "quiet", len(written))
        await trio.sleep(0.2)  # the rounds are over: the listener's socket is long full
        with trio.fail_after(10):
            assert await read_exactly(listener, len(written), rest) == written


async def test_sources_and_live_listeners_are_not_idle_connections(tmp_path: Path) -> None:
    """A source waiting for its next piece and live listeners are busy connections: at the
    connection cap a newcomer is refused rather than one of them closed to make room (they
    wait in the scope a shutdown cuts, which must not mark them idle)."""
    cap = ServerConfig(port=0, max_connections=3, max_connections_per_ip=3)
    async with running_server(tmp_path, server_config=cap, burst_size=0) as server:
        source = await live_source(
            server, "busy", b"a" * 1000, content_type="application/octet-stream"
        )
        listener, _, rest = await open_listener(server, "/streams/busy?offset=0")
        ranged = await connect(server)
        await ranged.send_all(b"GET /streams/busy HTTP/1.1\r\nHost: x\r\nRange: bytes=0-\r\n\r\n")
        status, _, _ = await read_head(ranged)
        assert status == 200
        await read_exactly(listener, 1000, rest)
        newcomer = await connect(server)
        await newcomer.send_all(b"GET /streams/busy?offset=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await read_head(newcomer)
        assert status == 503  # every slot does real work
        await source.send_all(b"b" * 1000)  # and all three go on
        assert await read_exactly(listener, 1000) == b"b" * 1000
        await source.send_eof()
        assert await read_to_end(listener) == b""
        assert server.manager.stat("busy").status is StreamStatus.READY
