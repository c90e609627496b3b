"""Relays: a stream's live listeners on any worker, not only on the one that owns it.

Sharding by id keeps a stream's upload on one worker (its owner); listening need not stay
there. A worker asked for a live stream it does not hold finds the peer uploading it (a
``stat`` to every peer of ``cluster.peers`` at once), follows it from there with *one*
WebSocket ``tail`` (``live``: the stream's header, a burst from a sync point, then the live
bytes, as an HTTP listener of the owner gets them) and feeds those bytes to a broadcaster of
its own (:meth:`~._fanout.FanoutHub.relay`). Its listeners are then served exactly as local
ones are, by the same broadcaster code: a relay is only another :data:`~._fanout.Source`.

So the owner sends each byte once per relaying worker, whatever the number of listeners,
and each worker's listeners cost that worker's core only (docs/scaling.md, "Relays").

When the owner goes away (its process dies, the connection drops) the relay's stream ends
cleanly for its listeners: they get what the relay had, then the end of the response, as
at a finalize; a player reconnects and lands wherever the balancer sends it. Listeners of a
stream with a fallback move to it instead, and back when a peer uploads the stream again
(:class:`~._switch.RelayedStations`). A stream deleted or failed at the owner drops them, as
a local one would.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio

from ..config import ClusterConfig
from ..errors import ConnectionFailedError, MmstreamError, StreamNotFoundError
from ._fanout import Broadcaster, FanoutHub, Feed, Source

if TYPE_CHECKING:  # the protocol loads with the client, at the first relay
    from ..protocol import StreamStat

__all__ = ["Relays", "find_owner", "relay_source"]

log = logging.getLogger("mmstream.server")

#: Owner look-ups under way at once: each opens a connection to every peer, so requests for
#: ids no peer has cannot make a node open connections without bound.
_LOOKUPS = 32
#: Ids whose last look-up found no owner, remembered for ``get(within=)``; beyond this many
#: the stale ones are forgotten.
_MISSES = 1024


async def find_owner(
    peers: Sequence[str], stream_id: str, *, token: str | None
) -> tuple[str, StreamStat] | None:
    """The peer uploading ``stream_id`` and its ``stat``, asking all peers at once; None if
    none is (not found, finished, or unreachable). The caller bounds the wait."""
    from ..client import connect  # a worker without peers never needs the client side

    found: list[tuple[str, StreamStat]] = []

    async def ask(url: str, cancel: trio.CancelScope) -> None:
        stat = None
        try:
            async with connect(url, token=token) as client:
                # Errors are caught inside: raised through the client's nursery, they
                # would come out as a group.
                with contextlib.suppress(MmstreamError):
                    stat = await client.stat(stream_id)
        except MmstreamError:
            return
        if stat is None:
            return
        if stat.status == "uploading":
            found.append((url, stat))
            cancel.cancel()

    async with trio.open_nursery() as nursery:
        for url in peers:
            nursery.start_soon(ask, url, nursery.cancel_scope)
    return found[0] if found else None


def relay_source(
    url: str,
    stream_id: str,
    *,
    token: str | None,
    on_title: Callable[[str], None] | None = None,
    interval: float = 0.05,
) -> Source:
    """A :data:`~._fanout.Source` that follows ``stream_id`` on the peer at ``url`` with one
    live ``tail``. The relay's offsets are its own: the header, then the owner's bytes from
    the sync point it chose, back to back (listeners of a relay join at the live edge).

    Titles live with the owner: while bytes come, the owner's ``stat`` is asked on the same
    connection at most every ``interval`` seconds (``icecast.send_interval``) and a new
    title goes to ``on_title``, so a relay's ICY listeners get it in their next block, as
    the owner's do. (Ogg titles need nothing: they are chains in the bytes.)"""

    async def follow(feed: Feed) -> None:
        from ..client import connect  # as in find_owner

        try:
            problem: MmstreamError | None = None
            connection = connect(url, stream=stream_id, token=token)
            async with connection as client, trio.open_nursery() as nursery:
                poll = None
                if on_title is not None:
                    poll = _TitlePoll(partial(client.stat, stream_id), on_title, interval)
                    nursery.start_soon(poll.run)
                # Errors are caught inside: raised through a nursery, they would come out
                # as a group.
                try:
                    async for data in await client.tail(stream_id, live=True):
                        feed(data, True)
                        if poll is not None:
                            poll.bytes_came()
                except MmstreamError as exc:
                    problem = exc
                nursery.cancel_scope.cancel()
            if problem is not None:
                raise problem
        except ConnectionFailedError as exc:
            log.info("relay of %s: the owner %s is gone (%s); its listeners end", stream_id,
                     url, exc)  # fmt: skip
        except StreamNotFoundError:
            raise
        except MmstreamError as exc:
            raise StreamNotFoundError(f"relay of {stream_id} from {url}: {exc}") from None

    return follow


@attrs.define
class _TitlePoll:
    """Asks the owner for its stream's title at most every ``interval`` seconds while bytes
    come, in a task of its own: the relay's bytes never wait for the answer. (They did: the
    owner answers between slices of its rounds, and each question held the relay's
    listeners for that long; docs/fanout.md, "Two workers".)"""

    stat: Callable[[], Awaitable[StreamStat]]
    on_title: Callable[[str], None]
    interval: float
    _came: trio.Event = attrs.field(factory=trio.Event)

    def bytes_came(self) -> None:
        self._came.set()

    async def run(self) -> None:
        title = None
        # A failed question ends the questions only: the tail says what became of the stream.
        with contextlib.suppress(MmstreamError):
            while True:
                await self._came.wait()
                self._came = trio.Event()
                titles = (await self.stat()).titles
                if titles and titles[-1].title != title:
                    title = titles[-1].title
                    self.on_title(title)
                await trio.sleep(self.interval)


@attrs.define
class _Relayed:
    broadcaster: Broadcaster
    #: The owner's ``stat`` when the relay started: content type and metadata for the
    #: listeners' response head.
    stat: StreamStat


class Relays:
    """One worker's relays: at most one per stream, shared by all its listeners."""

    def __init__(self, hub: FanoutHub, config: ClusterConfig, *, own_url: str | None) -> None:
        self.hub = hub
        self.config = config
        #: Every peer but this worker (asking itself would only cost a connection).
        self.peers = tuple(url for url in config.peers if url != own_url)
        self._relayed: dict[str, _Relayed] = {}
        self._lookups = trio.CapacityLimiter(_LOOKUPS)
        #: When a look-up for an id last found no owner (``trio.current_time()``).
        self._missed: dict[str, float] = {}
        #: Look-ups under way, by id: set when each ends.
        self._pending: dict[str, trio.Event] = {}

    def running(self, stream_id: str) -> Broadcaster | None:
        """The relay of ``stream_id`` if one runs (its owner still sends)."""
        current = self._current(stream_id)
        return None if current is None else current[0]

    async def get(
        self, stream_id: str, *, within: float = 0.0
    ) -> tuple[Broadcaster, StreamStat] | None:
        """The running relay of ``stream_id``, or a new one from the peer uploading it; None
        if no peer is uploading it, or (``within`` seconds) if a look-up found none that
        recently: the fallback listeners of a stream whose owner died ask again and again,
        and the peers answer one look-up per ``within``."""
        current = self._current(stream_id)
        if current is not None:
            return current
        self._relayed.pop(stream_id, None)  # ended: its last listeners hold what they need
        if trio.current_time() - self._missed.get(stream_id, -math.inf) < within:
            return None
        pending = self._pending.get(stream_id)
        if pending is not None:  # one look-up per id at a time: take its answer
            await pending.wait()
            return self._current(stream_id)
        self._pending[stream_id] = pending = trio.Event()
        try:
            return await self._start(stream_id)
        finally:
            del self._pending[stream_id]
            pending.set()

    async def _start(self, stream_id: str) -> tuple[Broadcaster, StreamStat] | None:
        """Find the peer uploading ``stream_id`` and start relaying it from there."""
        found = None
        async with self._lookups:
            with trio.move_on_after(self.config.lookup_timeout):
                token = self.config.token or None
                found = await find_owner(self.peers, stream_id, token=token)
        if found is None:
            self._missed_now(stream_id)
            return None
        self._missed.pop(stream_id, None)
        url, stat = found
        # Ended relays keep their window for their last listeners: forget them now.
        for name in [k for k, r in self._relayed.items() if r.broadcaster.ended]:
            del self._relayed[name]
        source = relay_source(url, stream_id, token=self.config.token or None,
                              on_title=partial(self._retitle, stream_id),
                              interval=self.hub.config.send_interval)  # fmt: skip
        generation = stat.generation or "relay"
        log.info("relay of %s from %s starts", stream_id, url)
        relayed = _Relayed(self.hub.relay(stream_id, generation, source), stat)
        self._relayed[stream_id] = relayed
        return relayed.broadcaster, relayed.stat

    def _current(self, stream_id: str) -> tuple[Broadcaster, StreamStat] | None:
        relayed = self._relayed.get(stream_id)
        if relayed is None or relayed.broadcaster.ended:
            return None
        return relayed.broadcaster, relayed.stat

    def _missed_now(self, stream_id: str) -> None:
        now = trio.current_time()
        if len(self._missed) >= _MISSES:
            # Forget the oldest half: a flood of unknown ids cannot grow this.
            for name in sorted(self._missed, key=self._missed.__getitem__)[: _MISSES // 2]:
                del self._missed[name]
        self._missed[stream_id] = now

    def _retitle(self, stream_id: str, title: str) -> None:
        """The owner's stream has a new title: the relay's listeners get it."""
        relayed = self._relayed.get(stream_id)
        if relayed is not None:
            relayed.broadcaster.set_title(title)
