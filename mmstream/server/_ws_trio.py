"""The trio-websocket transport, through its public API only (``wrap_server_stream``,
``accept``/``reject``, ``get_message``, ``send_message``, ``aclose``).

A pump task moves each message from ``get_message`` into a :class:`_MessageQueue` the session
drains without a checkpoint per message; there is no public way to write without awaiting
the library's send, so ``send_nowait`` always refuses here.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import attrs
import trio
import trio_websocket

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

__all__ = ["TrioWebsocketTransport"]


class _MessageQueue:
    """trio-websocket's messages between the pump task and the session, which takes them
    without a checkpoint each (:meth:`get_nowait`, :meth:`take_frames`; the library's own
    ``get_message`` has no such form).

    The library hands over one message per pass through the scheduler, so a session woken
    by the first message of a read would find it alone: :meth:`get` lets the pump go on
    while it still finds messages, and the session then takes them as one batch (a
    regression test counts the batches: one per frame before).

    Bounded by flow control: past ``high`` queued messages the pump waits
    (:meth:`wait_for_room`) until they drain to a quarter of that; the library's own
    channel then fills, its reader stops and TCP slows the client down.
    """

    def __init__(self, high: int, wire: ReplayStream | None = None) -> None:
        self._items: collections.deque[str | bytes] = collections.deque()
        #: Told what the session takes, for the connection's receive budget.
        self._wire = wire
        self._high, self._low = high, high // 4
        self._room: trio.Event | None = None
        #: Set while the session waits for a message.
        self._arrival: trio.Event | None = None
        #: Messages queued and taken so far; where :meth:`interrupt` left its mark.
        self._put = self._taken = 0
        self._mark: int | None = None
        self._closed = False
        #: Set once messages are dropped rather than queued (the session no longer takes any).
        self.discarding = False

    # -- the pump's side -----------------------------------------------------------------------

    def put(self, message: str | bytes) -> None:
        if self.discarding or self._closed:
            return
        self._items.append(message)
        self._put += 1
        if len(self._items) > self._high and self._room is None:
            self._room = trio.Event()
        self._wake()

    async def wait_for_room(self) -> None:
        """Return once the session has taken enough (at once while there is room)."""
        room = self._room
        if room is not None:
            await room.wait()

    def close(self) -> None:
        """No more messages: the session's :meth:`get` raises ``trio.EndOfChannel`` once
        it has taken the queued ones."""
        self._closed = True
        self._wake()

    def discard(self) -> None:
        """Drop what comes from now on, and let the pump go on (for the closing handshake)."""
        self.discarding = True
        self._resume()

    # -- the session's side ---------------------------------------------------------------------

    def _at_mark(self) -> bool:
        return self._mark is not None and self._taken >= self._mark

    def get_nowait(self) -> str | bytes | None:
        """The next queued message, None if there is none (or at the mark
        :meth:`interrupt` left)."""
        if not self._items or self._at_mark():
            return None
        item = self._items.popleft()
        self._taken_out(1, client_frame_size(payload_size(item)))
        return item

    def take_frames(self, max_bytes: int, max_count: int) -> list[bytes]:
        """The binary messages at the head of the queue (see
        :meth:`~._transports.Connection.receive_frames_nowait`)."""
        limit = max_count if self._mark is None else min(max_count, self._mark - self._taken)
        frames, wire = take_frames(self._items, max_bytes, limit)
        if frames:
            self._taken_out(len(frames), wire)
        return frames

    async def get(self) -> str | bytes | None:
        """The next message, waiting for it; None at the mark :meth:`interrupt` left."""
        while not self._items or self._at_mark():
            if self._at_mark():
                self._mark = None
                return None
            if self._closed:
                raise trio.EndOfChannel
            self._arrival = arrival = trio.Event()
            await arrival.wait()
        idle = 0
        while len(self._items) < self._high and idle < 2:
            put = self._put
            await trio.lowlevel.cancel_shielded_checkpoint()  # the pump's turn
            # Trio runs a pass's tasks in random order, so one pass without a new message
            # may just mean the pump ran before us twice; two in a row: it waits.
            idle = idle + 1 if self._put == put else 0
        return self.get_nowait()

    def interrupt(self) -> None:
        self._mark = self._put
        self._wake()

    def _wake(self) -> None:
        arrival, self._arrival = self._arrival, None
        if arrival is not None:
            arrival.set()

    def _taken_out(self, count: int, wire: int) -> None:
        self._taken += count
        if self._wire is not None:
            self._wire.consumed(wire, queue_empty=not self._items)
        if len(self._items) <= self._low:
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

    def receive_frames_nowait(self, max_bytes: int, max_count: int) -> list[bytes]:
        return self.queue.take_frames(max_bytes, max_count)

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
