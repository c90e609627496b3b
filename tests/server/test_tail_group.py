"""Caught-up WebSocket followers are fed by one task per stream, one frame per piece
(``mmstream.server._tail``); whatever happens to a member (busy, slow, gone), every follower
still gets every byte in order, then ``end``."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import trio
from server_helpers import V1, make_config, v1_connect

from mmstream.config import CacheConfig
from mmstream.protocol import Create, Finalize, Read, Tail
from mmstream.server import RunningServer, serve
from mmstream.server._replay import Delivery, ReplayStream
from mmstream.server._tail import Member, TailGroup
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


# -- the group, with recording members ------------------------------------------------------


class Recorder:
    """A member's connection: takes frames (or refuses, or takes them partly) as told."""

    def __init__(self, answer: Delivery = Delivery.SENT) -> None:
        self.answer = answer
        self.frames: list[bytes] = []

    def __call__(self, frame: bytes) -> Delivery:
        if self.answer is not Delivery.REFUSED:
            self.frames.append(frame)
        return self.answer


async def test_the_group_frames_each_piece_once_and_releases_who_cannot_take_it(
    tmp_path: Path,
) -> None:
    config = CacheConfig(directory=tmp_path / "c")
    async with open_stream_manager(config) as manager, trio.open_nursery() as nursery:
        await manager.create("s")
        group = TailGroup(manager, "s", 0, piece=1 << 20)
        steady, busy, partial = Recorder(), Recorder(Delivery.REFUSED), Recorder(Delivery.STARTED)
        members = [Member(0, steady), Member(0, busy), Member(0, partial)]
        assert all(group.join(m) for m in members)
        assert not group.join(Member(5, Recorder()))  # not at the edge
        nursery.start_soon(group.run)
        await trio.testing.wait_all_tasks_blocked()
        await manager.append("s", b"abc")
        await trio.testing.wait_all_tasks_blocked()
        assert steady.frames == [b"abc"]
        assert partial.frames == [b"abc"]
        assert [m.position for m in members] == [3, 0, 3]  # the refused one gets it itself
        assert [m.released.is_set() for m in members] == [False, True, True]
        assert group.members == 1 and group.edge == 3
        await manager.append("s", b"defg")
        await trio.testing.wait_all_tasks_blocked()
        assert steady.frames == [b"abc", b"defg"]
        late = Member(7, Recorder())
        assert group.join(late)
        await manager.finalize("s")
        await trio.testing.wait_all_tasks_blocked()
        assert group.ended and members[0].released.is_set() and late.released.is_set()
        assert not group.join(Member(7, Recorder()))


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
