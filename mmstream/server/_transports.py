"""One thin interface over the two WebSocket libraries mmstream can run on.

The rest of the server sees only :class:`Connection` (receive a message, send text or bytes,
close with a code) and :class:`Transport` (do the opening handshake on a stream and run a
handler). Which library is used is a config choice (``server.transport``); both pass the same
tests. Both are driven over a stream the front door hands over, which replays the request
head it already read, so neither library ever listens on a socket itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, cast

import attrs
import trio
import trio_websocket
import websockets.exceptions
import websockets.protocol
from websockets.exceptions import TooManyFragments
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event
from websockets.server import ServerProtocol
from websockets.trio.messages import MAX_FRAGMENTS
from websockets.trio.server import Server as _WebsocketsServer
from websockets.trio.server import ServerConnection
from websockets.typing import Subprotocol

from .. import __version__
from ..config import ServerConfig
from ._replay import Delivery, ReplayStream
from ._wsframes import FastBinaryProtocol, payload_size

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TRY_AGAIN_LATER",
    "BinaryTaker",
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
        """The next whole message if the library already holds one, else None (also at
        the end: :meth:`receive` then says how it ended). The session takes queued upload
        frames as one batch this way, without a checkpoint per message; None rather than
        an exception, because an empty queue is the common case (a slow stream's every
        frame)."""
        ...

    def offer_binary(self, taker: BinaryTaker | None) -> None:
        """Offer each binary message that arrives while no message is queued to
        ``taker`` first, from the task that reads the socket; one it takes (True) is not
        queued. The offer saves the receiver a task step per message and changes nothing
        else."""
        ...

    def on_input_idle(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback``, from the task that reads the socket and without awaiting, each
        time that task has handed on every message it read and goes back to the socket with
        nothing more to read there: the moment :attr:`input_idle` becomes true."""
        ...

    @property
    def input_idle(self) -> bool:
        """Whether everything that arrived was handed on (queued, offered or taken): no
        upload frame is on its way through the transport."""
        ...

    async def send_text(self, text: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send ``messages`` in order, nothing between them, written out together where
        the library allows (a ``read`` reply and its first data frame: one system call)."""
        ...

    def send_frame_nowait(self, first: bytes, *more: bytes) -> Delivery:
        """Write ``first`` and ``more``, whole server frames built here (:mod:`._wsframes`;
        a frame may come as its header and its payload), straight to the socket in one
        system call if nothing else is being sent and the connection is open; see
        :class:`Delivery`."""
        ...

    async def flush(self) -> None:
        """Send what :meth:`send_frame_nowait` left owed (:attr:`Delivery.STARTED`); raises
        :class:`ConnectionClosed` if the socket broke meanwhile."""
        ...

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start (and wait a bounded time for) the closing handshake; idempotent."""
        ...


Handler = Callable[[Connection], Awaitable[None]]
#: Takes a binary message as it arrives, without awaiting; False leaves it to be queued.
BinaryTaker = Callable[[bytes], bool]


@attrs.frozen
class TransportOptions:
    """What both libraries are told; built from :class:`ServerConfig`."""

    max_message_size: int
    receive_buffer_size: int
    #: Whole messages a library may buffer before it stops reading the socket.
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
        # Cancelled: the library's own tasks are being cancelled too, so a closing
        # handshake could only wait out its timeout. Just drop the socket.
        await trio.aclose_forcefully(stream)
        raise
    await connection.close()


def _select(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    return next((name for name in offered if name in supported), None)


@attrs.define(eq=False, kw_only=True)
class _Adapter:
    """What both library adapters share; each provides receive, _send, close, subprotocol."""

    id: str
    remote: str
    path: str

    async def send_text(self, text: str) -> None:
        await self._send(text)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data)

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        for message in messages:
            await self._send(message)

    def send_frame_nowait(self, first: bytes, *more: bytes) -> Delivery:
        wire = self._wire()
        if wire is None or not self._open():
            return Delivery.REFUSED
        return wire.send_nowait(first, *more)

    def on_input_idle(self, callback: Callable[[], None] | None) -> None:
        wire = self._wire()
        if wire is not None:
            wire.on_idle = callback

    @property
    def input_idle(self) -> bool:
        wire = self._wire()
        return wire is None or wire.idle

    async def flush(self) -> None:
        wire = self._wire()
        if wire is None:
            return
        try:
            await wire.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(None) from None

    async def _send(self, message: str | bytes) -> None:
        raise NotImplementedError

    def _wire(self) -> ReplayStream | None:
        raise NotImplementedError

    def _open(self) -> bool:
        """Data frames may still be sent (no closing handshake has begun)."""
        raise NotImplementedError


# --- trio-websocket ---------------------------------------------------------------------


@attrs.define(eq=False, kw_only=True)
class _TrioWebsocketConnection(_Adapter):
    ws: trio_websocket.WebSocketConnection
    stream: trio.abc.Stream
    #: The reader's side of the message channel (it also carries interruptions).
    channel: _EagerSendChannel

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    async def receive(self) -> str | bytes | None:
        try:
            message = await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed_from_trio_websocket(exc) from None
        return self.channel.taken(message)

    def interrupt_receive(self) -> None:
        self.channel.interrupt()

    def offer_binary(self, taker: BinaryTaker | None) -> None:
        self.channel.taker = taker

    def _wire(self) -> ReplayStream | None:
        return self.stream if isinstance(self.stream, ReplayStream) else None

    def _open(self) -> bool:
        return self.ws.closed is None

    def receive_nowait(self) -> str | bytes | None:
        # get_message() is a receive on this bounded channel (message_queue_size); there
        # is no public non-blocking form of it.
        try:
            message = self.ws._recv_channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None
        return self.channel.taken(message)

    async def _send(self, message: str | bytes) -> None:
        try:
            await self.ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed_from_trio_websocket(exc) from None

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        # trio-websocket waits for the peer's close frame without a limit of its own.
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            await self.ws.aclose(code, reason or None)
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.stream)


class _EagerSendChannel:
    """trio-websocket's reader hands each message to ``get_message`` with an awaited
    ``send`` on a bounded memory channel: a pass through the scheduler per message even
    when the channel has room, so the session never finds a batch queued. This sends
    without one while there is room and waits only when the channel is full: the same
    bounded channel, the same backpressure, but the messages of one socket read arrive
    together (4 KiB messages/s: about 2x)."""

    def __init__(
        self, channel: trio.MemorySendChannel[str | bytes], wire: ReplayStream | None
    ) -> None:
        self._channel = channel
        self._wire = wire
        #: Offered each binary message that would be the only one in the channel.
        self.taker: BinaryTaker | None = None

    async def send(self, value: str | bytes) -> None:
        taker = self.taker
        if taker is not None and type(value) is bytes:
            # Offered only while the session waits in the channel for a message: not when
            # one is buffered, nor when one was just handed to it and not yet applied.
            state = self._channel.statistics()
            if state.tasks_waiting_receive and not state.current_buffer_used and taker(value):
                if self._wire is not None:
                    self._wire.consumed(len(value), queue_empty=True)
                return
        try:
            self._channel.send_nowait(value)
        except trio.WouldBlock:
            await self._channel.send(value)

    def taken(self, message: object) -> str | bytes | None:
        """A message the session took from the channel (its bytes are no longer held), or
        None for the mark :meth:`interrupt` left."""
        if not isinstance(message, (str, bytes)):
            return None
        if self._wire is not None:
            empty = not self._channel.statistics().current_buffer_used
            self._wire.consumed(payload_size(message), queue_empty=empty)
        return message

    def interrupt(self) -> None:
        """Queue :data:`_INTERRUPTED` for ``get_message``; a full channel means messages
        are waiting, so nobody waits for one."""
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._channel.send_nowait(_INTERRUPTED)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self._channel.aclose()


def _closed_from_trio_websocket(exc: trio_websocket.ConnectionClosed) -> ConnectionClosed:
    reason = exc.reason
    if reason is None:
        return ConnectionClosed(None)
    return ConnectionClosed(reason.code, reason.reason or "")


@attrs.define
class TrioWebsocketTransport:
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
                        message_queue_size=self.options.message_queue,
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
            # Its reader looks the channel up for every message (pinned: trio-websocket 0.12).
            channel = _EagerSendChannel(
                ws._send_channel, stream if isinstance(stream, ReplayStream) else None
            )
            ws._send_channel = channel  # type: ignore[assignment]
            connection = _TrioWebsocketConnection(
                ws=ws, stream=stream, channel=channel, id=connection_id, remote=remote, path=path
            )
            await _run_handler(handler, connection, stream)


# --- websockets (native Trio implementation, websockets >= 17) ---------------------------


#: What a :class:`_MessageQueue` holds: a whole message, or why the next one is refused.
_Queued = str | bytes | UnicodeDecodeError | TooManyFragments


class _MessageQueue:
    """Stands in for websockets' frame assembler (``ServerConnection.recv_messages``): the
    connection puts frames in as it parses them, whole messages come out of a trio memory
    channel, and the session can take every queued one without a checkpoint each
    (:meth:`get_nowait`), which the library's ``recv()`` cannot do.

    Flow control is websockets' own: past ``high`` queued messages the connection stops
    reading the socket until they drain to a quarter of that, so TCP slows the client
    down and the queue stays bounded. Text is decoded here; a message that is not UTF-8,
    or has too many fragments, is queued as its error and fails the connection when it
    is reached, as ``recv()`` would.
    """

    def __init__(self, ws: ServerConnection, high: int, wire: ReplayStream | None) -> None:
        self._send, self._receive = trio.open_memory_channel[_Queued | _Interrupted](math.inf)
        #: Told what the session takes, for the connection's receive budget.
        self._wire = wire
        self._fragments: list[Frame] = []
        self._queued = 0
        self._high, self._low = high, high // 4
        self._ws = ws
        self._paused = False
        self.closed = False
        #: Offered each binary message that would be the only one queued.
        self.taker: BinaryTaker | None = None

    # -- the connection's side (websockets calls these) ----------------------------------------

    def put(self, frame: Frame) -> None:
        if self.closed:
            raise EOFError("stream of frames ended")
        if frame.fin and not self._fragments:
            data, text = frame.data, frame.opcode is Opcode.TEXT
        else:
            self._fragments.append(frame)
            if not frame.fin:
                if len(self._fragments) > MAX_FRAGMENTS:
                    self._fragments = []
                    self._queue(TooManyFragments(MAX_FRAGMENTS))
                return
            frames, self._fragments = self._fragments, []
            data, text = b"".join(f.data for f in frames), frames[0].opcode is Opcode.TEXT
        if type(data) is not bytes:
            data = bytes(data)
        if text:
            try:
                self._queue(data.decode())
            except UnicodeDecodeError as exc:
                self._queue(exc)
        else:
            self._queue(data)

    def put_binary(self, data: bytes) -> None:
        """A whole binary message (no fragmented message can be in progress: the fast
        path takes none while the protocol is inside one)."""
        if self.closed:
            raise EOFError("stream of frames ended")
        taker = self.taker
        if taker is not None and not self._queued and taker(data):
            if self._wire is not None:
                self._wire.consumed(len(data), queue_empty=True)
            return
        self._queue(data)

    def control_frame(self, size: int) -> None:
        """A ping or pong of ``size`` payload bytes was handled: never taken by the session,
        its bytes are released here, so a connection that only pings for months is not
        slowly charged full."""
        if self._wire is not None:
            self._wire.consumed(size, queue_empty=not self._queued)

    def _queue(self, item: _Queued) -> None:
        if isinstance(item, Exception):
            self.taker = None  # the connection fails there: nothing behind it is taken
        self._send.send_nowait(item)
        self._queued += 1
        if self._queued > self._high and not self._paused:
            self._paused = True
            self._ws.pause_reading()

    def close(self) -> None:
        self.closed = True
        self._send.close()

    # -- the session's side ---------------------------------------------------------------------

    def get_nowait(self) -> _Queued | None:
        """The next queued item, None if there is none (or the queue was closed, or it
        reached the mark :meth:`interrupt` left)."""
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

    async def get(self) -> _Queued | None:
        """The next item, waiting for it; None at the mark :meth:`interrupt` left."""
        item = await self._receive.receive()
        if isinstance(item, _Interrupted):
            return None
        self._taken(item)
        return item

    def interrupt(self) -> None:
        with contextlib.suppress(trio.ClosedResourceError):
            self._send.send_nowait(_INTERRUPTED)

    def _taken(self, item: _Queued) -> None:
        self._queued -= 1
        if self._wire is not None:
            size = payload_size(item) if isinstance(item, (str, bytes)) else 0
            self._wire.consumed(size, queue_empty=not self._queued)
        if self._paused and self._queued <= self._low:
            self._paused = False
            self._ws.resume_reading()


@attrs.define(eq=False, kw_only=True)
class _WebsocketsConnection(_Adapter):
    ws: ServerConnection
    queue: _MessageQueue
    #: An error taken by :meth:`receive_nowait`, for :meth:`receive` to act on.
    _failure: UnicodeDecodeError | TooManyFragments | None = None

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    def _wire(self) -> ReplayStream | None:
        stream = self.ws.stream
        return stream if isinstance(stream, ReplayStream) else None

    def _open(self) -> bool:
        # ...and nothing the library framed is still waiting to be written before it.
        protocol = self.ws.protocol
        return protocol.state is websockets.protocol.OPEN and not protocol.writes

    def interrupt_receive(self) -> None:
        self.queue.interrupt()

    def offer_binary(self, taker: BinaryTaker | None) -> None:
        self.queue.taker = taker

    def receive_nowait(self) -> str | bytes | None:
        if self._failure is not None:
            return None
        item = self.queue.get_nowait()
        if isinstance(item, Exception):
            self._failure = item
            return None
        return item

    async def receive(self) -> str | bytes | None:
        failure, self._failure = self._failure, None
        if failure is None:
            try:
                item = await self.queue.get()
            except trio.EndOfChannel:
                await self.ws.stream_closed.wait()
                raise _closed_from_websockets(self.ws.close_exc) from None
            if not isinstance(item, Exception):
                return item
            failure = item
        # As websockets' recv() does: close with 1007 (not UTF-8) or 1009 (too many parts).
        self.ws.set_connection_exc(failure)
        if isinstance(failure, UnicodeDecodeError):
            code, reason = CloseCode.INVALID_DATA, f"{failure.reason} at position {failure.start}"
        else:
            code, reason = CloseCode.MESSAGE_TOO_BIG, "too many fragments"
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async with self.ws.send_context():
                self.ws.protocol.fail(code, reason)
        await self.ws.stream_closed.wait()
        raise _closed_from_websockets(self.ws.close_exc)

    async def _send(self, message: str | bytes) -> None:
        try:
            await self.ws.send(message)
        except websockets.exceptions.ConnectionClosed as exc:
            raise _closed_from_websockets(exc) from None

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        try:
            async with self.ws.send_context():
                for message in messages:
                    if isinstance(message, str):
                        self.ws.protocol.send_text(message.encode())
                    else:
                        self.ws.protocol.send_binary(message)
        except websockets.exceptions.ConnectionClosed as exc:
            raise _closed_from_websockets(exc) from None

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        # Bounded by the connection's close_timeout.
        await self.ws.aclose(code, reason)


def _closed_from_websockets(exc: websockets.exceptions.ConnectionClosed) -> ConnectionClosed:
    frame = exc.rcvd or exc.sent
    if frame is None:
        return ConnectionClosed(None)
    return ConnectionClosed(frame.code, frame.reason)


class _ServerConnection(ServerConnection):
    """websockets' connection, less one pass through the scheduler per socket read, and
    with the binary messages :class:`FastBinaryProtocol` parsed (plain ``bytes`` among the
    events) handed straight to the queue."""

    def process_event(self, event: Event) -> None:
        message: object = event
        if type(message) is bytes:
            cast(_MessageQueue, self.recv_messages).put_binary(message)
            return
        if isinstance(event, Frame) and event.opcode in (Opcode.PING, Opcode.PONG):
            cast(_MessageQueue, self.recv_messages).control_frame(len(event.data))
        super().process_event(event)

    async def send_data(self) -> None:
        # websockets calls this after every read, though a read rarely leaves anything to
        # send (a pong, a close); taking the send lock is a checkpoint even when it is free.
        if self.protocol.writes:
            await super().send_data()


async def _never_called(stream: trio.abc.Stream) -> None:
    raise AssertionError("the websockets Server object is only a shutdown flag here")


class WebsocketsTransport:
    """Drives ``websockets.trio``'s :class:`ServerConnection` over a handed-over stream.

    This repeats what ``websockets.trio.serve`` does per connection (protocol, connection,
    handshake, keepalive) without its listener loop, so the front door keeps the socket.
    """

    name = "websockets"

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        # ServerConnection consults server.closing during the handshake to answer 503.
        self._server = _WebsocketsServer([], _never_called, log)

    def begin_shutdown(self) -> None:
        self._server.closing = True

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
            protocol = FastBinaryProtocol(
                subprotocols=[Subprotocol(name) for name in self.options.subprotocols],
                select_subprotocol=_select_websockets_subprotocol,
                max_size=self.options.max_message_size,
            )
            ws = _ServerConnection(
                nursery,
                stream,
                protocol,
                self._server,
                ping_interval=self.options.ping_interval,
                ping_timeout=self.options.ping_interval,
                close_timeout=CLOSE_TIMEOUT,
                max_queue=self.options.message_queue,
            )
            # Whole messages the session can take in batches (see _MessageQueue).
            queue = _MessageQueue(
                ws, self.options.message_queue, stream if isinstance(stream, ReplayStream) else None
            )
            ws.recv_messages = queue  # type: ignore[assignment]
            with trio.move_on_at(handshake_deadline):
                await ws.handshake(server_header=f"mmstream/{__version__}")
            if ws.protocol.state is not websockets.protocol.OPEN:
                await ws.close_stream()
                return
            ws.start_keepalive()
            connection = _WebsocketsConnection(
                ws=ws, queue=queue, id=connection_id, remote=remote, path=path
            )
            await _run_handler(handler, connection, stream)


def _select_websockets_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    # Unlike websockets' default, a client offering only other subprotocols is still
    # accepted (without one), as trio-websocket does: both transports behave alike.
    supported = protocol.available_subprotocols or ()
    return next((name for name in offered if name in supported), None)


def make_transport(config: ServerConfig) -> Transport:
    options = TransportOptions.from_config(config)
    match config.transport:
        case "websockets":
            return WebsocketsTransport(options)
        case "trio-websocket":
            return TrioWebsocketTransport(options)
