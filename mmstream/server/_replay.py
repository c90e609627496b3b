"""The stream a WebSocket library is driven over: it replays the request head the front door
already read, reads the socket cheaply, and lets the server write ready-made frames (acks,
replies, a live stream's pieces) without a task switch.

The front door must read a request head to decide between plain HTTP and a WebSocket
upgrade; the WebSocket libraries then want to parse that same head themselves. Rather than
reach into their internals, we give them a stream that replays those bytes before reading
the socket again.

It also sets how much a read asks the socket for when the library does not say (websockets
never does): ``server.receive_buffer_size`` rather than Trio's 64 KiB, so that a 64 KiB
upload frame, with its header, does not take two reads. And it reads a plain socket itself,
waiting first when the last read came back short: Trio's stream tries the read first, which
on a real-time upload (one small frame now and then) fails every time, and then passes
through the scheduler once more after the read that succeeds. It reads into one buffer per
thread and copies out what came: asking ``recv`` for 256 KiB makes the allocator map 256 KiB,
shrink and unmap it on every read (three system calls, about 24 µs, for a 4 KiB frame). The
``websockets`` transport, whose protocol copies what it is given at once, takes a read that
fills the buffer as the buffer itself (:meth:`ReplayStream.receive_shared`): no object per
read at all.

Every byte the library sends goes through :meth:`ReplayStream.send_all`, so this is also
the one place that knows whether a send is in progress. :meth:`ReplayStream.send_nowait`
writes whole WebSocket frames built elsewhere (an ack, a reply and its data, one frame built
once for every follower of a live stream) straight to the socket when none is; what the socket does not take at once
is kept and sent before anything else, so frames never interleave.

Being the reader's way to the socket, it is also the one place that knows when the reader has
handed on everything it read and goes back to wait for more: it calls :attr:`ReplayStream.on_idle`
then, which is when a session acknowledges an upload that went quiet (docs/protocol.md §5).
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Callable

import trio

from .._locks import acquire
from ._budget import Account

__all__ = ["Delivery", "ReplayStream"]


class Delivery(enum.Enum):
    """What :meth:`ReplayStream.send_nowait` did with a frame."""

    #: All of it is on the socket.
    SENT = "sent"
    #: The socket took part of it; the rest is sent before anything else (``flush``).
    STARTED = "started"
    #: Nothing was written: another send is in progress, a remainder is still owed, or the
    #: socket is full or broken (the ordinary awaited path finds out which).
    REFUSED = "refused"


_buffers = threading.local()
#: Read buffers of distinct sizes a thread keeps at most.
_READ_BUFFERS = 4


def _read_buffer(size: int) -> bytearray:
    """This thread's buffer for socket reads of ``size`` bytes (reads are copied out of it,
    or handed to a caller that copies them, before the reading task yields, so the
    connections of one event loop share it). One per size: the server reads with one or
    two (``server.receive_buffer_size``, a library's own); a few more are kept at most."""
    buffers: dict[int, bytearray] | None = getattr(_buffers, "by_size", None)
    if buffers is None:
        buffers = _buffers.by_size = {}
    buffer = buffers.get(size)
    if buffer is None:
        if len(buffers) >= _READ_BUFFERS:
            buffers.clear()
        buffer = buffers[size] = bytearray(size)
    return buffer


class ReplayStream(trio.abc.HalfCloseableStream):
    """The front door's socket as the WebSocket transport reads and writes it (see the module
    docstring): the request head replayed first, budgeted reads, writes without a task switch."""

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        prefix: bytes,
        *,
        receive_size: int | None = None,
        account: Account | None = None,
    ) -> None:
        self.transport_stream = stream
        #: The connection's share of the server's receive budget: every socket read is
        #: charged to it and waits while it has no room (:mod:`._budget`).
        self.account = account
        self._prefix = memoryview(prefix) if prefix else None
        self._receive_size = receive_size
        #: The socket under ``stream`` when it is a plain one (None: go through ``stream``).
        self._socket: trio.socket.SocketType | None = getattr(stream, "socket", None)
        #: Whether the last read filled its buffer (so more is probably waiting).
        self._read_full = False
        self._send_lock = trio.Lock()
        #: What the socket did not take of the last frame :meth:`send_nowait` wrote.
        self._owed: memoryview | None = None
        #: Called, without awaiting, each time the reader comes back for more with nothing
        #: left over from its last read: the socket was empty at that read (it came back
        #: short) or is empty now.
        self.on_idle: Callable[[], None] | None = None
        #: True from that moment until a read returns bytes again.
        self.idle = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._receive(max_bytes, shared=False)

    async def receive_shared(self) -> bytes | bytearray:
        """As :meth:`receive_some`, except that a read that fills its buffer comes back as
        this thread's read buffer itself, valid until the next read on this thread: for a
        caller that copies it before it yields (``websockets``' ``receive_data`` appends
        it to the protocol's own buffer). A flat-out upload's every read then allocates
        nothing: a fresh 256 KiB object per read kept the C heap growing and shrinking,
        and the fresh pages it faulted in cost more than the copy (docs/performance.md)."""
        return await self._receive(None, shared=True)

    async def _receive(self, max_bytes: int | None, *, shared: bool) -> bytes | bytearray:
        if self._prefix is None:
            if max_bytes is None:
                max_bytes = self._receive_size
            if self._socket is None or max_bytes is None:
                if self.account is not None:
                    max_bytes = await self._room(max_bytes)
                self._went_idle()  # no way to tell whether more is waiting: say so each time
                data = await self.transport_stream.receive_some(max_bytes)
                self.idle = False
                self._charge(len(data))
                return data
            return await self._receive_from_socket(self._socket, max_bytes, shared)
        await trio.lowlevel.checkpoint()
        size = len(self._prefix) if max_bytes is None else max_bytes
        chunk = bytes(self._prefix[:size])
        rest = self._prefix[size:]
        self._prefix = rest if len(rest) else None
        return chunk

    async def _receive_from_socket(
        self, socket: trio.socket.SocketType, size: int, shared: bool
    ) -> bytes | bytearray:
        """What ``socket`` holds, up to ``size`` bytes (``b""`` at its end); ``shared``: as
        :meth:`receive_shared` says."""
        if self._read_full:
            await trio.lowlevel.checkpoint()
        else:
            self._went_idle()
            if socket.fileno() < 0:
                # trio-websocket's reader asks again after the socket was closed: the stream
                # contract's answer, not wait_readable's ValueError on fd -1.
                raise trio.ClosedResourceError("the socket was closed")
            await trio.lowlevel.wait_readable(socket)
        account = self.account
        while True:
            fd = socket.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the socket was closed")
            allowed = size if account is None else min(size, account.allowance())
            if not allowed:
                await self._room(size)  # and read again: the socket may be drained meanwhile
                continue
            buffer = _read_buffer(size)
            try:
                whole = allowed == size
                count = os.readv(fd, [buffer if whole else memoryview(buffer)[:allowed]])
            except BlockingIOError:
                self._went_idle()
                await trio.lowlevel.wait_readable(socket)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket read failed: {exc}") from exc
            self._read_full = count == allowed
            self.idle = False
            self._charge(count)
            if shared and whole and count == allowed:
                return buffer
            return bytes(memoryview(buffer)[:count])

    def _went_idle(self) -> None:
        self.idle = True
        if self.on_idle is not None:
            self.on_idle()

    async def _room(self, size: int | None) -> int | None:
        """Wait until the account lets this connection receive; how much it may."""
        account = self.account
        if account is None:
            return size
        while not (allowed := account.allowance()):
            if account.closed:
                raise trio.ClosedResourceError("the connection ended")
            room = trio.Event()
            account.wait_for_room(room.set)
            try:
                await room.wait()
            finally:
                account.stop_waiting()
        return allowed if size is None else min(size, allowed)

    def _charge(self, size: int) -> None:
        if self.account is not None:
            self.account.charge(size)

    def consumed(self, wire: int, *, queue_empty: bool) -> None:
        """Whole client frames of ``wire`` bytes, headers included
        (:func:`~._budget.client_frame_size`), are no longer held: the session took their
        messages (a batch of upload frames at once), or the library handled them (pings).
        What such releases miss (the extra headers of a fragmented message; pings a library answers
        unseen) is settled when nothing is queued and the last read emptied the socket: the
        account goes to zero (what goes uncounted then is at most the start of a frame that
        last read brought)."""
        account = self.account
        if account is None:
            return
        if queue_empty and not self._read_full:
            account.release(account.held)
        else:
            account.release(wire)

    def send_nowait(self, first: bytes | memoryview, *more: bytes | memoryview) -> Delivery:
        """Write ``first`` and ``more`` (whole WebSocket frames, or a frame's header and its
        payload) now, in one system call, if nothing else is being sent."""
        if self._socket is None or self._owed is not None or self._send_lock.locked():
            return Delivery.REFUSED
        fd = self._socket.fileno()
        if fd < 0:
            return Delivery.REFUSED
        parts = (first, *more)
        try:
            sent = os.writev(fd, parts) if more else os.write(fd, first)
        except OSError:  # full (BlockingIOError) or broken: nothing was written
            return Delivery.REFUSED
        if sent == sum(len(part) for part in parts):
            return Delivery.SENT
        whole = b"".join(parts) if more else bytes(first)  # never a view of a caller's buffer
        self._owed = memoryview(whole)[sent:]
        return Delivery.STARTED

    async def flush(self) -> None:
        """Send what :meth:`send_nowait` still owes, if anything."""
        if self._owed is not None:
            await self.send_all(b"")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        lock = self._send_lock
        await acquire(lock)
        try:
            if self._owed is not None:
                owed, self._owed = self._owed, None
                await self.transport_stream.send_all(owed)
                if not data:
                    return
            await self.transport_stream.send_all(data)
        finally:
            lock.release()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.transport_stream.send_eof()

    async def aclose(self) -> None:
        self._prefix = None
        if self.account is not None:
            self.account.close()  # a read waiting for room ends (ClosedResourceError)
        await self.transport_stream.aclose()
