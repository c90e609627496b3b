"""One follow path: every follower of a live stream is a listener of its broadcaster
(``mmstream.server._fanout``), and each piece is encoded once per encoding
(``mmstream.server._encoders``): one WebSocket frame for every ``tail``, one ICY body per
point of a ``metaint`` cycle. Whatever happens to a follower (busy, slow, gone), every
``tail`` still gets every byte in order, then ``end``."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from server_helpers import V1, make_config, v1_connect

from mmstream.config import ByteSize, CacheConfig, IcecastConfig
from mmstream.icecast import metadata_block
from mmstream.protocol import Create, Finalize, Read, Tail
from mmstream.server import RunningServer, serve
from mmstream.server._encoders import Icy, Parts, WebSocketFrames, binary_frame_header
from mmstream.server._fanout import FanoutHub, FdWriter, Listener, serve_fanout_hub
from mmstream.server._replay import Delivery, ReplayStream
from mmstream.streams import open_stream_manager

# -- the wire: whole frames or a remainder sent before anything else -----------------------


async def test_send_nowait_keeps_what_the_socket_did_not_take_and_sends_it_first() -> None:
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    left.setblocking(False)
    wire = ReplayStream(trio.SocketStream(trio.socket.from_stdlib_socket(left)), b"")
    big = os.urandom(1 << 20)
    assert wire.send_nowait(b"first") is Delivery.SENT
    assert wire.send_nowait(big) is Delivery.STARTED  # the buffer holds far less
    assert wire.send_nowait(b"never") is Delivery.REFUSED  # a remainder is owed
    received = bytearray()

    async def drain() -> None:
        right.setblocking(False)
        while len(received) < 5 + len(big) + 4:
            await trio.lowlevel.wait_readable(right)
            received.extend(right.recv(1 << 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await wire.send_all(b"next")  # the owed rest goes out before it
    assert bytes(received) == b"first" + big + b"next"
    assert wire.send_nowait(b"again") is Delivery.SENT
    right.close()
    await wire.aclose()


async def test_send_nowait_writes_parts_as_one_and_owes_the_rest_across_them() -> None:
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    left.setblocking(False)
    wire = ReplayStream(trio.SocketStream(trio.socket.from_stdlib_socket(left)), b"")
    head, big, tail = b"head", os.urandom(1 << 20), b"tail"
    assert wire.send_nowait(b"a", b"b", b"c") is Delivery.SENT
    assert wire.send_nowait(head, big, tail) is Delivery.STARTED
    received = bytearray()

    async def drain() -> None:
        right.setblocking(False)
        while len(received) < 3 + len(head) + len(big) + len(tail):
            await trio.lowlevel.wait_readable(right)
            received.extend(right.recv(1 << 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await wire.flush()
    assert bytes(received) == b"abc" + head + big + tail
    right.close()
    await wire.aclose()


async def test_send_nowait_refuses_while_a_send_is_in_progress() -> None:
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    wire = ReplayStream(trio.SocketStream(trio.socket.from_stdlib_socket(left)), b"")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wire.send_all, os.urandom(1 << 20))  # blocks: nobody reads
        await trio.testing.wait_all_tasks_blocked()
        assert wire.send_nowait(b"x") is Delivery.REFUSED
        nursery.cancel_scope.cancel()
    right.close()
    await wire.aclose()


async def test_a_stream_without_a_socket_refuses() -> None:
    _left, right = trio.testing.memory_stream_pair()
    assert ReplayStream(right, b"").send_nowait(b"x") is Delivery.REFUSED


# -- one broadcaster, every kind of follower, each piece encoded once --------------------


class Recorder:
    """A follower's socket as the rounds see it: takes everything, or nothing (busy)."""

    def __init__(self, *, busy: bool = False, limit: int | None = None) -> None:
        self.busy = busy
        #: Bytes the socket takes per write (None: all), as a full socket does.
        self.limit = limit
        self.out = bytearray()
        self.owes = False

    def write(self, parts: Parts) -> int:
        if self.busy:
            raise BlockingIOError
        data = b"".join(parts)[: self.limit]
        self.out += data
        return len(data)

    async def flush(self) -> None:
        return None


def _frames(data: bytes, piece: int) -> bytes:
    """``data`` as a client reads it: binary frames of at most ``piece`` bytes."""
    out = bytearray()
    for at in range(0, len(data), piece):
        out += binary_frame_header(len(data[at : at + piece])) + data[at : at + piece]
    return bytes(out)


async def _until(done: Callable[[], bool]) -> None:
    """Until ``done()``: the rounds run on a timer, so no task-blocked check tells."""
    with trio.fail_after(5):
        while not done():  # noqa: ASYNC110
            await trio.sleep(0.005)


async def _started(tmp_path: Path, nursery: trio.Nursery, **settings: Any) -> tuple[Any, Any]:
    config = CacheConfig(directory=tmp_path / "c", initial_size=ByteSize(1 << 20))
    manager = await nursery.start(_manager, config)
    hub: FanoutHub = await nursery.start(serve_fanout_hub, manager, IcecastConfig(**settings))
    return manager, hub


async def _manager(config: CacheConfig, task_status: trio.TaskStatus[Any]) -> None:
    async with open_stream_manager(config) as manager:
        task_status.started(manager)
        await trio.sleep_forever()


async def test_every_websocket_follower_gets_the_same_frame_built_once(tmp_path: Path) -> None:
    """The regression test for the shared encode: on main each follower framed its own copy
    (there was no broadcaster for tails to count encodes)."""
    async with trio.open_nursery() as nursery:
        manager, hub = await _started(tmp_path, nursery)
        await manager.create("s")
        broadcaster = hub.get("s")
        writers = [Recorder() for _ in range(30)]
        for writer in writers:
            listener = Listener(
                writer, 0, encoder=WebSocketFrames(4), catch_up=True, immediate=True
            )
            broadcaster.add(listener)
        pieces = [b"abcdef", b"gh", b"ijklmnopq"]
        for piece in pieces:
            await manager.append("s", piece)
            await trio.testing.wait_all_tasks_blocked()
        expected = b"".join(_frames(piece, 4) for piece in pieces)
        assert all(bytes(writer.out) == expected for writer in writers)
        assert broadcaster.encodes == len(pieces)  # not 30 times that
        nursery.cancel_scope.cancel()


async def test_a_busy_follower_is_retried_and_loses_nothing(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        manager, hub = await _started(tmp_path, nursery, send_interval=0.001)
        await manager.create("s")
        broadcaster = hub.get("s")
        steady, busy = Recorder(), Recorder(busy=True)
        for writer in (steady, busy):
            broadcaster.add(
                Listener(writer, 0, encoder=WebSocketFrames(100), catch_up=True, immediate=True)
            )
        await manager.append("s", b"abc")
        await trio.testing.wait_all_tasks_blocked()
        assert steady.out == _frames(b"abc", 100) and not busy.out
        busy.busy = False
        await manager.append("s", b"defg")
        await _until(lambda: len(busy.out) >= len(_frames(b"abcdefg", 100)))
        assert bytes(busy.out) == _frames(b"abcdefg", 100)  # what it missed, in one frame
        nursery.cancel_scope.cancel()


async def test_icy_listeners_at_the_same_point_share_one_body(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        manager, hub = await _started(tmp_path, nursery, send_interval=0.001)
        await manager.create("s")
        await manager.append("s", b"x" * 10)
        broadcaster = hub.get("s")
        broadcaster.set_title("song")
        await _until(lambda: broadcaster.edge >= 10)
        same = [Recorder() for _ in range(20)]
        for writer in same:
            broadcaster.add(Listener(writer, 10, encoder=Icy(8)))
        apart = Recorder()
        broadcaster.add(Listener(apart, 10, encoder=Icy(8, until_block=3)))
        encodes = broadcaster.encodes
        await manager.append("s", b"0123456789")
        await _until(lambda: len(apart.out) >= 10)
        assert broadcaster.encodes - encodes == 2  # one per point of the metaint cycle
        block = metadata_block("song")
        assert all(bytes(w.out) == b"01234567" + block + b"89" for w in same)
        assert bytes(apart.out) == b"012" + block + b"3456789"
        nursery.cancel_scope.cancel()


async def test_sockets_that_take_part_get_the_rest_first(tmp_path: Path) -> None:
    """A plain body's rest stays in the window; an ICY body's rest is owed before anything
    new is encoded for that listener."""
    async with trio.open_nursery() as nursery:
        manager, hub = await _started(tmp_path, nursery, send_interval=0.001)
        await manager.create("s")
        broadcaster = hub.get("s")
        plain, icy = Recorder(limit=3), Recorder(limit=3)
        broadcaster.add(Listener(plain, 0, pending=b"HEAD"))
        broadcaster.add(Listener(icy, 0, encoder=Icy(4)))
        await manager.append("s", b"abcdefgh")
        await _until(lambda: len(plain.out) >= 12 and len(icy.out) >= 9)
        assert bytes(plain.out) == b"HEADabcdefgh"
        assert bytes(icy.out) == b"abcd\x00efgh"
        nursery.cancel_scope.cancel()


async def test_plain_listeners_on_sockets_are_written_on_the_hot_path(tmp_path: Path) -> None:
    """The regression test for the round's hot path: on main every plain listener went
    through the general path (its writer's method, a tuple of parts, a count by label),
    and nothing counted direct writes. A listener owed its header first takes the general
    path once, then the hot one; every byte arrives, and all of them are counted."""
    async with trio.open_nursery() as nursery:
        manager, hub = await _started(tmp_path, nursery, send_interval=0.001)
        await manager.create("s")
        broadcaster = hub.get("s")
        pairs = [socket.socketpair() for _ in range(5)]
        for left, right in pairs:
            left.setblocking(False)
            right.setblocking(False)
        head = Listener(FdWriter(pairs[0][0].fileno()), 0, pending=b"HEAD")
        listeners = [head] + [Listener(FdWriter(left.fileno()), 0) for left, _ in pairs[1:]]
        for listener in listeners:
            broadcaster.add(listener)
        await manager.append("s", b"abc")
        await _until(lambda: all(listener.position == 3 for listener in listeners))
        assert broadcaster.direct_writes == 4  # all but the one owed its header
        await manager.append("s", b"defg")
        await _until(lambda: all(listener.position == 7 for listener in listeners))
        assert broadcaster.direct_writes == 4 + 5
        assert broadcaster.bytes_sent == 5 * 7  # stream bytes, not the header
        received = [right.recv(100) for _, right in pairs]
        assert received == [b"HEADabcdefg"] + [b"abcdefg"] * 4
        for left, right in pairs:
            left.close()
            right.close()
        nursery.cancel_scope.cancel()


class Stamper(Recorder):
    """Notes, on each write, how often another task has run so far."""

    def __init__(self, ticks: list[int]) -> None:
        super().__init__()
        self.ticks = ticks
        self.seen: list[int] = []

    def write(self, parts: Parts) -> int:
        self.seen.append(self.ticks[0])
        return super().write(parts)


async def test_a_round_over_many_listeners_lets_the_event_loop_run_between_slices(
    tmp_path: Path,
) -> None:
    """The regression test for the sliced round: on main a round wrote every listener
    without a checkpoint (75 ms and more at 10,000 sockets), so the source's bytes that
    came meanwhile waited for the next round, and every other task for the round's end."""
    ticks = [0]

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        manager, hub = await _started(tmp_path, nursery, send_interval=0.001)
        await manager.create("s")
        broadcaster = hub.get("s")
        broadcaster.round_slice = 2
        writers = [Stamper(ticks) for _ in range(10)]
        for writer in writers:
            broadcaster.add(Listener(writer, 0))
        nursery.start_soon(ticker)
        await manager.append("s", b"abc")
        await _until(lambda: all(writer.out == b"abc" for writer in writers))
        first, last = writers[0].seen[0], writers[-1].seen[0]
        assert last - first >= 3  # four checkpoints between the five slices
        assert [writer.seen[0] for writer in writers[:2]] == [first, first]  # one slice
        nursery.cancel_scope.cancel()


class Counter(Recorder):
    """Counts the round's writes, over all the listeners that share it."""

    def __init__(self, written: list[int]) -> None:
        super().__init__()
        self.written = written

    def write(self, parts: Parts) -> int:
        self.written[0] += 1
        return super().write(parts)


async def test_a_piece_carried_by_three_tasks_during_a_round_waits_a_few_slices_of_100(
    tmp_path: Path,
) -> None:
    """The regression test for slices of 100 listeners (500 before): another task waits
    for one slice each time it yields while a round runs, and a relay's bytes cross three
    tasks on the relaying worker (websockets' reader, the client's router, the relay's
    follow task) and two on the owner (the upload, the broadcaster's follow). With slices
    of 500, a relay's listeners lagged its owner's by 40-70 ms at p99 in
    ``bench/fanout.py --worker-cpu 0.3 --runs 2:3600`` (docs/fanout.md, "Two workers");
    with 100, by 7-10 ms."""
    written = [0]
    async with trio.open_nursery() as nursery:
        manager, hub = await _started(tmp_path, nursery, send_interval=0.001)
        await manager.create("s")
        broadcaster = hub.get("s")
        for _ in range(3000):
            broadcaster.add(Listener(Counter(written), 0))
        await manager.append("s", b"abc")
        with trio.fail_after(5):
            while not written[0]:  # the round has begun
                await trio.lowlevel.checkpoint()
        began = written[0]
        for _hop in range(3):
            await trio.lowlevel.checkpoint()
        assert written[0] - began <= 400  # at most the slice under way and one per hop
        assert written[0] < 3000  # ... and the round not over
        nursery.cancel_scope.cancel()


def test_frame_headers_follow_rfc_6455() -> None:
    assert binary_frame_header(5) == b"\x82\x05"
    assert binary_frame_header(126) == b"\x82\x7e\x00\x7e"
    assert binary_frame_header(1 << 16) == b"\x82\x7f" + (1 << 16).to_bytes(8, "big")


# -- end to end -----------------------------------------------------------------------------


async def _follow_to_end(v1: V1, offset: int = 0) -> bytes:
    """Tail from ``offset`` and collect the bytes until ``end``."""
    assert (await v1.call(Tail(offset=offset)))["ok"]
    data = bytearray()
    while True:
        message = await v1.ws.receive()
        if isinstance(message, bytes):
            data += message
            continue
        event = json.loads(message)
        if event.get("op") == "end":
            assert event["size"] == offset + len(data)
            return bytes(data)


async def test_many_followers_get_every_byte_then_end(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    server: RunningServer = await nursery.start(serve, make_config(tmp_path / "c", transport))
    data = os.urandom(3 << 20)
    got: dict[int, bytes] = {}
    url = f"{server.url}/v1/streams/live"
    async with v1_connect(url, transport) as writer:
        await writer.call(Create())

        async def follow(index: int) -> None:
            async with v1_connect(url, transport) as v1:
                got[index] = await _follow_to_end(v1)

        async with trio.open_nursery() as followers:
            for index in range(20):
                followers.start_soon(follow, index)
            await trio.sleep(0.2)
            await writer.upload(data, chunk=4096)
            assert (await writer.call(Finalize()))["ok"]
    assert len(got) == 20 and all(value == data for value in got.values())


async def test_a_follower_that_reads_meanwhile_gets_both_in_order(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    """A ``read`` sends its frames together: tail frames wait, and nothing is lost."""
    server: RunningServer = await nursery.start(serve, make_config(tmp_path / "c", transport))
    other, live = os.urandom(5 << 20), os.urandom(2 << 20)
    async with (
        v1_connect(f"{server.url}/v1/streams/other", transport) as uploader,
        v1_connect(f"{server.url}/v1/streams/live", transport) as writer,
        v1_connect(f"{server.url}/v1", transport) as follower,
    ):
        await uploader.call(Create())
        await uploader.upload(other)
        await writer.call(Create())
        assert (await follower.call(Tail(stream="live", offset=0)))["ok"]
        tailed, read_back = bytearray(), bytearray()
        reading = 0  # bytes of the read reply still to come

        async def write() -> None:
            await writer.upload(live, chunk=4096)
            await writer.call(Finalize())

        nursery.start_soon(write)
        for _ in range(3):
            await follower.send(Read(id="r", stream="other", offset=0))
        ended, replies = False, 0
        while not (ended and replies == 3 and not reading):
            message = await follower.ws.receive()
            if isinstance(message, bytes):
                if reading:
                    assert len(message) <= reading  # a read's frames are never split up
                    read_back += message
                    reading -= len(message)
                else:
                    tailed += message
                continue
            event = json.loads(message)
            if event.get("re") == "r":
                assert reading == 0
                reading = event["length"]
                replies += 1
            elif event.get("op") == "end":
                ended = True  # text events may come between a read's frames; data may not
        assert bytes(tailed) == live
        assert bytes(read_back) == other * 3


async def test_a_follower_that_stops_reading_holds_up_nobody_and_loses_nothing(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    server: RunningServer = await nursery.start(serve, make_config(tmp_path / "c", transport))
    data = os.urandom(8 << 20)
    url = f"{server.url}/v1/streams/slow"
    async with (
        v1_connect(url, transport) as writer,
        v1_connect(url, transport) as quick,
        v1_connect(url, transport) as stalled,
    ):
        await writer.call(Create())
        assert (await stalled.call(Tail(offset=0)))["ok"]  # then not read for a while
        done = trio.Event()
        quick_got: list[bytes] = []

        async def follow_quickly() -> None:
            quick_got.append(await _follow_to_end(quick))
            done.set()

        nursery.start_soon(follow_quickly)
        await trio.sleep(0.1)
        await writer.upload(data, chunk=16384)
        await writer.call(Finalize(id="f"))
        with trio.fail_after(20):
            await done.wait()  # the quick one finished while the other was not reading
        assert quick_got == [data]
        rest = bytearray()
        while True:
            message = await stalled.ws.receive()
            if isinstance(message, bytes):
                rest += message
            elif json.loads(message).get("op") == "end":
                break
        assert bytes(rest) == data
