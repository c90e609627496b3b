"""One thin interface over the two WebSocket libraries mmstream can run on.

The rest of the server sees only :class:`Connection` (receive a message, send text or bytes,
close with a code) and :class:`Transport` (do the opening handshake on a stream and run a
handler). Which library is used is a config choice (``server.transport``); both pass the same
tests. Both are driven over a stream the front door hands over, which replays the request
head it already read, so neither library ever listens on a socket itself. Both go through
their public API only: ``websockets``' Sans-I/O :class:`~websockets.server.ServerProtocol`
driven by the session's own reads (:mod:`._ws_sansio`), and trio-websocket's
``get_message``/``send_message`` (:mod:`._ws_trio`).

Whole messages wait for the session in a queue per connection: the session takes every
queued one without a checkpoint each (``receive_nowait``, and a run of upload frames in one
call, ``receive_frames_nowait``), so a burst of upload frames is applied as one batch, and
the socket is not read while the session is behind.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import attrs
import trio

from ..config import ServerConfig
from ._budget import client_frame_size
from ._replay import Delivery, ReplayStream

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TIMEOUT",
    "CLOSE_TRY_AGAIN_LATER",
    "Connection",
    "ConnectionClosed",
    "Handler",
    "SendHelpers",
    "Transport",
    "TransportOptions",
    "first_supported",
    "make_transport",
    "run_handler",
    "take_frames",
]

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

    def receive_frames_nowait(self, max_bytes: int, max_count: int) -> list[bytes]:
        """The binary messages (upload frames) queued at the head of the queue, in order,
        taken in one call: while fewer than ``max_bytes`` bytes and ``max_count`` frames
        are taken. A text message (or a failure) ends the run and stays queued for
        :meth:`receive_nowait`. One call and one release of the receive budget for the lot:
        with 4 KiB frames a read brings 64 of them, and per-frame calls cost more than
        the rest of their way to the disk."""
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

    @property
    def writes_frames(self) -> bool:
        """Whether :meth:`send_frames_nowait` can ever write (the connection's frames are
        plain RFC 6455 frames on a socket of its own): a live stream's followers then share
        one frame per piece (:mod:`._encoders`)."""
        ...

    def send_frames_nowait(self, *parts: bytes | memoryview) -> Delivery:
        """Write ``parts``, whole binary frames built elsewhere (header, payload, ...), as
        :meth:`send_nowait` writes the frames it builds."""
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


async def run_handler(
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


_Q = TypeVar("_Q")


def take_frames(
    queue: collections.deque[_Q], max_bytes: int, max_count: int
) -> tuple[list[bytes], int]:
    """The binary messages at the head of ``queue``, popped while fewer than ``max_bytes``
    bytes and ``max_count`` frames are taken (what
    :meth:`Connection.receive_frames_nowait` hands over), and the bytes they took on the
    wire (for the receive budget)."""
    frames: list[bytes] = []
    taken = wire = 0
    while queue and taken < max_bytes and len(frames) < max_count:
        item = queue[0]
        if not isinstance(item, bytes):  # text, or a failure: it stays for receive_nowait
            break
        queue.popleft()
        frames.append(item)
        size = len(item)
        taken += size
        wire += client_frame_size(size)
    return frames, wire


def first_supported(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    return next((name for name in offered if name in supported), None)


@attrs.define(eq=False, kw_only=True)
class SendHelpers:
    """What both library adapters share: sends of one message through ``send_many`` and the
    input-idle hook on the :class:`ReplayStream` they read through."""

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


def make_transport(config: ServerConfig) -> Transport:
    """The transport ``server.transport`` names (imported here: their modules import this
    one for the interface)."""
    options = TransportOptions.from_config(config)
    match config.transport:
        case "websockets":
            from ._ws_sansio import WebsocketsTransport

            return WebsocketsTransport(options)
        case "trio-websocket":
            from ._ws_trio import TrioWebsocketTransport

            return TrioWebsocketTransport(options)
