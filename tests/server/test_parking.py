"""One task watching many sockets for their peers leaving (mmstream.server._parking)."""

from __future__ import annotations

import socket

import pytest
import trio

from mmstream.server._parking import SocketWatch, supported

pytestmark = pytest.mark.skipif(not supported(), reason="select.epoll is Linux only")


async def test_a_peer_closing_is_noticed_once_and_bytes_from_it_are_dropped() -> None:
    gone: list[str] = []
    watch = SocketWatch[str](gone.append)
    pairs = [socket.socketpair() for _ in range(3)]
    for name, (ours, _) in zip("abc", pairs, strict=True):
        ours.setblocking(False)
        watch.add(ours.fileno(), name)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        pairs[0][1].send(b"GET / again")  # a listener talking is not leaving
        pairs[1][1].close()
        watch.discard(pairs[2][0].fileno())  # no longer watched: its close is not ours
        pairs[2][1].close()
        with trio.fail_after(5):
            while gone != ["b"]:  # noqa: ASYNC110
                await trio.sleep(0.01)
        await trio.sleep(0.05)
        assert gone == ["b"] and len(watch) == 1
        pairs[0][1].close()
        with trio.fail_after(5):
            while gone != ["b", "a"]:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert watch.closed
    for ours, theirs in pairs:
        ours.close()
        theirs.close()
