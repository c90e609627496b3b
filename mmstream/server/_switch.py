"""Live listeners that move between a stream and its fallbacks without being disconnected.

The decisions are :mod:`mmstream.fallbacks`' (which stream of the chain to hear); this is
the moving. A listener is attached to one stream's broadcaster at a time, as every live
listener is (:mod:`._fanout`): the same rounds send it its bytes. When its stream goes off
air (its source dropped, it was finalized, deleted or failed) or, with ``override``, an
earlier stream of its chain comes back, the listener waits until the next stream's
broadcaster is ready (header known, a sync point to start at) while it still hears the old
one, then leaves the old broadcaster and joins the new one at its start point, with the new
stream's header first (a new Ogg logical stream, a new WebM header: players treat it as a
chained stream). Nothing else happens in between, so the gap is the switch itself.

Which streams are on air: an UPLOADING stream is, unless its Icecast source dropped and has
not come back (:class:`OnAir`; a finalized, failed or deleted stream is not). On a worker
that relays (:mod:`._relay`), a stream held elsewhere is on air while this worker's relay of
it runs (:class:`RelayedStations`): so when the owner of a relayed stream dies, the relay's
listeners move to its fallback, and back once a peer uploads the stream again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Protocol

import trio

from ..errors import MmstreamError, StreamNotFoundError
from ..fallbacks import choose
from ..streams import StreamManager, StreamStatus
from ._encoders import PLAIN, Encoder
from ._fanout import Broadcaster, FanoutHub, FdWriter, ListenerState

if TYPE_CHECKING:  # relays load only when peers are configured
    from ._relay import Relays

__all__ = ["OnAir", "RelayedStations", "Stations", "listen_switching"]

#: Seconds a listener leaving a finished stream gets to take its end.
_DRAIN_TIMEOUT = 30.0


class Stations(Protocol):
    """The streams a switching listener may hear: which are on air, their broadcasters."""

    #: Seconds between decisions when no event comes: streams held elsewhere send none.
    recheck: float

    @property
    def changed(self) -> trio.Event:
        """Set at the next change this worker sees (take it before deciding)."""

    def __call__(self, stream_id: str) -> bool:
        """Whether ``stream_id`` is on air now."""

    def broadcaster(self, stream_id: str) -> Broadcaster:
        """The broadcaster a listener of ``stream_id`` joins (it is on air)."""

    def finished(self, stream_id: str) -> bool:
        """Whether ``stream_id`` is off air for good (finalized, failed, deleted; a relay
        that ended): its broadcaster ends by itself, sending its listeners its end."""

    async def refresh(self, chain: Sequence[str]) -> None:
        """Learn what is on air among ``chain`` where it takes I/O (before a decision)."""


class OnAir:
    """Which streams have a source now, and an event whenever a source comes or goes."""

    recheck = math.inf  # every change here sets ``changed``

    def __init__(self, manager: StreamManager, hub: FanoutHub) -> None:
        self.manager = manager
        self.hub = hub
        #: UPLOADING streams (id, generation) whose Icecast source dropped (or ended,
        #: keeping the stream); another stream created under the id is not silent.
        self._silent: set[tuple[str, str]] = set()
        self._changed = trio.Event()

    def __call__(self, stream_id: str) -> bool:
        try:
            info = self.manager.stat(stream_id)
        except MmstreamError:
            return False
        silent = (stream_id, info.generation) in self._silent
        return info.status is StreamStatus.UPLOADING and not silent

    def holds(self, stream_id: str) -> bool:
        """Whether this worker holds ``stream_id`` (in any state)."""
        try:
            self.manager.stat(stream_id)
        except MmstreamError:
            return False
        return True

    def broadcaster(self, stream_id: str) -> Broadcaster:
        return self.hub.get(stream_id)

    def finished(self, stream_id: str) -> bool:
        try:
            return self.manager.stat(stream_id).status is not StreamStatus.UPLOADING
        except MmstreamError:
            return True

    async def refresh(self, chain: Sequence[str]) -> None:
        """Nothing to learn: this worker's streams are known."""

    def source_started(self, stream_id: str, generation: str) -> None:
        self._silent.discard((stream_id, generation))
        self._notify()

    def source_stopped(self, stream_id: str, generation: str) -> None:
        """The source went away: its stream is silent while it stays UPLOADING."""
        try:
            uploading = self.manager.stat(stream_id, generation=generation).status
        except MmstreamError:
            uploading = None
        if uploading is StreamStatus.UPLOADING:
            self._silent.add((stream_id, generation))
        else:
            self._silent.discard((stream_id, generation))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def changed(self) -> trio.Event:
        """Set at the next change (take it before deciding, wait on it after)."""
        return self._changed


class RelayedStations:
    """On a worker that relays: streams it holds are on air as :class:`OnAir` says, others
    while its relay of them runs. :meth:`refresh` asks the peers for those of a chain it
    does not relay (:meth:`.Relays.get`, at most one look-up per stream per ``recheck``),
    which starts their relay when a peer uploads them."""

    #: Seconds between look-ups for a stream no peer uploaded (a source may come back).
    recheck = 1.0

    def __init__(self, local: OnAir, relays: Relays) -> None:
        self.local = local
        self.relays = relays

    @property
    def changed(self) -> trio.Event:
        return self.local.changed

    def __call__(self, stream_id: str) -> bool:
        if self.local.holds(stream_id):
            return self.local(stream_id)
        return self.relays.running(stream_id) is not None

    def broadcaster(self, stream_id: str) -> Broadcaster:
        if self.local.holds(stream_id):
            return self.local.broadcaster(stream_id)
        running = self.relays.running(stream_id)
        if running is None:  # ended since the decision: its listener ends and moves on
            raise StreamNotFoundError(f"the relay of {stream_id} ended")
        return running

    def finished(self, stream_id: str) -> bool:
        if self.local.holds(stream_id):
            return self.local.finished(stream_id)
        return self.relays.running(stream_id) is None

    async def refresh(self, chain: Sequence[str]) -> None:
        """Look up the streams of ``chain`` before the first on air here: the only ones a
        decision could move a listener to (no look-up while the first stream plays)."""
        for stream_id in chain:
            if self(stream_id):
                return
            if not self.local.holds(stream_id):
                await self.relays.get(stream_id, within=self.recheck)
                if self(stream_id):
                    return


async def listen_switching(
    stream: trio.SocketStream,
    stations: Stations,
    chain: Sequence[str],
    start: str,
    *,
    override: bool,
    encoder: Encoder = PLAIN,
) -> None:
    """Serve one listener of ``chain[0]`` (its response head already sent) from ``start``
    on, along the chain, until the client goes or nothing of the chain is on air after its
    stream ended. On each stream it is served as every listener is
    (:meth:`.Broadcaster.serve`): the rounds write, and the end of a finished stream is
    sent before the next one. What is its own is only the moving: ``serve``'s watch returns
    when a switch is due, which takes the listener out of that broadcaster. Its ``encoder``
    goes along: with in-band titles (``Icy-MetaData: 1``) the ICY framing runs on over the
    moves, each stream's title comes in the next block, and framed bytes a round left owed
    are sent before the move."""
    fd = stream.socket.fileno()
    async with trio.open_nursery() as nursery:

        async def until_gone() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await stream.receive_some(4096):
                    pass  # nothing is expected from a listener; its close ends the response
            nursery.cancel_scope.cancel()

        nursery.start_soon(until_gone)
        current: str | None = start
        while current is not None:
            try:
                broadcaster = stations.broadcaster(current)
            except StreamNotFoundError:
                await stations.refresh(chain)
                current = choose(chain, stations, None, override=override)
                continue
            listener = await broadcaster.live_listener(FdWriter(fd), encoder)
            due: list[str] = []
            watch = partial(_until_switch, due, current, stations, chain, override)
            try:
                async with contextlib.aclosing(broadcaster.serve(listener, watch)) as pieces:
                    async for piece in pieces:  # the end of a finished stream
                        await _drain(stream, piece)
            except MmstreamError:
                # Failed or deleted, a relay whose owner went, or dropped as too slow (then
                # it ends).
                if listener.state is ListenerState.DROPPED and broadcaster.failed is None:
                    break
            if listener.state is ListenerState.GONE and not due:
                break  # a write found the client gone
            if listener.pending:  # framed bytes already counted in the ICY framing
                await _drain(stream, listener.pending)
            encoder = listener.encoder  # where its framing stands
            if due:
                current = due[0]
                continue
            # Its stream ended: the next one on air, if any.
            await stations.refresh(chain)
            current = _next_on_air(stations, chain, current, override)
        nursery.cancel_scope.cancel()


async def _until_switch(
    due: list[str],
    current: str,
    stations: Stations,
    chain: Sequence[str],
    override: bool,
) -> None:
    """Wait while the listener should stay on ``current``; then put the stream to move to
    (its broadcaster ready) in ``due``. The listener's broadcaster cancels this when
    ``current`` ends."""
    while True:
        changed = stations.changed
        await stations.refresh(chain)
        target = choose(chain, stations, current, override=override)
        # A finished stream's broadcaster ends by itself (cancelling this), and serve
        # sends its end first: only a silent one (its source dropped) is left from here.
        if target is not None and target != current and not stations.finished(current):
            # Still hearing ``current`` until the next one can start.
            with contextlib.suppress(StreamNotFoundError):
                await stations.broadcaster(target).wait_ready()
                due.append(target)
                return
        # An earlier stream held elsewhere sends no event when it returns: ask again then.
        earlier = override and current != chain[0]
        with trio.move_on_after(stations.recheck if earlier else math.inf):
            await changed.wait()


def _next_on_air(
    stations: Stations, chain: Sequence[str], ended: str, override: bool
) -> str | None:
    """Where a listener goes when ``ended`` stopped: another stream of the chain on air."""
    return choose(chain, lambda s: s != ended and stations(s), None, override=override)


async def _drain(stream: trio.SocketStream, piece: bytes) -> None:
    """The end of a finished stream, or framed bytes owed at a move, before the next one."""
    with (
        trio.move_on_after(_DRAIN_TIMEOUT),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(piece)
