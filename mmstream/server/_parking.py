"""Many sockets watched by one task, for their peers going away.

A live HTTP listener only ever waits, between the rounds that write to it, for its client
to leave. A Trio task per listener for that wait costs ~17 KiB of Python objects (its
coroutine stack through the front door, the route and the socket's receive, its cancel
scopes); at 15,000 listeners that is most of a worker's memory (docs/fanout.md). A
:class:`SocketWatch` watches all of a broadcaster's parked listeners instead: their file
descriptors are in one ``epoll`` set whose own descriptor is what one Trio task waits on
(:func:`trio.lowlevel.wait_readable`); a socket that turns readable is read once, and if
its peer closed (or reset) it, its callback runs. Bytes a listener sends are read and
dropped, as the per-listener wait did: nothing is expected from a listener.

Linux only (``select.epoll``): elsewhere :func:`supported` is False and listeners keep a
task each.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

__all__ = ["SocketWatch", "supported"]

#: What a readable listener socket is read by, per wake-up (its bytes are dropped).
_DRAIN = 4096


_T = TypeVar("_T")


def supported() -> bool:
    return hasattr(select, "epoll")


class SocketWatch(Generic[_T]):
    """File descriptors, each with whose it is: ``gone(whose)`` is called when its peer
    goes away (once, then it is forgotten). :meth:`run` is the one task that watches them;
    when it ends, the watch is closed and nothing more is called (whoever ends it ends the
    listeners). One callback for all: nothing is allocated per socket but its entry."""

    def __init__(self, gone: Callable[[_T], None]) -> None:
        self._epoll = select.epoll()
        self._on_gone = gone
        self._owners: dict[int, _T] = {}

    @property
    def closed(self) -> bool:
        return self._epoll.closed

    def __len__(self) -> int:
        return len(self._owners)

    def add(self, fd: int, whose: _T) -> None:
        """Watch ``fd`` (a connected socket) until its peer leaves or :meth:`discard`."""
        self._epoll.register(fd, select.EPOLLIN)
        self._owners[fd] = whose

    def discard(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed: a closed descriptor's number is
        reused by the next connection)."""
        if self._owners.pop(fd, None) is not None and not self._epoll.closed:
            self._epoll.unregister(fd)

    async def run(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self._epoll.fileno())
                for fd, _events in self._epoll.poll(0):
                    if fd in self._owners and _peer_left(fd):
                        whose = self._owners[fd]
                        self.discard(fd)
                        self._on_gone(whose)
        finally:
            self._owners.clear()
            self._epoll.close()


def _peer_left(fd: int) -> bool:
    try:
        return not os.read(fd, _DRAIN)
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True
