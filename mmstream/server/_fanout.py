"""One uploader, thousands of live listeners: a broadcaster per stream.

A :class:`Broadcaster` follows one UPLOADING stream through the manager (so it serves
whatever writes to the stream: an Icecast ``PUT`` or a WebSocket upload), keeps a window of
its most recent bytes in memory, and feeds them to :class:`~mmstream.audio_sync.StreamSync`
so it knows the stream's header and where a decoder can start.

Sending is where the cost is. One Trio task per listener, woken per 20 ms chunk, is ~250,000
task switches and sends a second at 5,000 listeners: far more than one core does. So the
broadcaster sends itself, in *rounds*: at most every ``send_interval`` seconds, it walks its
listeners once and gives each everything new in one non-blocking ``write`` on the socket
(listeners at the same position share one slice of the window, no copies). A write that
would block writes what fits, and the rest waits for the next round (brought by new data or,
for a quiet source, by a retry timer while a socket was left full); nobody awaits a slow
socket, so a slow listener never delays the uploader or the other listeners. A live-edge
listener more than ``queue_size`` behind the live edge jumps to the newest sync point
(``skip``) or is disconnected (``disconnect``), like Icecast's queue-size. A listener that
asked for an offset asked for every byte from it: when it falls behind it leaves the rounds,
and :meth:`Broadcaster.join` reads what it lacks from the cache at its own pace until it is
close enough to the live edge to rejoin them.

Each listener's own task only watches its socket for the client going away (an idle
``receive``), and, when the stream is finalized, sends what its listener still lacks with
ordinary awaited sends and returns, which ends the response. Listeners without a socket to
write to (a TLS stream, a WebSocket) are served by their task instead: the round just wakes
them (see :meth:`Broadcaster.follow`).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import attrs
import trio

from ..audio_sync import StreamSync
from ..config import IcecastConfig
from ..errors import CacheClosedError, StorageError, StreamNotFoundError
from ..icecast import IcyInterleaver
from ..metrics import Metrics
from ..streams import StreamManager, StreamStatus
from ..web.playback import PIECE_SIZE
from ._tail import TailGroup

__all__ = [
    "Broadcaster",
    "FanoutHub",
    "Feed",
    "Listener",
    "ListenerClient",
    "ListenerState",
    "Source",
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


#: Takes the stream's next bytes, and whether they reach its live edge.
Feed = Callable[[bytes, bool], None]
#: Feeds a broadcaster the stream in order until it ends (returns: finalized, or the source
#: is gone for good) or fails (:class:`StreamNotFoundError` and the like). The local one
#: follows the cache; a relay's tails the stream's owner (:mod:`._relay`). One broadcaster
#: and one set of listeners either way: the follow path is the same.
Source = Callable[[Feed], Awaitable[None]]


class ListenerState(enum.Enum):
    """Where a live HTTP or Icecast listener stands, as its sending task sees it."""

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
    """One live listener of a stream, written to in the broadcaster's rounds while it keeps
    up, and by its own task when it does not."""

    #: The socket to write to in rounds, or ``None``: its task sends (woken by ``wake``).
    fd: int | None
    #: The next stream offset this listener gets.
    position: int
    #: Bytes owed before the stream data at ``position`` (response head, stream header).
    pending: bytes = b""
    #: It asked for an offset: when behind, caught up from the cache rather than skipped.
    catch_up: bool = False
    state: ListenerState = ListenerState.LIVE
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    wake: trio.Event = attrs.Factory(trio.Event)
    #: Bytes skipped because the listener fell behind.
    skipped: int = 0
    sent: int = 0
    #: For a listener that asked for in-band titles (``Icy-MetaData: 1``): its body is the
    #: stream with a metadata block every ``metaint`` bytes, made as bytes are taken, so
    #: ``pending`` then holds body bytes already past ``position``.
    icy: IcyInterleaver | None = None
    client: ListenerClient | None = None

    def body(self, data: bytes | bytearray | memoryview, title: str | None) -> bytes:
        """What this listener is sent for ``data`` of the stream."""
        return bytes(data) if self.icy is None else self.icy.feed(data, title)


class Broadcaster:
    """The live edge of one stream and its listeners."""

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
        self.listeners: list[Listener] = []
        self.ended = False
        self.caught_up = False
        self.failed: str | None = None
        #: The current title, for listeners with in-band metadata (see :meth:`set_title`).
        self.title: str | None = None
        #: Most listeners at once, and bytes sent to them in rounds (Icecast's stats).
        self.listener_peak = 0
        self.bytes_sent = 0
        with contextlib.suppress(StreamNotFoundError, CacheClosedError):
            titles = manager.stat(stream_id).titles
            self.title = titles[-1].title if titles else None
        self._keep = config.queue_size + config.burst_size
        self._restarts: collections.deque[int] = collections.deque()
        self._new_data = trio.Event()
        self._changed = trio.Event()
        self.rounds = 0
        #: The last round left a listener's socket full with bytes still owed to it.
        self._owed = False

    @property
    def edge(self) -> int:
        return self.base + len(self.window)

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
            self.failed = "; ".join(str(exc) for exc in group.exceptions)
        finally:
            self.ended = True
            self._round()
            for listener in self.listeners:
                if listener.state is ListenerState.LIVE:
                    listener.state = ListenerState.DROPPED if self.failed else ListenerState.ENDED
                listener.scope.cancel()
                listener.wake.set()
            self._notify()

    async def _follow(self) -> None:
        async with trio.open_nursery() as nursery:
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
            self._round()

    def _round(self) -> None:
        """Give every listener what is new, without awaiting anything."""
        self.rounds += 1
        edge, base, queue = self.edge, self.base, self.config.queue_size
        gone: list[Listener] = []
        total = 0
        self._owed = False
        with memoryview(self.window) as window:
            slices: dict[int, memoryview] = {}
            for listener in self.listeners:
                if listener.position >= edge and not listener.pending:
                    continue
                behind = edge - listener.position > queue or listener.position < base
                if behind and not self._overflow(listener):
                    gone.append(listener)
                    continue
                if listener.fd is None:
                    listener.wake.set()
                    continue
                if listener.icy is not None and not listener.pending:
                    # Interleaved bodies are the listener's own: made once a round, when
                    # the last one is out, so a slow listener still stalls its position.
                    at = listener.position - base
                    listener.pending = listener.icy.feed(window[at:], self.title)
                    listener.position = edge
                at = listener.position - base
                piece: bytes | memoryview | None = slices.get(at)
                if piece is None:
                    piece = slices[at] = window[at:]
                if listener.pending:
                    piece = listener.pending + piece
                try:
                    written = os.write(listener.fd, piece)
                except BlockingIOError:
                    self._owed = True
                    continue
                except OSError:
                    listener.state = ListenerState.GONE
                    gone.append(listener)
                    continue
                if listener.icy is not None:  # its position is already past its body
                    listener.pending = listener.pending[written:]
                elif listener.pending:
                    owed = len(listener.pending)
                    listener.pending = listener.pending[written:]
                    written = max(0, written - owed)
                if listener.icy is None:
                    listener.position += written
                listener.sent += written
                total += written
                self._owed = self._owed or listener.position < edge or bool(listener.pending)
            del slices
        self.bytes_sent += total
        self._count(total)
        for listener in gone:
            self.listeners.remove(listener)
            listener.scope.cancel()
            listener.wake.set()

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

    async def join(self, listener: Listener) -> AsyncIterator[bytes]:
        """Put ``listener`` in the rounds. A catch-up listener first gets, as the pieces
        yielded here, the bytes from its position read from the cache, until it is in the
        window and at most half a queue behind the live edge (the other half is its slack
        before it falls behind again). Raises :class:`StreamNotFoundError` or
        :class:`StreamChangedError` if the stream is deleted or replaced meanwhile."""
        near = self.config.queue_size // 2
        if listener.catch_up and listener.pending:
            # An interleaved body made before it fell behind: owed before the cache's bytes.
            piece, listener.pending = listener.pending, b""
            yield piece
        while listener.catch_up and (
            listener.position < self.base or self.edge - listener.position > near
        ):
            # A piece at a time, as a ranged GET sends it: what one listener holds.
            piece = await self.manager.read(
                self.stream_id, listener.position, PIECE_SIZE, generation=self.generation
            )
            if not piece:  # shorter than the window: only if the stream changed under us
                raise StreamNotFoundError(f"stream {self.stream_id} ended at {listener.position}")
            listener.position += len(piece)
            listener.sent += len(piece)
            self._count(len(piece))
            yield listener.body(piece, self.title)
        listener.state = ListenerState.LIVE
        listener.scope = trio.CancelScope()
        listener.wake = trio.Event()
        self.add(listener)

    def add(self, listener: Listener) -> None:
        """Start sending to ``listener`` (its ``position`` must not be before ``base``)."""
        if self.ended:
            listener.state = ListenerState.DROPPED if self.failed else ListenerState.ENDED
            listener.scope.cancel()
            listener.wake.set()
            return
        self.listeners.append(listener)
        self.listener_peak = max(self.listener_peak, len(self.listeners))
        self._new_data.set()

    def drop(self, client_id: int) -> bool:
        """Disconnect the listener with this :class:`ListenerClient` id (Icecast's
        ``killclient``); whether it was here."""
        for listener in self.listeners:
            if listener.client is not None and listener.client.id == client_id:
                self.listeners.remove(listener)
                listener.state = ListenerState.DROPPED
                listener.scope.cancel()
                listener.wake.set()
                return True
        return False

    def remove(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def rest(self, listener: Listener) -> bytes:
        """What an ENDED listener still lacks (the window holds the stream's end), counted
        as sent."""
        at = max(0, listener.position - self.base)
        data = bytes(self.window[at:])
        self._count(len(data))
        return listener.pending + listener.body(data, self.title)

    def _count(self, sent: int) -> None:
        """Stream bytes handed to listeners (all of them HTTP; not their heads or headers)."""
        if self.metrics is not None and sent:
            self.metrics.bytes_out.labels("http").inc(sent)

    def take(self, listener: Listener) -> bytes:
        """For task-driven listeners: everything new, after the round's overflow rule."""
        at = max(0, listener.position - self.base)
        data = listener.pending + listener.body(self.window[at:], self.title)
        listener.pending = b""
        listener.sent += self.edge - listener.position
        self._count(self.edge - listener.position)
        listener.position = self.edge
        return data

    async def follow(
        self,
        start: int | None = None,
        icy: IcyInterleaver | None = None,
        client: ListenerClient | None = None,
    ) -> AsyncIterator[bytes]:
        """A task-driven listener: the header first (``start`` None) or every byte from
        ``start`` (caught up from the cache when behind), then each round's new bytes, until
        finalize; with ``icy``, interleaved with titles. Raises :class:`StreamNotFoundError`
        if the stream fails or is deleted."""
        if start is None:
            await self.wait_ready()
            header, position = self.start_point()
            listener = Listener(None, position, icy=icy, client=client)
            listener.pending = listener.body(header, self.title)
        else:
            listener = Listener(None, start, catch_up=True, icy=icy, client=client)
        try:
            async for piece in self.join(listener):
                yield piece
            while True:
                # Behind in the rounds, or the window moved on before this task took its
                # bytes: a catch-up follower reads the gap from the cache.
                if listener.state is ListenerState.BEHIND or (
                    listener.catch_up and listener.position < self.base
                ):
                    self.remove(listener)
                    async for piece in self.join(listener):
                        yield piece
                    continue
                if listener.position < self.edge or listener.pending:
                    yield self.take(listener)
                    continue
                if listener.state is ListenerState.ENDED or (self.ended and not self.failed):
                    return
                if listener.state is not ListenerState.LIVE or self.failed:
                    raise StreamNotFoundError(f"stream {self.stream_id} ended: {self.failed}")
                await listener.wake.wait()
                listener.wake = trio.Event()
        finally:
            self.remove(listener)


class _PerStream(Protocol):
    """What the hub runs per stream: a broadcaster, a tail group."""

    @property
    def ended(self) -> bool: ...

    async def run(self) -> None: ...


_Task = TypeVar("_Task", bound=_PerStream)
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
        self._tail_groups: dict[_Key, TailGroup] = {}

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

    def set_title(self, stream_id: str, title: str) -> None:
        """Tell the stream's listeners (a broadcaster started later reads the manager)."""
        broadcaster = self.running(stream_id)
        if broadcaster is not None:
            broadcaster.set_title(title)

    def tail_group(
        self, stream_id: str, position: int, *, piece: int, generation: str | None = None
    ) -> TailGroup:
        """The stream's group of caught-up WebSocket followers, started at ``position`` if
        none runs (see :mod:`._tail`)."""
        key = self._key(stream_id, generation)
        return self._running(
            self._tail_groups,
            key,
            lambda: TailGroup(
                self.manager,
                stream_id,
                position,
                piece=piece,
                metrics=self.metrics,
                generation=key[1],
            ),
        )

    def _key(self, stream_id: str, generation: str | None) -> _Key:
        if generation is None:
            generation = self.manager.stat(stream_id).generation
        return stream_id, generation

    def _running(self, running: dict[_Key, _Task], key: _Key, make: Callable[[], _Task]) -> _Task:
        """The stream's task object in ``running``, or a new one from ``make``, started in
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
    async def _run(running: dict[_Key, _Task], key: _Key, task: _Task) -> None:
        try:
            await task.run()
        finally:
            if running.get(key) is task:
                del running[key]

    def statistics(self) -> dict[str, int]:
        return {
            "streams": len(self._broadcasters),
            "listeners": sum(len(b.listeners) for b in self._broadcasters.values()),
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
