"""The ``websockets`` transport: the library's public Sans-I/O :class:`ServerProtocol`,
driven by the session's own reads (no task of its own) over the front door's stream.

When the session wants a message and none is queued, :meth:`_WebsocketsConnection.receive`
reads the socket once, feeds it all to ``receive_data``, queues every message that read
completed and writes what ``data_to_send`` holds (a pong, a close). Sends frame through the
protocol and write under one lock, so the bytes leave in the order the protocol produced
them. The handshake, keepalive pings and the closing handshake use the protocol's public
methods (``accept``/``reject``/``send_response``, ``send_ping``, ``send_close``, ``fail``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence

import attrs
import trio
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from .. import __version__
from .._locks import acquire
from ._budget import client_frame_size, payload_size
from ._replay import Delivery, ReplayStream
from ._transports import (
    CLOSE_NORMAL,
    CLOSE_TIMEOUT,
    ConnectionClosed,
    Handler,
    SendHelpers,
    TransportOptions,
    first_supported,
    run_handler,
    take_frames,
)

__all__ = ["MAX_FRAGMENTS", "WebsocketsTransport"]

log = logging.getLogger("mmstream.server")

#: A fragmented message of more parts is refused (1009), as ``websockets``' own ``recv()``
#: does: each part costs a list entry however small it is.
MAX_FRAGMENTS = 4096


class _MessageFailure(Exception):
    """A message that must fail the connection when the session reaches it (not UTF-8:
    1007, too many fragments: 1009), as ``websockets``' own ``recv()`` does."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


#: What the websockets connection queues: a whole message, or why the next one is refused.
_Queued = str | bytes | _MessageFailure


@attrs.define(eq=False, kw_only=True)
class _WebsocketsConnection(SendHelpers):
    """``websockets``' :class:`ServerProtocol` over a stream, with no task of its own.

    The session's :meth:`receive` reads the socket itself when nothing is queued: one read,
    fed whole to the protocol, every message it completed queued at once (the session
    takes a run of upload frames with one :meth:`receive_frames_nowait`, so a burst of
    upload frames is one batch). So
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
        self._consumed(client_frame_size(payload_size(item)))
        return item

    def receive_frames_nowait(self, max_bytes: int, max_count: int) -> list[bytes]:
        if self._failure is not None:
            return []
        frames, wire = take_frames(self._messages, max_bytes, max_count)
        if wire:
            self._consumed(wire)
        return frames

    def _consumed(self, wire: int) -> None:
        """Whole client frames of ``wire`` bytes (headers included) are no longer held (the
        session took their messages, or they were pings or pongs): released from the
        connection's share of the receive budget (:mod:`._budget`)."""
        stream = self.stream
        if isinstance(stream, ReplayStream):
            stream.consumed(wire, queue_empty=not self._messages)

    async def receive(self) -> str | bytes | None:
        failure, self._failure = self._failure, None
        while failure is None:
            if self._messages:
                item = self._messages.popleft()
                if not isinstance(item, _MessageFailure):
                    self._consumed(client_frame_size(payload_size(item)))
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
            stream = self.stream
            try:
                if isinstance(stream, ReplayStream):
                    # May be the thread's read buffer: the protocol copies it at once.
                    data = await stream.receive_shared()
                else:
                    data = await stream.receive_some()
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
        queue = self._messages.append
        for event in events:
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            data = event.data
            if opcode is Opcode.BINARY and event.fin and not self._discarding:
                # An upload frame, whole (the protocol refuses a new message in the middle
                # of a fragmented one): queued as it is, with nothing else to decide.
                queue(data if type(data) is bytes else bytes(data))
                continue
            if opcode is Opcode.PONG or opcode is Opcode.PING:
                if data == self._ping:
                    self._ping = None
                self._consumed(client_frame_size(len(data)))  # the protocol answered a ping
                continue
            if opcode is Opcode.CLOSE:
                continue
            if self._discarding:  # closing, or failed: nothing more is taken
                self._consumed(client_frame_size(len(data)))
                continue
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

    @property
    def writes_frames(self) -> bool:
        # No extension is negotiated (the protocol is made without any): a frame is its
        # RFC 6455 header and the payload, whoever builds it.
        return isinstance(self.stream, ReplayStream)

    def send_frames_nowait(self, *parts: bytes | memoryview) -> Delivery:
        stream = self.stream
        if (
            not isinstance(stream, ReplayStream)
            or self.protocol.state is not OPEN
            or self._owed
            or self._send_lock.locked()
            or not parts
        ):
            return Delivery.REFUSED
        return stream.send_nowait(*parts)

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
            chosen = first_supported(offered, supported)
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
            await run_handler(handler, connection, stream)
            nursery.cancel_scope.cancel()
