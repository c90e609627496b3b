"""One live stream, every follower: a broadcaster per stream.

A :class:`Broadcaster` follows one UPLOADING stream through the manager (so it serves
whatever writes to the stream: an Icecast ``PUT`` or a WebSocket upload), keeps a window of
its most recent bytes in memory, and feeds them to :class:`~mmstream.audio_sync.StreamSync`
so it knows the stream's header and where a decoder can start. Every follower of a live
stream is one of its listeners (:class:`Listener`): HTTP and Icecast listeners (plain, chunked or
ICY-interleaved bodies), WebSocket ``tail`` followers, a relay's listeners (the relay is
only another :data:`Source`) and listeners moving between fallbacks. The stream is read
from the cache once, whatever the number of followers.

Sending is where the cost is. One Trio task per listener, woken per 20 ms chunk, is ~250,000
task switches and sends a second at 5,000 listeners: far more than one core does. So the
broadcaster sends itself, in *rounds*: it walks its listeners once (in slices, letting the
event loop run between them) and gives each everything new in one non-blocking write on
its socket. What a listener is sent is its
:mod:`encoder <._encoders>`'s output; listeners with equal encoders at the same position
share it, so each piece is encoded once per encoding (one window slice for plain bodies, one
WebSocket frame for every ``tail``, one ICY body per point of a ``metaint`` cycle). HTTP
listeners are served in rounds at most every ``send_interval`` seconds (latency vs. CPU);
WebSocket followers (``immediate``) as soon as a piece arrives, as a ``tail`` promises.

A write that would block writes what fits, and the rest waits for the next round (brought by
new data or, for a quiet source, by a retry timer while a socket was left full); nobody
awaits a slow socket, so a slow listener never delays the uploader or the other listeners.
Each follower's backlog is bounded by ``queue_size``: a live-edge listener further behind
jumps to the newest sync point (``skip``) or is disconnected (``disconnect``), like Icecast's
queue-size. A follower that asked for an offset (``?offset=``, every ``tail``) asked for
every byte from it: when it falls behind it leaves the rounds, and :meth:`Broadcaster.join`
reads what it lacks from the cache at its own pace until it is close enough to the live
edge to rejoin them.

Each follower's own task (:meth:`Broadcaster.serve`) only waits: for the client going away,
for the stream's end (then it sends what its follower still lacks with ordinary awaited
sends), and for the round's call when its follower has no socket the round can write to (a
TLS stream, trio-websocket) or was left owing part of a frame. A live-edge HTTP listener on
a plain socket, the many, has no task at all (:meth:`Broadcaster.park`): the rounds write
to it, one :class:`~._parking.SocketWatch` per broadcaster notices its client leaving, and
its connection's end (the rest of the stream, the hooks, the close) is a task started then.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Protocol

import attrs
import trio

from ..audio_sync import StreamSync
from ..config import IcecastConfig
from ..errors import CacheClosedError, MmstreamError, StorageError, StreamNotFoundError
from ..metrics import Metrics
from ..streams import StreamManager, StreamStatus, Title
from ..web.playback import PIECE_SIZE
from . import _parking
from ._encoders import PLAIN, Encoder, Parts

__all__ = [
    "Broadcaster",
    "FanoutHub",
    "FdWriter",
    "Feed",
    "Listener",
    "ListenerClient",
    "ListenerState",
    "Source",
    "Writer",
    "serve_fanout_hub",
]

log = logging.getLogger("mmstream.server")

#: How far the window may grow past what it keeps before it is trimmed.
_TRIM_SLACK = 64 * 1024
#: Largest read from the cache per step of the follower.
_READ_SIZE = 256 * 1024
#: Seconds before bytes that a full socket refused are offered again, when no new data
#: brings the next round sooner (at least ``send_interval``).
_RETRY_INTERVAL = 0.05
#: Listeners a paced round writes before it lets the event loop run. A write costs a few
#: µs of the kernel's, so a round over 10,000 sockets outlasts ``send_interval``; in
#: slices, the source's bytes that arrive meanwhile reach the listeners after (their lag
#: is one round's length, not two), and new connections and other streams' rounds get in.
#: A task waits one slice each time it yields, and a relay's bytes cross five tasks (two on
#: the owner, three on the relaying worker): at 500 a relay's listeners lagged the owner's by
#: 33-70 ms at p99 on workers capped at 30% of a core, at 100 by 9 ms (median), for ~5 µs
#: of CPU a slice (docs/fanout.md, "Two workers").
_ROUND_SLICE = 100


#: Takes the stream's next bytes, and whether they reach its live edge.
Feed = Callable[[bytes, bool], None]
#: Feeds a broadcaster the stream in order until it ends (returns: finalized, or the source
#: is gone for good) or fails (:class:`StreamNotFoundError` and the like). The local one
#: follows the cache; a relay's tails the stream's owner (:mod:`._relay`). One broadcaster
#: and one set of listeners either way: the follow path is the same.
Source = Callable[[Feed], Awaitable[None]]


class Writer(Protocol):
    """Where the rounds write a listener's bytes, without awaiting."""

    def write(self, parts: Parts) -> int:
        """Write ``parts`` (in order, one system call) as far as the peer takes them now;
        the bytes taken. Raises :class:`BlockingIOError` when nothing can be written now,
        :class:`OSError` when the peer is gone."""
        ...

    @property
    def owes(self) -> bool:
        """The last write took a whole frame but left part of it for :meth:`flush`."""
        ...

    async def flush(self) -> None:
        """Send what a write left owed (the follower's task does, woken by the round)."""
        ...


@attrs.define(eq=False)
class FdWriter:
    """A plain socket's file descriptor: partial writes are fine (an HTTP body is a byte
    stream), and the rest waits in the window for the next round."""

    fd: int
    owes = False

    def write(self, parts: Parts) -> int:
        # One part (an ICY body, a plain body's slice) is a plain write: writev's
        # iovec set-up costs more than the call itself on a short body.
        return os.write(self.fd, parts[0]) if len(parts) == 1 else os.writev(self.fd, parts)

    async def flush(self) -> None:
        return None


class ListenerState(enum.Enum):
    """Where a live follower stands, as its task sees it."""

    LIVE = "live"
    #: The stream was finalized: send the rest, then end the response.
    ENDED = "ended"
    #: Dropped by the server (too slow with ``slow_listener = "disconnect"``, or the stream
    #: failed or was deleted): close without a clean end.
    DROPPED = "dropped"
    #: The client went away.
    GONE = "gone"
    #: A catch-up listener fell behind: out of the rounds, to be caught up from the cache.
    BEHIND = "behind"


@attrs.frozen
class ListenerClient:
    """Who a listener is, for Icecast's ``listclients`` and ``killclient``."""

    id: int
    address: str
    user_agent: str
    #: Wall-clock time it connected.
    since: float


@attrs.define(eq=False)
class Listener:
    """One live follower of a stream, written to in the broadcaster's rounds while it keeps
    up, and by its own task when it does not."""

    #: Where rounds write, or ``None``: its task sends (woken by ``wake``).
    writer: Writer | None
    #: The next stream offset this listener gets.
    position: int
    #: Output owed before the stream data at ``position`` (the stream header, the rest of
    #: an encoded piece a socket took only part of).
    pending: bytes = b""
    #: How its bytes are encoded (shared with every listener whose encoder is equal).
    encoder: Encoder = PLAIN
    #: It asked for an offset: when behind, caught up from the cache rather than skipped.
    catch_up: bool = False
    #: Sent each piece as it arrives (a WebSocket ``tail``), not in ``send_interval`` rounds.
    immediate: bool = False
    #: An immediate listener the round could not write to (its connection was sending
    #: something else, or its socket was full): its task sends what is new itself, with an
    #: awaited send, rather than wait for the next round.
    refused: bool = False
    state: ListenerState = ListenerState.LIVE
    #: While its task awaits the client leaving: cancelled when it must stop waiting.
    scope: trio.CancelScope | None = None
    #: While its task waits for the round's call.
    wake: trio.Event | None = None
    #: A parked listener (no task: :meth:`Broadcaster.park`): called once it leaves the rounds.
    parked: Callable[[], None] | None = None
    #: Bytes skipped because the listener fell behind.
    skipped: int = 0
    client: ListenerClient | None = None

    def body(self, data: bytes | bytearray | memoryview, title: str | None) -> bytes:
        """What this listener's task sends for ``data`` of the stream."""
        out, self.encoder = self.encoder.body(data, title)
        return out

    def notify(self) -> None:
        """The broadcaster has news for it (new bytes, or its state changed): its task
        wakes; a parked listener out of the rounds is finished."""
        if self.wake is not None:
            self.wake.set()
        if self.scope is not None:
            self.scope.cancel()
        if self.parked is not None and self.state is not ListenerState.LIVE:
            parked, self.parked = self.parked, None
            parked()


class Broadcaster:
    """The live edge of one stream and its followers."""

    def __init__(
        self,
        manager: StreamManager,
        stream_id: str,
        config: IcecastConfig,
        metrics: Metrics | None = None,
        *,
        generation: str | None = None,
        source: Source | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.stream_id = stream_id
        #: Where the bytes come from (None: this server's cache, through the manager).
        self.source = source
        #: The stream followed (None: whichever the id names); another stream created under
        #: the same id ends this broadcaster as a deletion does.
        self.generation = generation
        self.config = config
        self.window = bytearray()
        #: Stream offset of ``window[0]``.
        self.base = 0
        self.sync = StreamSync()
        self.sync_points: collections.deque[int] = collections.deque()
        #: HTTP and Icecast listeners, served in rounds (what Icecast's stats count), in the
        #: order they came. Keys of a dict, not a list: when thousands leave at once (the
        #: stream ends, a mass disconnect) each leaves in O(1), not with a scan of the rest.
        self.listeners: dict[Listener, None] = {}
        #: Immediate followers (WebSocket tails), served as each piece arrives.
        self.followers: dict[Listener, None] = {}
        #: Listeners that left the rounds so far: a paced round that sees it change across
        #: a checkpoint skips those of its snapshot that left meanwhile.
        self._left = 0
        self.ended = False
        self.caught_up = False
        #: Why the stream stopped being followed, when it did not end cleanly.
        self.failure: MmstreamError | None = None
        #: The current title, for listeners with in-band metadata (see :meth:`set_title`).
        self.title: str | None = None
        #: Most listeners at once, and bytes sent to them in rounds (Icecast's stats).
        self.listener_peak = 0
        self.bytes_sent = 0
        #: Pieces encoded for the rounds (shared by every listener with an equal encoder at
        #: the same position): what the tests count to see that sharing happens.
        self.encodes = 0
        #: Writes the rounds made on the hot path (a plain body straight to its socket's
        #: descriptor): what the tests count to see that it runs.
        self.direct_writes = 0
        with contextlib.suppress(StreamNotFoundError, CacheClosedError):
            self.title = manager.current_title(stream_id)
        self._keep = config.queue_size + config.burst_size
        self._restarts: collections.deque[int] = collections.deque()
        self._new_data = trio.Event()
        self._changed = trio.Event()
        #: Listeners a paced round writes between two checkpoints.
        self.round_slice = _ROUND_SLICE
        #: The last round left a listener's socket full with bytes still owed to it.
        self._owed = False
        #: Where the broadcaster's own tasks run while it follows the stream.
        self._nursery: trio.Nursery | None = None
        #: The parked listeners' sockets (:meth:`park`), made with the first of them.
        self._watch: _parking.SocketWatch[Listener] | None = None

    @property
    def edge(self) -> int:
        return self.base + len(self.window)

    @property
    def failed(self) -> str | None:
        """Why the stream stopped being followed (None: it has not, or ended cleanly)."""
        return None if self.failure is None else str(self.failure)

    @property
    def ready(self) -> bool:
        """Listeners can start: the header is known and there is a place to start at."""
        if self.ended:
            return True
        return self.caught_up and self.sync.header_done and bool(self.sync_points)

    def set_title(self, title: str) -> None:
        """From now on, metadata blocks carry ``title``: each listener's next block (at
        most ``metaint`` bytes away) announces it."""
        self.title = title

    def restart_at(self, offset: int) -> None:
        """A new source begins at ``offset``: its bytes bring a new header."""
        self._restarts.append(offset)

    # -- following the stream --------------------------------------------------------------

    async def run(self) -> None:
        """Follow the stream until it is finalized, fails or is deleted; then end every
        listener."""
        try:
            await self._follow()
        except* (StreamNotFoundError, StorageError, CacheClosedError) as group:
            first = group.exceptions[0]
            assert isinstance(first, MmstreamError)
            self.failure = first
        finally:
            self.ended = True
            self._round([*self.listeners])
            self._round([*self.followers])
            for listener in [*self.listeners, *self.followers]:
                if listener.state is ListenerState.LIVE:
                    listener.state = ListenerState.DROPPED if self.failed else ListenerState.ENDED
                listener.notify()
            self._notify()

    async def _follow(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_rounds)
            await (self.source or self._from_cache)(self._take_piece)
            nursery.cancel_scope.cancel()

    def _take_piece(self, data: bytes, caught_up: bool) -> None:
        """The next bytes of the stream, from whichever :data:`Source` feeds it."""
        # Listeners start at the live edge, not somewhere in a long stream this
        # broadcaster is still reading from the start.
        self.caught_up = caught_up
        self._append(data)
        self._new_data.set()
        if self.followers:
            self._round([*self.followers])

    async def _from_cache(self, feed: Feed) -> None:
        """The local source: the stream as it is appended to this server's cache."""
        position = 0
        while True:
            info = await self.manager.wait_for_data(
                self.stream_id, position, generation=self.generation
            )
            if info.size > position:
                data = await self.manager.read(
                    self.stream_id,
                    position,
                    min(_READ_SIZE, info.size - position),
                    generation=self.generation,
                )
                position += len(data)
                feed(data, position >= info.size)
            elif info.status is StreamStatus.READY:
                return
            else:
                raise StreamNotFoundError(f"stream {self.stream_id} failed: {info.error}")

    def _append(self, data: bytes) -> None:
        start = self.edge
        while self._restarts and self._restarts[0] <= start + len(data):
            at = self._restarts.popleft() - start
            if at < 0:
                continue
            self._feed(data[:at])
            self.sync.restart()
            self.sync_points.clear()
            data, start = data[at:], start + at
        self._feed(data)
        self.window += data
        if len(self.window) > self._keep + _TRIM_SLACK:  # trim now and then: a memmove
            cut = len(self.window) - self._keep
            del self.window[:cut]
            self.base += cut
            while self.sync_points and self.sync_points[0] < self.base:
                self.sync_points.popleft()
        self._notify()

    def _feed(self, data: bytes) -> None:
        if data:
            self.sync_points.extend(self.sync.feed(data))
            # A new header in-band (a chained Ogg stream: a new title, a source's new
            # track): a listener given it must start after it.
            begins = self.sync.header_at
            while self.sync_points and self.sync_points[0] < begins:
                self.sync_points.popleft()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_ready(self) -> None:
        while not self.ready:
            await self._changed.wait()

    # -- sending ---------------------------------------------------------------------------

    async def _send_rounds(self) -> None:
        interval = self.config.send_interval
        last = -math.inf
        while True:
            # A quiet source brings no next round: what full sockets refused is retried.
            retry = max(interval, _RETRY_INTERVAL) if self._owed else math.inf
            with trio.move_on_after(retry):
                await self._new_data.wait()
            self._new_data = trio.Event()
            await trio.sleep_until(last + interval)
            last = trio.current_time()
            self._owed = False
            await self._paced_round()

    async def _paced_round(self) -> None:
        """One round over the listeners as they are now, in slices of :attr:`round_slice`
        with a checkpoint between; then the followers. A listener that comes meanwhile
        waits for the next round; one that leaves is not written after it left."""
        everyone, size, members = [*self.listeners], self.round_slice, self.listeners
        left, meanwhile = self._left, False
        for start in range(0, len(everyone), size):
            taking = everyone[start : start + size]
            if start:
                await trio.lowlevel.checkpoint()
                # Some left during a checkpoint: from then on, each slice is checked (a
                # lookup a listener, in the rounds that see a listener leave).
                meanwhile = meanwhile or self._left != left
                if meanwhile:
                    taking = [listener for listener in taking if listener in members]
            self._round(taking)
            left = self._left  # the round's own leavers were in its slice
        self._round([*self.followers])

    def poke(self) -> None:
        """A follower's task sent what a round left it owing: the immediate followers get
        what waited meanwhile now, the others at the next round."""
        self._new_data.set()
        if self.followers:
            self._round([*self.followers])

    def _round(self, listeners: list[Listener]) -> None:
        """Give every one of ``listeners`` (members now) what is new, without awaiting
        anything; those gone or dropped leave the rounds.

        Most listeners are plain bodies on a plain socket at the live edge: for them the
        loop is the hot path, a position check, one ``os.write`` of the window's slice
        from their position (one slice per position, built once: nearly all are at the
        last round's edge) and a position update, with nothing allocated per listener.
        Every other listener (an encoder, a writer of its own, bytes owed first, fallen
        behind) goes through :meth:`_round_general`."""
        if not listeners:
            return
        edge, base = self.edge, self.base
        # Below ``low`` a listener is behind: past ``queue_size``, or out of the window.
        low = max(base, edge - self.config.queue_size)
        write, fd_writer, plain = os.write, FdWriter, PLAIN
        others: list[Listener] = []
        gone: list[Listener] = []
        sent = direct = 0
        owed = False
        with memoryview(self.window) as window:
            # What each encoding gives for the window from a position, built once a round
            # for every listener with that encoder there (both paths share it).
            encoded: dict[tuple[Encoder, int], _Encoded] = {}
            piece: bytes | memoryview = b""
            at = size = -1
            for listener in listeners:
                writer = listener.writer
                if (
                    listener.pending
                    or listener.encoder is not plain
                    or type(writer) is not fd_writer
                ):
                    others.append(listener)
                    continue
                position = listener.position
                if position >= edge:
                    continue
                if position < low:
                    others.append(listener)
                    continue
                if position != at:
                    at, size = position, edge - position
                    piece = self._encode(plain, position, window, encoded)[0][0]
                try:
                    taken = write(writer.fd, piece)
                except BlockingIOError:
                    owed = True
                    self._refused(listener)
                    continue
                except OSError:
                    listener.state = ListenerState.GONE
                    gone.append(listener)
                    continue
                listener.position = position + taken
                sent += taken
                direct += 1
                if taken < size:
                    owed = True
            del piece
            counted = {plain.label: sent}
            if others:
                owed = self._round_general(others, window, encoded, counted, gone) or owed
            encoded.clear()
        self.direct_writes += direct
        self._owed = self._owed or owed
        self.bytes_sent += sum(counted.values())
        for label, total in counted.items():
            self._count(total, label)
        for listener in gone:
            self.remove(listener)
            listener.notify()

    def _round_general(
        self,
        listeners: list[Listener],
        window: memoryview,
        encoded: dict[tuple[Encoder, int], _Encoded],
        counted: dict[str, int],
        gone: list[Listener],
    ) -> bool:
        """The round for listeners off the hot path: the overflow rule, task-driven
        listeners woken, the rest written through :meth:`_write`. Adds the stream bytes
        sent to ``counted`` by label and the listeners to drop to ``gone``; whether a
        socket was left owing."""
        edge, base, queue = self.edge, self.base, self.config.queue_size
        owed = False
        for listener in listeners:
            position = listener.position
            if position >= edge and not listener.pending:
                continue
            behind = edge - position > queue or position < base
            if behind and not self._overflow(listener):
                gone.append(listener)
                continue
            writer = listener.writer
            if writer is None:
                listener.notify()
                continue
            label = listener.encoder.label
            taken = self._write(listener, writer, window, encoded, edge)
            if taken is None:
                gone.append(listener)
                continue
            owed = owed or listener.position < edge or bool(listener.pending)
            counted[label] = counted.get(label, 0) + taken
            if writer.owes:
                listener.notify()  # its task sends the rest of the frame
        return owed

    def _write(
        self,
        listener: Listener,
        writer: Writer,
        window: memoryview,
        encoded: dict[tuple[Encoder, int], _Encoded],
        edge: int,
    ) -> int | None:
        """Write ``listener`` what it lacks up to ``edge``; the stream bytes that took it
        past (None: it is gone). Nothing is committed unless the socket took something."""
        encoder, pending, start = listener.encoder, listener.pending, listener.position
        if pending and not encoder.transparent:
            # The rest of an encoded piece goes out before anything new is encoded for it.
            parts: Parts = (pending,)
            after, stop, size = encoder, start, len(pending)
        else:
            parts, after, size = self._encode(encoder, start, window, encoded)
            if pending:
                parts, size = (pending, *parts), size + len(pending)
            stop = edge
        try:
            written = writer.write(parts)
        except BlockingIOError:
            self._owed = True  # offered again at the next round
            self._refused(listener)
            return 0
        except OSError:
            listener.state = ListenerState.GONE
            return None
        if encoder.transparent:  # what the socket did not take is still in the window
            listener.pending = pending[written:]
            listener.position += max(0, written - len(pending))
        else:
            listener.pending = b"" if written == size else _rest(parts, written)
            listener.position, listener.encoder = stop, after
        return listener.position - start

    def _encode(
        self,
        encoder: Encoder,
        position: int,
        window: memoryview,
        encoded: dict[tuple[Encoder, int], _Encoded],
    ) -> _Encoded:
        """What ``encoder`` gives for the window from ``position``: made once a round for
        every listener with that encoder there (:attr:`encodes` counts the makings)."""
        key = (encoder, position - self.base)
        found = encoded.get(key)
        if found is None:
            made, after = encoder.encode(window[position - self.base :], self.title)
            found = encoded[key] = (made, after, sum(map(len, made)))
            self.encodes += 1
        return found

    @staticmethod
    def _refused(listener: Listener) -> None:
        if listener.immediate:
            listener.refused = True
            listener.notify()

    def _overflow(self, listener: Listener) -> bool:
        """``listener`` fell behind: skip it ahead (True) or take it out of the rounds
        (False): to be caught up from the cache, or dropped."""
        if listener.catch_up:
            listener.state = ListenerState.BEHIND
            return False
        if self.config.slow_listener == "skip" and self.sync_points:
            newest = self.sync_points[-1]
            listener.skipped += newest - listener.position
            listener.position = newest
            log.info(
                "stream %s: slow listener skipped %d bytes to the live edge",
                self.stream_id,
                listener.skipped,
            )
            return True
        listener.state = ListenerState.DROPPED
        log.info("stream %s: slow listener disconnected", self.stream_id)
        return False

    # -- listeners -------------------------------------------------------------------------

    def start_point(self) -> tuple[bytes, int]:
        """Where a new listener starts: the header, then the newest sync point at least
        ``burst_size`` before the live edge (else the oldest one kept)."""
        header = self.sync.header or b""
        if not self.sync_points:
            return header, self.edge
        target = self.edge - self.config.burst_size
        for point in reversed(self.sync_points):
            if point <= target:
                return header, point
        return header, self.sync_points[0]

    async def live_listener(
        self, writer: Writer | None, encoder: Encoder = PLAIN, client: ListenerClient | None = None
    ) -> Listener:
        """A late joiner: the stream's header, then a burst from a sync point (waits until
        the broadcaster knows them)."""
        await self.wait_ready()
        header, position = self.start_point()
        listener = Listener(writer, position, encoder=encoder, client=client)
        listener.pending = listener.body(header, self.title)
        return listener

    async def join(self, listener: Listener) -> AsyncIterator[bytes]:
        """Put ``listener`` in the rounds. A catch-up listener first gets, as the pieces
        yielded here, the bytes from its position read from the cache, until it is in the
        window and at most half a queue behind the live edge (the other half is its slack
        before it falls behind again). Raises :class:`StreamNotFoundError` or
        :class:`StreamChangedError` if the stream is deleted or replaced meanwhile."""
        near = self.config.queue_size // 2
        if listener.catch_up and listener.pending:
            # Output made before it fell behind: owed before the cache's bytes.
            piece, listener.pending = listener.pending, b""
            yield piece
        while listener.catch_up and (
            listener.position < self.base or self.edge - listener.position > near
        ):
            yield await self._read_for(listener)
        listener.state = ListenerState.LIVE
        self.add(listener)

    async def _read_for(self, listener: Listener) -> bytes:
        """The next piece of ``listener``'s stream from the cache, as a ranged GET sends it
        (a piece at a time: what one listener holds; read once for every follower catching
        up from the same place)."""
        piece = await self.manager.read_shared(
            self.stream_id, listener.position, PIECE_SIZE, generation=self.generation
        )
        if not piece:  # shorter than the window: only if the stream changed under us
            raise StreamNotFoundError(f"stream {self.stream_id} ended at {listener.position}")
        listener.position += len(piece)
        self._count(len(piece), listener.encoder.label)
        return listener.body(piece, self.title)

    def add(self, listener: Listener) -> None:
        """Start sending to ``listener`` (its ``position`` must not be before ``base``)."""
        if self.ended:
            listener.state = ListenerState.DROPPED if self.failed else ListenerState.ENDED
            listener.notify()
            return
        if listener.immediate:
            self.followers[listener] = None
            self._round([*self.followers])  # what it lacks already, without waiting for more
            return
        self.listeners[listener] = None
        self.listener_peak = max(self.listener_peak, len(self.listeners))
        self._new_data.set()

    def drop(self, client_id: int) -> bool:
        """Disconnect the listener with this :class:`ListenerClient` id (Icecast's
        ``killclient``); whether it was here."""
        for listener in self.listeners:
            if listener.client is not None and listener.client.id == client_id:
                self.cut(listener)
                return True
        return False

    def cut(self, listener: Listener) -> None:
        """Disconnect ``listener`` now, without the end of the stream (``killclient``, or
        the server shutting down)."""
        if listener.state is ListenerState.LIVE:
            listener.state = ListenerState.DROPPED
        self.remove(listener)
        listener.notify()

    # -- parked listeners: no task of their own ---------------------------------------------

    def can_park(self, listener: Listener) -> bool:
        """Whether ``listener`` (a new live-edge listener on a plain socket) can be served
        without a task: the rounds write to it, and :class:`~._parking.SocketWatch` notices
        its client leaving."""
        return (
            isinstance(listener.writer, FdWriter)
            and not (listener.catch_up or listener.immediate)
            and self._nursery is not None
            and not self.ended
            and _parking.supported()
        )

    def park(self, listener: Listener, finish: Callable[[], None]) -> None:
        """Put ``listener`` (:meth:`can_park`) in the rounds with no task waiting for it:
        ``finish`` is called once it leaves them (its client gone, dropped, or the stream
        ended: :meth:`ending` says which), and then owns the connection's end."""
        assert isinstance(listener.writer, FdWriter) and self._nursery is not None
        if self._watch is None or self._watch.closed:
            self._watch = _parking.SocketWatch(self._gone)
            self._nursery.start_soon(self._watch.run)
        listener.parked = finish
        self._watch.add(listener.writer.fd, listener)
        self.add(listener)

    def _gone(self, listener: Listener) -> None:
        listener.state = ListenerState.GONE
        self.remove(listener)
        listener.notify()

    def _unwatch(self, listener: Listener) -> None:
        """A parked listener leaves the rounds: its socket is no longer watched (it is
        about to be closed, and its number reused)."""
        if listener.parked is not None and self._watch is not None:
            assert isinstance(listener.writer, FdWriter)
            self._watch.discard(listener.writer.fd)

    def ending(self, listener: Listener) -> ListenerState | None:
        """How a listener out of the rounds ends: GONE (its client left), ENDED (send it the
        rest of the stream), or None while it is live. Raises the stream's failure if it
        failed, or :class:`StreamNotFoundError` if the listener was dropped."""
        if listener.state is ListenerState.GONE:
            return ListenerState.GONE
        if listener.state is ListenerState.ENDED or (self.ended and not self.failed):
            return ListenerState.ENDED
        if listener.state is not ListenerState.LIVE or self.failed:
            raise self.failure or StreamNotFoundError(f"stream {self.stream_id}: listener dropped")
        return None

    def remove(self, listener: Listener) -> None:
        """Take ``listener`` out of the rounds (if it is in them): O(1), so that N listeners
        leaving at once cost O(N), not O(N²) with the event loop blocked."""
        if listener in self.listeners:
            del self.listeners[listener]
            self._left += 1  # only a member leaving makes a paced round check its snapshot
        self.followers.pop(listener, None)
        self._unwatch(listener)

    def rest(self, listener: Listener) -> bytes:
        """What an ENDED listener still lacks (the window holds the stream's end), counted
        as sent."""
        at = max(0, listener.position - self.base)
        data = bytes(self.window[at:])
        self._count(len(data), listener.encoder.label)
        pending, listener.pending = listener.pending, b""
        listener.position = self.edge
        return pending + listener.body(data, self.title)

    def _count(self, sent: int, label: str) -> None:
        """Stream bytes handed to followers (not their heads or headers)."""
        if self.metrics is not None and sent:
            self.metrics.bytes_out.labels(label).inc(sent)

    def take(self, listener: Listener) -> bytes:
        """For task-driven listeners: everything new, after the round's overflow rule."""
        at = max(0, listener.position - self.base)
        data = listener.pending + listener.body(self.window[at:], self.title)
        listener.pending = b""
        self._count(self.edge - listener.position, listener.encoder.label)
        listener.position = self.edge
        return data

    async def serve(
        self, listener: Listener, watch: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncGenerator[bytes]:
        """Serve ``listener`` until the stream ends: yields what its task must send itself
        (bytes caught up from the cache, what a task-driven listener is owed, the end of
        the stream); the rounds write the rest. ``watch`` returns when the client goes
        away (the task awaits it, in the listener's cancel scope, while the rounds write);
        without it the task waits for the rounds' call. Returns at the end of the stream or
        when the client is gone; raises :class:`StreamNotFoundError` (or the failure) if
        the stream fails, is deleted or replaced, or the listener is dropped."""
        try:
            async for piece in self.join(listener):
                yield piece
            while True:
                # Behind in the rounds, or the window moved on before this task took its
                # bytes: a catch-up follower reads the gap from the cache.
                if listener.state is ListenerState.BEHIND or (
                    listener.catch_up and listener.position < self.base and not self.ended
                ):
                    self.remove(listener)
                    async for piece in self.join(listener):
                        yield piece
                    continue
                writer = listener.writer
                if writer is not None and writer.owes:
                    await writer.flush()
                    self.poke()
                    continue
                if (writer is None or listener.refused) and (
                    listener.position < self.edge or listener.pending
                ):
                    listener.refused = False
                    yield self.take(listener)
                    continue
                ending = self.ending(listener)
                if ending is ListenerState.GONE:
                    return
                if ending is ListenerState.ENDED:
                    while listener.catch_up and listener.position < self.base:
                        yield await self._read_for(listener)
                    yield self.rest(listener)
                    return
                listener.refused = False  # what was refused, a later round wrote
                # Made just before the wait (no checkpoint since the checks above), so no
                # call is missed; none while the task is busy elsewhere.
                if watch is None:
                    listener.wake = trio.Event()
                    await listener.wake.wait()
                    listener.wake = None
                    continue
                with trio.CancelScope() as listener.scope:
                    await watch()
                    listener.state = ListenerState.GONE
                listener.scope = None
        finally:
            self.remove(listener)

    async def follow(
        self,
        start: int | None = None,
        encoder: Encoder = PLAIN,
        client: ListenerClient | None = None,
    ) -> AsyncIterator[bytes]:
        """A task-driven listener: the header and a burst first (``start`` None) or every
        byte from ``start`` (caught up from the cache when behind), then each round's new
        bytes, until finalize. Raises :class:`StreamNotFoundError` if the stream fails or
        is deleted."""
        if start is None:
            listener = await self.live_listener(None, encoder, client)
        else:
            listener = Listener(None, start, encoder=encoder, catch_up=True, client=client)
        async with contextlib.aclosing(self.serve(listener)) as pieces:
            async for piece in pieces:
                yield piece


def _rest(parts: Parts, written: int) -> bytes:
    """What is left of ``parts`` after the first ``written`` bytes (a copy: the window the
    parts may point into is resized between rounds)."""
    rest = bytearray()
    for part in parts:
        if written >= len(part):
            written -= len(part)
            continue
        rest += part[written:]
        written = 0
    return bytes(rest)


#: A piece as an encoder made it for the window from a position: the parts to write, the
#: encoder that follows, and their total size.
_Encoded = tuple[Parts, Encoder, int]
#: A stream id and the generation of the stream it names.
_Key = tuple[str, str]


class FanoutHub:
    """The broadcasters of a server, made on demand, each running until its stream ends."""

    def __init__(
        self,
        manager: StreamManager,
        config: IcecastConfig,
        nursery: trio.Nursery,
        metrics: Metrics | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.config = config
        self._nursery = nursery
        #: Keyed by stream id and generation: a stream deleted and created again under the
        #: same id gets its own, never the old one's (which ends as its stream was deleted).
        self._broadcasters: dict[_Key, Broadcaster] = {}

    def get(self, stream_id: str, generation: str | None = None) -> Broadcaster:
        """The broadcaster of the stream (of that ``generation``; None: the one the id
        names now), started if need be. The caller has checked that the stream exists and
        is UPLOADING."""
        key = self._key(stream_id, generation)
        return self._running(
            self._broadcasters,
            key,
            lambda: Broadcaster(
                self.manager, stream_id, self.config, self.metrics, generation=key[1]
            ),
        )

    def relay(self, stream_id: str, generation: str, source: Source) -> Broadcaster:
        """The broadcaster of a stream held by another server, fed by ``source`` (started
        if none runs for that stream's ``generation``)."""
        key = (stream_id, generation)
        return self._running(
            self._broadcasters,
            key,
            lambda: Broadcaster(
                self.manager,
                stream_id,
                self.config,
                self.metrics,
                generation=generation,
                source=source,
            ),
        )

    def running(self, stream_id: str) -> Broadcaster | None:
        """The broadcaster of the stream the id names now, if one runs (nothing started)."""
        broadcaster = self._broadcasters.get((stream_id, self.manager.stat(stream_id).generation))
        return broadcaster if broadcaster is not None and not broadcaster.ended else None

    async def set_title(self, stream_id: str, title: str) -> Title:
        """Record ``title`` as the live stream's current one (:meth:`.StreamManager.set_title`)
        and tell its listeners: the one way every route (``/admin/metadata``, the WebSocket
        ``metadata`` op, a title heard in a source's Ogg stream) sets a title. A broadcaster
        started later reads the manager."""
        entry = await self.manager.set_title(stream_id, title)
        broadcaster = self.running(stream_id)
        if broadcaster is not None:
            broadcaster.set_title(entry.title)
        return entry

    def follow(self, stream_id: str, generation: str, start: int) -> AsyncGenerator[bytes]:
        """Every byte of the stream from ``start``, as it grows, for a follower whose task
        sends them itself (a chunked HTTP body): a :data:`~mmstream.web.playback.Follow`."""
        listener = Listener(None, start, catch_up=True, immediate=True)
        return self.get(stream_id, generation).serve(listener)

    def _key(self, stream_id: str, generation: str | None) -> _Key:
        if generation is None:
            generation = self.manager.stat(stream_id).generation
        return stream_id, generation

    def _running(
        self, running: dict[_Key, Broadcaster], key: _Key, make: Callable[[], Broadcaster]
    ) -> Broadcaster:
        """The stream's broadcaster in ``running``, or a new one from ``make``, started in
        the hub's nursery and forgotten when it ends."""
        task = running.get(key)
        if task is None or task.ended:
            task = make()
            try:
                self._nursery.start_soon(self._run, running, key, task)
            except RuntimeError:  # the hub's nursery is closed: the server is stopping
                raise CacheClosedError("the server is shutting down") from None
            running[key] = task
        return task

    @staticmethod
    async def _run(running: dict[_Key, Broadcaster], key: _Key, task: Broadcaster) -> None:
        try:
            await task.run()
        finally:
            if running.get(key) is task:
                del running[key]

    def statistics(self) -> dict[str, int]:
        return {
            "streams": len(self._broadcasters),
            "listeners": sum(len(b.listeners) for b in self._broadcasters.values()),
            "followers": sum(len(b.followers) for b in self._broadcasters.values()),
        }


async def serve_fanout_hub(
    manager: StreamManager,
    config: IcecastConfig,
    metrics: Metrics | None = None,
    *,
    task_status: trio.TaskStatus[FanoutHub] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a hub until cancelled (``await nursery.start(...)`` gives it back)."""
    async with trio.open_nursery() as nursery:
        task_status.started(FanoutHub(manager, config, nursery, metrics))
        await trio.sleep_forever()
