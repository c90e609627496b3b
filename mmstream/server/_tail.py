"""WebSocket followers of a live stream, served together: one read per piece for all of them.

A ``tail`` must deliver every byte from its offset, in order, then ``end``. Served one task
per follower, each new piece costs every follower a wakeup, a read, a frame and a send
(several passes through the scheduler each): about 70 µs a follower, 7 ms a piece with 100
followers, before the last one has it.

So the followers that have caught up with the stream join its :class:`TailGroup`. The
group's one task waits for the stream to grow, reads the new piece once and writes it to
each member's socket without awaiting
(:meth:`~mmstream.server._transports.Connection.send_nowait`). A member whose socket
is busy (a reply being sent, a multi-frame ``read`` in progress, a full socket buffer) or
that took only part of the frame is *released*: its own task takes over from the member's
position, with ordinary awaited sends, and joins again once it has caught up. Nothing is
skipped and no frame is interleaved with another; at finalize, deletion or failure the group
releases everybody and each follower's task says ``end`` as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from ..errors import MmstreamError
from ..metrics import Metrics
from ..streams import StreamManager
from ._replay import Delivery

__all__ = ["Member", "TailGroup"]

log = logging.getLogger("mmstream.server")


@attrs.define(eq=False)
class Member:
    """One follower in a group."""

    #: The next stream offset this follower gets.
    position: int
    #: Writes a binary message to the follower's connection now, if it can take one.
    send_nowait: Callable[[bytes], Delivery] = attrs.field(repr=False)
    #: Set when the group hands the follower back to its own task.
    released: trio.Event = attrs.Factory(trio.Event)


class TailGroup:
    """The caught-up WebSocket followers of one stream, and the task that feeds them."""

    def __init__(
        self,
        manager: StreamManager,
        stream_id: str,
        edge: int,
        *,
        piece: int,
        metrics: Metrics | None = None,
        generation: str | None = None,
    ) -> None:
        self.manager = manager
        self.stream_id = stream_id
        #: The stream fed (None: whichever the id names); see ``Broadcaster.generation``.
        self.generation = generation
        #: The offset up to which every member has been given the stream.
        self.edge = edge
        self.piece = piece
        self.metrics = metrics
        self.ended = False
        self._members: list[Member] = []
        self._advanced = trio.Event()

    def join(self, member: Member) -> bool:
        """Take ``member`` in if it stands exactly at the group's edge (and the group still
        runs); else the caller goes on alone (behind) or waits (:meth:`wait_advanced`)."""
        if self.ended or member.position != self.edge:
            return False
        self._members.append(member)
        return True

    def leave(self, member: Member) -> None:
        if member in self._members:
            self._members.remove(member)
        member.released.set()

    async def wait_advanced(self) -> None:
        """Until the edge moves or the group ends."""
        await self._advanced.wait()

    @property
    def members(self) -> int:
        return len(self._members)

    async def run(self) -> None:
        """Feed the members until none is left, or the stream stops growing (finalized,
        failed or deleted: the followers' own tasks say ``end``)."""
        try:
            while self._members:
                info = await self.manager.wait_for_data(
                    self.stream_id, self.edge, generation=self.generation
                )
                if info.size <= self.edge:
                    break
                size = min(info.size - self.edge, self.piece)
                data = await self.manager.read_shared(
                    self.stream_id, self.edge, size, generation=self.generation
                )
                if not data:
                    break
                self._deliver(data)
        except MmstreamError as exc:
            log.debug("tail group of %s ends: %s", self.stream_id, exc)
        finally:
            self.ended = True
            for member in self._members:
                member.released.set()
            self._members.clear()
            self._advanced.set()

    def _deliver(self, data: bytes) -> None:
        """Write ``data`` to every member without awaiting; release those that cannot take
        it whole."""
        size = len(data)
        kept: list[Member] = []
        delivered = 0
        for member in self._members:
            outcome = member.send_nowait(data)
            if outcome is Delivery.REFUSED:
                member.released.set()  # its task sends this piece itself
                continue
            member.position += size
            delivered += 1
            if outcome is Delivery.STARTED:
                member.released.set()  # its task sends the rest of the frame first
            else:
                kept.append(member)
        self._members = kept
        self.edge += size
        if self.metrics is not None and delivered:
            self.metrics.bytes_out.labels("websocket").inc(size * delivered)
        self._advanced.set()
        self._advanced = trio.Event()
