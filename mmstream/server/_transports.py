"""One thin interface over the two WebSocket libraries mmstream can run on.

The rest of the server sees only :class:`Connection` (receive a message, send text or bytes,
close with a code) and :class:`Transport` (do the opening handshake on a stream and run a
handler). Which library is used is a config choice (``server.transport``); both pass the same
tests. Both are driven over a stream the front door hands over, which replays the request
head it already read, so neither library ever listens on a socket itself. Both go through
their public API only: ``websockets``' Sans-I/O :class:`~websockets.server.ServerProtocol`
driven by our own read loop, and trio-websocket's ``get_message``/``send_message``.

Whole messages wait for the session in a queue per connection: the session takes every
queued one without a checkpoint each (``receive_nowait``), so a burst of upload frames is
applied as one batch, and the socket is not read while the session is behind.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

import attrs
import trio
import trio_websocket
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from .. import __version__
from .._locks import acquire
from ..config import ServerConfig
from ._budget import payload_size
from ._replay import Delivery, ReplayStream

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TRY_AGAIN_LATER",
    "Connection",
    "ConnectionClosed",
    "Handler",
    "Transport",
    "TransportOptions",
    "TrioWebsocketTransport",
    "WebsocketsTransport",
    "make_transport",
]

log = logging.getLogger("mmstream.server")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
#: RFC 6455's registry: "the server is overloaded"; the client may reconnect later.
CLOSE_TRY_AGAIN_LATER = 1013

#: How long a closing handshake may take before the socket is simply closed.
CLOSE_TIMEOUT = 5.0
#: A fragmented message of more parts is refused (1009), as ``websockets``' own ``recv()``
#: does: each part costs a list entry however small it is.
MAX_FRAGMENTS = 4096


class _Interrupted:
    """What ``interrupt_receive`` queues behind the messages already waiting."""


_INTERRUPTED = _Interrupted()


class ConnectionClosed(Exception):
    """The WebSocket is closed (by either side, or the network broke); ``code`` as received
    or sent, ``None`` when the TCP connection ended without a close frame."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class Connection(Protocol):
    """One open WebSocket, whatever library runs it."""

    @property
    def id(self) -> str: ...
    @property
    def remote(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def subprotocol(self) -> str | None: ...

    async def receive(self) -> str | bytes | None:
        """The next whole message; None once :meth:`interrupt_receive` was called; raises
        :class:`ConnectionClosed` at the end."""
        ...

    def interrupt_receive(self) -> None:
        """Make a waiting :meth:`receive` return None (or the next one, if none waits): how
        the session stops waiting for a client without a cancel scope around every
        receive (one per message, with real-time streams one per frame). Messages queued
        before this call are still returned first."""
        ...

    def receive_nowait(self) -> str | bytes | None:
        """The next whole message if one is already queued, else None (also at the end:
        :meth:`receive` then says how it ended). The session takes queued upload frames as
        one batch this way, without a checkpoint per message; None rather than an
        exception, because an empty queue is the common case (a slow stream's every
        frame)."""
        ...

    def on_input_idle(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback``, without awaiting, each time the connection goes back to the
        socket with nothing more to read there: the moment :attr:`input_idle` becomes true
        (on ``websockets``, from within the session's own :meth:`receive`)."""
        ...

    @property
    def input_idle(self) -> bool:
        """Whether everything that arrived was handed on: no upload frame is on its way
        through the transport."""
        ...

    async def send_text(self, text: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send ``messages`` in order, nothing between them, written out together where
        the library allows (a ``read`` reply and its first data frame: one system call)."""
        ...

    def send_nowait(self, *messages: str | bytes) -> Delivery:
        """Frame ``messages`` and write them straight to the socket in one system call, if
        nothing else is being sent and the connection is open; see :class:`Delivery`
        (:attr:`~Delivery.STARTED`: the rest is owed, :meth:`flush` sends it)."""
        ...

    async def flush(self) -> None:
        """Send what :meth:`send_nowait` left owed (:attr:`Delivery.STARTED`); raises
        :class:`ConnectionClosed` if the socket broke meanwhile."""
        ...

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start (and wait a bounded time for) the closing handshake; idempotent."""
        ...


Handler = Callable[[Connection], Awaitable[None]]


@attrs.frozen
class TransportOptions:
    """What both libraries are told; built from :class:`ServerConfig`."""

    max_message_size: int
    receive_buffer_size: int
    #: Whole messages a connection may queue before it stops reading the socket.
    message_queue: int
    subprotocols: Sequence[str] = ("mmstream.v1",)
    ping_interval: float | None = 20.0

    @classmethod
    def from_config(cls, config: ServerConfig) -> TransportOptions:
        return cls(
            max_message_size=config.max_message_size,
            receive_buffer_size=config.receive_buffer_size,
            message_queue=config.request_queue,
        )


class Transport(Protocol):
    """Runs the WebSocket protocol on the streams the front door hands over."""

    name: str

    async def serve_stream(
        self,
        stream: trio.abc.HalfCloseableStream,
        handler: Handler,
        *,
        connection_id: str,
        remote: str,
        path: str,
        handshake_deadline: float,
    ) -> None:
        """Complete the opening handshake on ``stream`` (which replays the request head)
        before ``handshake_deadline``, run ``handler`` and close. Returns once the stream is
        closed; a failed or late handshake just closes it."""
        ...

    def begin_shutdown(self) -> None:
        """Refuse handshakes still in progress (503) from now on."""
        ...


async def _run_handler(
    handler: Handler, connection: Connection, stream: trio.abc.AsyncResource
) -> None:
    try:
        await handler(connection)
    except Exception:
        await connection.close(CLOSE_INTERNAL_ERROR, "internal error")
        raise
    except BaseException:
        # Cancelled: a closing handshake could only wait out its timeout. Drop the socket.
        await trio.aclose_forcefully(stream)
        raise
    await connection.close()


def _select(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    return next((name for name in offered if name in supported), None)


# --- messages waiting for the session ----------------------------------------------------


class _MessageFailure(Exception):
    """A message that must fail the connection when the session reaches it (not UTF-8:
    1007, too many fragments: 1009), as ``websockets``' own ``recv()`` does."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


#: What the websockets connection queues: a whole message, or why the next one is refused.
_Queued = str | bytes | _MessageFailure


class _MessageQueue:
    """trio-websocket's messages between the pump task and the session, in a trio memory
    channel the session can drain without a checkpoint per message (:meth:`get_nowait`;
    the library's own ``get_message`` has no such form).

    Bounded by flow control: past ``high`` queued messages the pump waits
    (:meth:`wait_for_room`) until they drain to a quarter of that; the library's own
    channel then fills, its reader stops and TCP slows the client down.
    """

    def __init__(self, high: int, wire: ReplayStream | None = None) -> None:
        self._send, self._receive = trio.open_memory_channel[str | bytes | _Interrupted](math.inf)
        #: Told what the session takes, for the connection's receive budget.
        self._wire = wire
        self._queued = 0
        self._high, self._low = high, high // 4
        self._room: trio.Event | None = None
        #: Set once messages are dropped rather than queued (the session no longer takes any).
        self.discarding = False

    # -- the pump's side -----------------------------------------------------------------------

    def put(self, message: str | bytes) -> None:
        if self.discarding:
            return
        try:
            self._send.send_nowait(message)
        except trio.ClosedResourceError:
            return
        self._queued += 1
        if self._queued > self._high and self._room is None:
            self._room = trio.Event()

    async def wait_for_room(self) -> None:
        """Return once the session has taken enough (at once while there is room)."""
        room = self._room
        if room is not None:
            await room.wait()

    def close(self) -> None:
        """No more messages: the session's :meth:`get` raises ``trio.EndOfChannel`` once
        it has taken the queued ones."""
        self._send.close()

    def discard(self) -> None:
        """Drop what comes from now on, and let the pump go on (for the closing handshake)."""
        self.discarding = True
        self._resume()

    # -- the session's side ---------------------------------------------------------------------

    def get_nowait(self) -> str | bytes | None:
        """The next queued message, None if there is none (or at the mark
        :meth:`interrupt` left)."""
        if not self._queued:
            return None
        try:
            item = self._receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None
        if isinstance(item, _Interrupted):
            return None
        self._taken(item)
        return item

    async def get(self) -> str | bytes | None:
        """The next message, waiting for it; None at the mark :meth:`interrupt` left."""
        item = await self._receive.receive()
        if isinstance(item, _Interrupted):
            return None
        self._taken(item)
        return item

    def interrupt(self) -> None:
        with contextlib.suppress(trio.ClosedResourceError):
            self._send.send_nowait(_INTERRUPTED)

    def _taken(self, item: str | bytes) -> None:
        self._queued -= 1
        if self._wire is not None:
            self._wire.consumed(payload_size(item), queue_empty=not self._queued)
        if self._queued <= self._low:
            self._resume()

    def _resume(self) -> None:
        room, self._room = self._room, None
        if room is not None:
            room.set()


@attrs.define(eq=False, kw_only=True)
class _Sends:
    """What both library adapters share."""

    id: str
    remote: str
    path: str

    async def send_text(self, text: str) -> None:
        await self.send_many((text,))

    async def send_bytes(self, data: bytes) -> None:
        await self.send_many((data,))

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        raise NotImplementedError

    def on_input_idle(self, callback: Callable[[], None] | None) -> None:
        wire = self._wire()
        if wire is not None:
            wire.on_idle = callback

    @property
    def input_idle(self) -> bool:
        wire = self._wire()
        return wire is None or wire.idle

    def _wire(self) -> ReplayStream | None:
        """The stream read through, when it is ours (it knows when input went idle)."""
        raise NotImplementedError


# --- websockets: its Sans-I/O protocol, driven here ---------------------------------------


@attrs.define(eq=False, kw_only=True)
class _WebsocketsConnection(_Sends):
    """``websockets``' :class:`ServerProtocol` over a stream, with no task of its own.

    The session's :meth:`receive` reads the socket itself when nothing is queued: one read,
    fed whole to the protocol, every message it completed queued at once (the session
    takes them with :meth:`receive_nowait`, so a burst of upload frames is one batch). So
    a real-time stream's frame costs one task step, and nothing is read while the session
    is busy: the socket buffer fills and TCP slows the client (the queue never holds more
    than one read). Sends frame through the protocol and write what it has to send under
    one lock, so no two writes interleave."""

    protocol: ServerProtocol
    stream: trio.abc.HalfCloseableStream
    _send_lock: trio.Lock = attrs.Factory(trio.Lock)
    #: Framed bytes :meth:`send_nowait` could not write at once, sent before anything else.
    _owed: list[bytes] = attrs.Factory(list)
    #: Whole messages read and not yet taken (a failure in the place of a bad one).
    _messages: collections.deque[_Queued] = attrs.Factory(collections.deque)
    #: A failure taken by :meth:`receive_nowait`, for :meth:`receive` to act on.
    _failure: _MessageFailure | None = None
    #: The fragments of a message in progress, and whether it is text.
    _fragments: list[bytes] = attrs.Factory(list)
    _fragmented_text: bool = False
    #: Nothing more will be read: end of stream, broken socket, or the protocol is done.
    _ended: bool = False
    #: Set by :meth:`interrupt_receive` for the next :meth:`receive`.
    _interrupted: bool = False
    #: The scope of a read waiting for the socket (what an interruption cancels).
    _wait_scope: trio.CancelScope | None = None
    #: When the read now waiting began (None: nobody waits for the client).
    _waiting_since: float | None = None
    #: The payload of the keepalive ping no pong has answered yet.
    _ping: bytes | None = None
    #: Set once the session no longer takes messages (closing): they are dropped.
    _discarding: bool = False
    _closing: bool = False

    @property
    def subprotocol(self) -> str | None:
        return self.protocol.subprotocol

    def _wire(self) -> ReplayStream | None:
        return self.stream if isinstance(self.stream, ReplayStream) else None

    async def handshake(self, *, refuse: bool) -> None:
        """Read the request (the front door replays it) and answer 101, or 503 when
        ``refuse``; frames that came right behind the request are queued."""
        protocol = self.protocol
        events: list[object] = []
        while not events:
            try:
                data = await self.stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            protocol.receive_data(data)
            events = list(protocol.events_received())
            if not events and protocol.close_expected():
                break  # a request the protocol refused itself: send its answer
        request = events.pop(0) if events else None
        if isinstance(request, Request):
            if refuse:
                response = protocol.reject(503, "server is shutting down\n")
            else:
                response = protocol.accept(request)
            response.headers["Server"] = f"mmstream/{__version__}"
            protocol.send_response(response)
        with contextlib.suppress(ConnectionClosed):
            await self._write_pending()
        self._receive_events(events)

    # -- reading -------------------------------------------------------------------------------

    def interrupt_receive(self) -> None:
        self._interrupted = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def receive_nowait(self) -> str | bytes | None:
        if self._failure is not None or not self._messages:
            return None
        item = self._messages.popleft()
        if isinstance(item, _MessageFailure):
            self._failure = item
            return None
        self._consumed(payload_size(item))
        return item

    def _consumed(self, size: int) -> None:
        """The bytes of a frame of ``size`` payload bytes are no longer held (the session
        took its message, or it was a ping or pong): released from the connection's share
        of the receive budget (:mod:`._budget`)."""
        stream = self.stream
        if isinstance(stream, ReplayStream):
            stream.consumed(size, queue_empty=not self._messages)

    async def receive(self) -> str | bytes | None:
        failure, self._failure = self._failure, None
        while failure is None:
            if self._messages:
                item = self._messages.popleft()
                if not isinstance(item, _MessageFailure):
                    self._consumed(payload_size(item))
                    return item
                failure = item
            elif self._interrupted:
                self._interrupted = False
                return None
            elif self._ended or self.protocol.close_rcvd is not None:
                raise self._closed()
            else:
                await self._read()
        self._discarding = True
        self.protocol.fail(failure.code, failure.reason)
        with contextlib.suppress(ConnectionClosed):
            await self._write_pending()
        raise ConnectionClosed(failure.code, failure.reason)

    async def _read(self) -> None:
        """One read of the socket, fed to the protocol; what it completed is queued and
        what the protocol answers (a pong, a close) is written. Returns without reading
        when interrupted."""
        with trio.CancelScope() as scope:
            self._wait_scope = scope
            self._waiting_since = trio.current_time()
            try:
                data = await self.stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            finally:
                self._wait_scope = self._waiting_since = None
        if scope.cancelled_caught:
            return
        protocol = self.protocol
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
            self._ended = True
        self._receive_events(protocol.events_received())
        out = protocol.data_to_send()
        if out:  # a pong, or the close frame that answers the client's
            try:
                async with self._locked():
                    await self._write(out)
            except ConnectionClosed:
                self._ended = True

    def _receive_events(self, events: Sequence[object]) -> None:
        for event in events:
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is Opcode.PONG or opcode is Opcode.PING:
                if event.data == self._ping:
                    self._ping = None
                self._consumed(len(event.data))  # the protocol answered a ping itself
                continue
            if opcode is Opcode.CLOSE:
                continue
            if self._discarding:  # closing, or failed: nothing more is taken
                self._consumed(len(event.data))
                continue
            data = event.data
            if not event.fin or self._fragments:
                if opcode is not Opcode.CONT:
                    self._fragmented_text = opcode is Opcode.TEXT
                self._fragments.append(bytes(data))
                if not event.fin:
                    if len(self._fragments) > MAX_FRAGMENTS:
                        self._fragments = []
                        failure = _MessageFailure(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
                        self._queue(failure)
                    continue
                parts, self._fragments = self._fragments, []
                data, text = b"".join(parts), self._fragmented_text
            else:
                text = opcode is Opcode.TEXT
            if type(data) is not bytes:
                data = bytes(data)
            if text:
                try:
                    self._queue(data.decode())
                except UnicodeDecodeError as exc:
                    reason = f"{exc.reason} at position {exc.start}"
                    self._queue(_MessageFailure(CloseCode.INVALID_DATA, reason))
            else:
                self._queue(data)

    def _queue(self, message: _Queued) -> None:
        if isinstance(message, _MessageFailure):
            self._discarding = True  # the connection fails there: nothing behind it counts
        self._messages.append(message)

    def _closed(self) -> ConnectionClosed:
        close = self.protocol.close_rcvd or self.protocol.close_sent
        if close is None:
            return ConnectionClosed(None)
        return ConnectionClosed(close.code, close.reason)

    # -- writing -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """The send lock, taken without a checkpoint when it is free: whoever takes
        bytes out of the protocol (``data_to_send``) writes them before anyone else."""
        await acquire(self._send_lock)
        try:
            yield
        finally:
            self._send_lock.release()

    async def _write(self, out: list[bytes]) -> None:
        """Write ``out`` (what the protocol had to send, in order; ``b""`` half-closes);
        the send lock is held. Raises :class:`ConnectionClosed` if the socket broke."""
        owed, self._owed = self._owed, []
        pending = [*owed, *out] if owed else out
        try:
            batch: list[bytes] = []
            for chunk in pending:
                if chunk:
                    batch.append(chunk)
                    continue
                if batch:
                    await self.stream.send_all(b"".join(batch))
                    batch = []
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.stream.send_eof()
            if batch:
                await self.stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed() from None

    async def _write_pending(self) -> None:
        """Write what the protocol and :meth:`send_nowait` have left to send, if anything."""
        async with self._locked():
            out = self.protocol.data_to_send()
            if out or self._owed:
                await self._write(out)

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        protocol = self.protocol
        if protocol.state is not OPEN:
            raise self._closed()
        for message in messages:
            if isinstance(message, str):
                protocol.send_text(message.encode())
            else:
                protocol.send_binary(message)
        await self._write_pending()

    def send_nowait(self, *messages: str | bytes) -> Delivery:
        stream = self.stream
        protocol = self.protocol
        if (
            not isinstance(stream, ReplayStream)
            or protocol.state is not OPEN
            or self._owed
            or self._send_lock.locked()
        ):
            return Delivery.REFUSED
        for message in messages:
            if isinstance(message, str):
                protocol.send_text(message.encode())
            else:
                protocol.send_binary(message)
        out = protocol.data_to_send()
        outcome = stream.send_nowait(*out)
        if outcome is Delivery.REFUSED:  # full or broken: framed already, so owed whole
            self._owed = out
            return Delivery.STARTED
        return outcome

    async def flush(self) -> None:
        async with self._locked():
            if self._owed:
                await self._write([])
            if isinstance(self.stream, ReplayStream):
                try:
                    await self.stream.flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise self._closed() from None

    async def keepalive(self, interval: float) -> None:
        """Ping every ``interval``; a client that leaves one unanswered for another
        ``interval`` while the session waited for it is gone (1011), as ``websockets``' own
        connections judge. A session busy elsewhere reads nothing, so judges nobody."""
        while True:
            await trio.sleep(interval)
            if self.protocol.state is not OPEN:
                return
            self._ping = os.urandom(4)
            sent = trio.current_time()
            self.protocol.send_ping(self._ping)
            await self._write_pending()
            await trio.sleep(interval)
            waiting_since = self._waiting_since
            if (
                self._ping is not None
                and self.protocol.state is OPEN
                and waiting_since is not None
                and waiting_since <= sent
            ):
                log.info("keepalive ping timeout conn=%s", self.id)
                self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                self._ended = True
                if self._wait_scope is not None:
                    self._wait_scope.cancel()
                with contextlib.suppress(ConnectionClosed):
                    await self._write_pending()
                return

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if not self._closing:
            self._closing = self._discarding = True
            self._messages.clear()
            with trio.move_on_after(CLOSE_TIMEOUT):
                if self.protocol.state is OPEN:
                    self.protocol.send_close(code, reason)
                with contextlib.suppress(ConnectionClosed):
                    await self._write_pending()
                while not self._ended:  # the client's close frame and end of stream
                    await self._read()
        await trio.aclose_forcefully(self.stream)


class WebsocketsTransport:
    """Drives ``websockets``' Sans-I/O :class:`ServerProtocol` over a handed-over stream:
    the handshake, one reader task, the keepalive pings, the closing handshake."""

    name = "websockets"

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self._closing = False

    def begin_shutdown(self) -> None:
        self._closing = True

    def _protocol(self) -> ServerProtocol:
        supported = tuple(self.options.subprotocols)

        def select(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
            # Unlike websockets' default, a client offering only other subprotocols is still
            # accepted (without one), as trio-websocket does: both transports behave alike.
            chosen = _select(offered, supported)
            return None if chosen is None else Subprotocol(chosen)

        return ServerProtocol(
            subprotocols=[Subprotocol(name) for name in supported],
            select_subprotocol=select,
            max_size=self.options.max_message_size,
        )

    async def serve_stream(
        self,
        stream: trio.abc.HalfCloseableStream,
        handler: Handler,
        *,
        connection_id: str,
        remote: str,
        path: str,
        handshake_deadline: float,
    ) -> None:
        protocol = self._protocol()
        connection = _WebsocketsConnection(
            protocol=protocol,
            stream=stream,
            id=connection_id,
            remote=remote,
            path=path,
        )
        with trio.move_on_at(handshake_deadline):
            await connection.handshake(refuse=self._closing)
        if protocol.state is not OPEN:
            await trio.aclose_forcefully(stream)
            return
        async with trio.open_nursery() as nursery:
            if self.options.ping_interval is not None:
                nursery.start_soon(connection.keepalive, self.options.ping_interval)
            await _run_handler(handler, connection, stream)
            nursery.cancel_scope.cancel()


# --- trio-websocket -----------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class _TrioWebsocketConnection(_Sends):
    """trio-websocket's connection; a pump task moves its messages into a queue the
    session can drain without a checkpoint each."""

    ws: trio_websocket.WebSocketConnection
    stream: trio.abc.Stream
    queue: _MessageQueue

    def interrupt_receive(self) -> None:
        self.queue.interrupt()

    def receive_nowait(self) -> str | bytes | None:
        return self.queue.get_nowait()

    async def receive(self) -> str | bytes | None:
        try:
            return await self.queue.get()
        except trio.EndOfChannel:
            raise self._closed() from None

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    def _wire(self) -> ReplayStream | None:
        return self.stream if isinstance(self.stream, ReplayStream) else None

    async def pump(self) -> None:
        """Move each message from ``get_message`` to the queue, waiting while it is full."""
        try:
            while True:
                await self.queue.wait_for_room()
                message = await self.ws.get_message()
                self.queue.put(message)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self.queue.close()

    def _closed(self) -> ConnectionClosed:
        return _closed_by(self.ws.closed)

    def send_nowait(self, *messages: str | bytes) -> Delivery:
        return Delivery.REFUSED  # trio-websocket writes only from its own awaited send

    async def flush(self) -> None:
        return None

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        try:
            for message in messages:
                await self.ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed_by(exc.reason) from None

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        self.queue.discard()
        # trio-websocket waits for the peer's close frame without a limit of its own.
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            await self.ws.aclose(code, reason or None)
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.stream)


def _closed_by(reason: trio_websocket.CloseReason | None) -> ConnectionClosed:
    if reason is None:
        return ConnectionClosed(None)
    return ConnectionClosed(reason.code, reason.reason or "")


@attrs.define
class TrioWebsocketTransport:
    """Runs trio-websocket's server side over a handed-over stream (public API only)."""

    options: TransportOptions
    name: str = "trio-websocket"
    _closing: bool = False

    def begin_shutdown(self) -> None:
        self._closing = True

    async def serve_stream(
        self,
        stream: trio.abc.HalfCloseableStream,
        handler: Handler,
        *,
        connection_id: str,
        remote: str,
        path: str,
        handshake_deadline: float,
    ) -> None:
        async with trio.open_nursery() as nursery:
            ws: trio_websocket.WebSocketConnection | None = None
            with trio.move_on_at(handshake_deadline):
                try:
                    request = await trio_websocket.wrap_server_stream(
                        nursery,
                        stream,
                        # Our queue holds the messages; the library's channel only hands over.
                        message_queue_size=1,
                        max_message_size=self.options.max_message_size,
                        receive_buffer_size=self.options.receive_buffer_size,
                    )
                    if self._closing:
                        await request.reject(503, body=b"server is shutting down\n")
                    else:
                        chosen = _select(request.proposed_subprotocols, self.options.subprotocols)
                        ws = await request.accept(subprotocol=chosen)
                except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
                    ws = None
            if ws is None:
                await trio.aclose_forcefully(stream)
                nursery.cancel_scope.cancel()
                return
            connection = _TrioWebsocketConnection(
                ws=ws,
                stream=stream,
                queue=_MessageQueue(
                    self.options.message_queue,
                    stream if isinstance(stream, ReplayStream) else None,
                ),
                id=connection_id,
                remote=remote,
                path=path,
            )
            nursery.start_soon(connection.pump)
            await _run_handler(handler, connection, stream)
            nursery.cancel_scope.cancel()


def make_transport(config: ServerConfig) -> Transport:
    options = TransportOptions.from_config(config)
    match config.transport:
        case "websockets":
            return WebsocketsTransport(options)
        case "trio-websocket":
            return TrioWebsocketTransport(options)
