"""The trio-websocket transport, through its public API only (``wrap_server_stream``,
``accept``/``reject``, ``get_message``, ``send_message``, ``aclose``).

A pump task moves each message from ``get_message`` into a :class:`_MessageQueue` the session
drains without a checkpoint per message; there is no public way to write without awaiting
the library's send, so ``send_nowait`` always refuses here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import attrs
import trio
import trio_websocket

from ._budget import payload_size
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
)

__all__ = ["TrioWebsocketTransport"]


class _Interrupted:
    """What ``interrupt_receive`` queues behind the messages already waiting."""


_INTERRUPTED = _Interrupted()


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
class _TrioWebsocketConnection(SendHelpers):
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

    writes_frames = False

    def send_frames_nowait(self, *parts: bytes | memoryview) -> Delivery:
        return Delivery.REFUSED

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
                        chosen = first_supported(
                            request.proposed_subprotocols, self.options.subprotocols
                        )
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
            await run_handler(handler, connection, stream)
            nursery.cancel_scope.cancel()
