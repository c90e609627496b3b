"""The Trio client for wire protocol v1 (``docs/protocol.md``).

::

    async with mmstream.client.connect("ws://127.0.0.1:8765") as client:
        await client.create("show-42", content_type="audio/wav")
        await client.append("show-42", pcm_chunks)          # bytes, or an (async) iterable
        await client.finalize("show-42")
        data = await client.read("show-42", 0, 1024)
        async for chunk in await client.tail("show-42"):    # until the stream is finalized
            ...

One background task reads the connection and routes every frame: replies to the request
waiting at the head of the queue (replies come in request order), binary frames to the read
being received or else to the tail, ``ack`` events to the upload window. Writes are pipelined:
an upload keeps up to ``max_in_flight`` unacknowledged bytes on the wire and never waits for
each chunk. Errors the server sends are raised as the matching :mod:`mmstream.errors` class;
a lost connection is :class:`~mmstream.errors.ConnectionFailedError`.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import IO, Any, Final, TypeVar

import attrs
import trio
from typing_extensions import Buffer
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect
from websockets.typing import Subprotocol

from .errors import (
    ChecksumMismatchError,
    ConnectionFailedError,
    InvalidArgumentError,
    MmstreamError,
    OffsetConflictError,
    ProtocolError,
    StreamNotFoundError,
)
from .protocol import (
    DEFAULT_CONTENT_TYPE,
    REPLY_TYPES,
    SUBPROTOCOL,
    Ack,
    Append,
    AppendReply,
    Create,
    Delete,
    End,
    ErrorEvent,
    ErrorReply,
    Finalize,
    Hello,
    HelloReply,
    List,
    ListReply,
    Metadata,
    OkReply,
    Read,
    ReadReply,
    Request,
    Stat,
    StatReply,
    StreamStat,
    Sync,
    Tail,
    TailReply,
    decode_server_message,
    encode_request,
    endpoint_url,
    exception_from_wire,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_URL",
    "Client",
    "Follower",
    "connect",
]

DEFAULT_URL: Final = "ws://127.0.0.1:8765"
DEFAULT_CHUNK_SIZE: Final = 256 * 1024
#: Unacknowledged upload bytes allowed on the wire; several ``ack_bytes`` (1 MiB) so the
#: server's coalesced acks never stall a fast upload.
DEFAULT_MAX_IN_FLIGHT: Final = 8 * 1024 * 1024
#: How much ``upload`` reads from its source per worker-thread call.
_SOURCE_READ_SIZE: Final = 1024 * 1024
#: Frames a follower may buffer before the connection stops reading (TCP backpressure).
_TAIL_BUFFER: Final = 64

_R = TypeVar("_R", bound=OkReply)
Data = Buffer | Iterable[Buffer] | AsyncIterable[Buffer]


@asynccontextmanager
async def connect(
    url: str = DEFAULT_URL,
    *,
    stream: str | None = None,
    token: str | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    max_message_size: int = 64 * 1024 * 1024,
    open_timeout: float = 10.0,
) -> AsyncIterator[Client]:
    """Connect to ``url`` (``ws://host:port``); with ``stream``, to the endpoint bound to it,
    where every method's ``stream`` argument may be omitted. ``token`` is sent in ``hello``."""
    try:
        target = endpoint_url(url, stream)
    except InvalidArgumentError:
        raise  # an invalid stream id, as such
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
    async with AsyncExitStack() as stack:
        try:
            ws = await stack.enter_async_context(
                ws_connect(
                    target,
                    subprotocols=[Subprotocol(SUBPROTOCOL)],
                    compression=None,
                    proxy=None,
                    max_size=max_message_size,
                    open_timeout=open_timeout,
                    user_agent_header=None,
                )
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ConnectionFailedError(f"cannot connect to {target}: {_reason(exc)}") from None
        try:
            async with trio.open_nursery() as nursery:
                client = Client(ws, url=target, stream=stream, max_in_flight=max_in_flight)
                nursery.start_soon(client.run_receiver)
                try:
                    if token is not None:
                        await client.hello(token)
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await ws.aclose()
        except BaseExceptionGroup as group:
            # The nursery is ours, not the caller's: let `except StreamNotFoundError` work.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


def _reason(exc: BaseException) -> str:
    match exc:
        case InvalidStatus():
            return f"HTTP {exc.response.status_code} (is this an mmstream v1 server?)"
        case InvalidURI():
            return "invalid URL"
        case ConnectionRefusedError():
            return "connection refused (is the server running?)"
        case TimeoutError():
            return "timed out"
        case OSError() if exc.strerror:
            return exc.strerror
        case OSError() if isinstance(exc.__cause__, OSError | BaseExceptionGroup):
            # trio's "all attempts to connect failed" keeps the real reasons in its cause.
            return _reason(_first_leaf(exc.__cause__))
    return str(exc) or type(exc).__name__


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@attrs.define(eq=False)
class _Pending:
    """A request waiting for its reply (and, for a read, for its bytes)."""

    request: Request
    expect: type[OkReply]
    done: trio.Event = attrs.Factory(trio.Event)
    reply: OkReply | None = None
    error: MmstreamError | None = None
    data: bytearray = attrs.Factory(bytearray)
    remaining: int = 0


class Client:
    """One connection. Use :func:`connect`; every method may be called from several tasks."""

    def __init__(
        self, ws: ClientConnection, *, url: str, stream: str | None, max_in_flight: int
    ) -> None:
        if max_in_flight < 1:
            raise InvalidArgumentError("max_in_flight must be at least 1")
        self.url = url
        #: The stream bound by the URL, if any.
        self.stream = stream
        self.server_info: HelloReply | None = None
        self._ws = ws
        self._max_in_flight = max_in_flight
        self._next_id = 0
        self._send_lock = trio.Lock()
        self._upload_lock = trio.Lock()
        self._pending: deque[_Pending] = deque()
        self._reads: deque[_Pending] = deque()
        self._tail: trio.MemorySendChannel[bytes | End] | None = None
        self._failure: MmstreamError | None = None
        self._progress = trio.Event()
        self._upload_stream: str | None = None
        self._upload_error: MmstreamError | None = None
        self._acked = 0

    @property
    def acknowledged(self) -> int:
        """The size of the stream being uploaded as the server last acknowledged it (its
        written offset): a crash of the server keeps at least this much (protocol.md §9)."""
        return self._acked

    # ---------------------------------------------------------------- operations

    async def hello(self, token: str | None = None) -> HelloReply:
        reply = await self._call(Hello(token=token), HelloReply)
        self.server_info = reply
        return reply

    async def create(
        self,
        stream: str | None = None,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        size_hint: int | None = None,
    ) -> StreamStat:
        """``size_hint``: the size the stream will likely reach, if known (a file's, a
        clip's); the server then reserves no more than that up front."""
        request = Create(
            stream=stream,
            content_type=content_type,
            metadata=metadata or {},
            size_hint=size_hint,
        )
        return (await self._call(request, StatReply)).stat

    async def stat(self, stream: str | None = None) -> StreamStat:
        return (await self._call(Stat(stream=stream), StatReply)).stat

    async def list(self) -> list[StreamStat]:
        reply = await self._call(List(), ListReply)
        return sorted(reply.streams, key=lambda s: s.stream)

    async def delete(self, stream: str | None = None) -> None:
        await self._call(Delete(stream=stream), OkReply)

    async def set_title(self, title: str, stream: str | None = None) -> StreamStat:
        """Set a live stream's current title: its ICY listeners hear it in their next
        metadata block, and ``stat`` records where it began."""
        return (await self._call(Metadata(stream=stream, title=title), StatReply)).stat

    async def sync(self, stream: str | None = None) -> StreamStat:
        """Every byte sent so far is written and durable (survives power loss)."""
        stat = (await self._call(Sync(stream=stream), StatReply)).stat
        self._raise_upload_error(stat.stream)
        return stat

    async def finalize(
        self, stream: str | None = None, *, size: int | None = None, sha256: str | None = None
    ) -> StreamStat:
        """Mark the stream complete; the server checks ``size``/``sha256`` when given."""
        stat = (await self._call(Finalize(stream=stream, size=size, sha256=sha256), StatReply)).stat
        self._raise_upload_error(stat.stream)
        return stat

    async def read(
        self,
        stream: str | None = None,
        offset: int = 0,
        length: int | None = None,
        *,
        generation: str | None = None,
    ) -> bytes:
        """Bytes ``[offset, offset+length)``, clamped to what is written (``None``: to the end).
        With ``generation`` (a :meth:`stat`'s), only from that stream: if the id was deleted
        and created again since, :class:`~mmstream.errors.StreamChangedError`."""
        request = Read(stream=stream, offset=offset, length=length, generation=generation)
        pending = await self._submit(request)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return bytes(pending.data)

    async def offset_at(self, stream: str | None, seconds: float) -> int:
        """The offset a decoder can start at for ``seconds`` of media (negative: back from
        the end): a ``read`` of nothing from that time."""
        reply = await self._call(Read(stream=stream, length=0, time=seconds), ReadReply)
        return reply.offset

    async def tail(
        self,
        stream: str | None = None,
        offset: int | None = 0,
        *,
        live: bool = False,
        time: float | None = None,
    ) -> Follower:
        """Follow a stream from ``offset`` (``None``: from its live edge): iterate the result
        for its bytes as they are written; the iteration ends when the stream is finalized.
        ``live`` joins as a player does: the stream's header first (``Follower.header``
        bytes), then from a decoder start point shortly before the live edge; ``time``
        (media seconds, negative: back from the end) the same way, from that time."""
        if self._tail is not None:
            raise InvalidArgumentError("this connection already follows a stream")
        send, receive = trio.open_memory_channel[bytes | End](_TAIL_BUFFER)
        # Set before the request goes out: the frames follow the reply without a gap.
        self._tail = send
        try:
            start = None if live or time is not None else offset
            request = Tail(stream=stream, offset=start, live=live, time=time)
            reply = await self._call(request, TailReply)
        except BaseException:
            self._tail = None
            raise
        return Follower(self, reply.stream, reply.offset, receive, header=reply.header)

    async def append(
        self,
        stream: str | None,
        data: Data,
        *,
        offset: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Upload ``data`` to the end of ``stream`` and return its size once every byte is
        acknowledged. ``offset`` (the size the caller believes the stream has) makes a
        mismatch an :class:`~mmstream.errors.OffsetConflictError` carrying the real size.
        ``progress`` is called with the stream's size after each chunk is sent.

        The data follows the ``append`` request without waiting for its reply (the server
        drops the frames of an ``append`` that failed, and the reply's error is raised): a
        short upload costs one round trip less."""
        async with self._upload_lock:
            pending, sent = await self._send_upload(stream, data, offset, chunk_size, progress)
            return await self._acknowledged(await self._bound(pending) + sent)

    async def _send_upload(
        self,
        stream: str | None,
        data: Data,
        offset: int | None,
        chunk_size: int,
        progress: Callable[[int], None] | None,
    ) -> tuple[_Pending, int]:
        """Send ``append`` and the data behind it (under the upload lock); the ``append``
        request and the number of bytes sent."""
        self._upload_stream = None
        self._upload_error = None
        pending = await self._submit(Append(stream=stream, offset=offset))
        if offset is None and progress is not None:
            offset = await self._bound(pending)  # progress reports sizes from the start
        sent = 0
        async for chunk in _chunks(data, chunk_size):
            while True:
                if pending.done.is_set():
                    if await self._bound(pending) + sent - self._acked < self._max_in_flight:
                        break
                    await self._wait_for_progress()
                elif sent < self._max_in_flight:
                    break
                else:
                    await pending.done.wait()
            self._check_upload()
            await self._send(chunk)
            sent += len(chunk)
            if progress is not None and offset is not None:
                progress(offset + sent)
        return pending, sent

    async def _acknowledged(self, end: int) -> int:
        while self._acked < end:
            await self._wait_for_progress()
        return end

    async def _bound(self, pending: _Pending) -> int:
        """The offset the ``append`` request ``pending`` bound the upload at (its reply's);
        raises its error."""
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert isinstance(pending.reply, AppendReply), pending.reply
        return pending.reply.offset

    async def upload(
        self,
        stream: str | None,
        source: IO[bytes] | Buffer,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        resume: bool = False,
        finalize: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: Callable[[int], None] | None = None,
        size_hint: int | None = None,
    ) -> StreamStat:
        """Create ``stream`` and upload ``source`` (a binary file, a pipe, or bytes), then
        finalize it with the size and sha256 computed on the way. ``size_hint`` is passed
        to :meth:`create` (bytes given as ``source`` are their own hint).

        With ``resume``, an existing stream is continued from its size on the server: a
        seekable source is repositioned, a pipe skips that many bytes (hashing them), and an
        ``offset-conflict`` (someone's bytes landed meanwhile) continues from the real size.
        """
        if size_hint is None and isinstance(source, Buffer):
            size_hint = memoryview(source).nbytes
        reader = _Source(source, chunk_size)
        start = 0
        try:
            stat = await self.create(
                stream, content_type=content_type, metadata=metadata, size_hint=size_hint
            )
        except MmstreamError as exc:
            if not (resume and exc.code == "exists"):
                raise
            stat = await self.stat(stream)
            if stat.status == "ready":
                return await self._check_complete(stat, reader)
            start = stat.size
        for attempt in range(4):
            await reader.seek(start)
            try:
                return await self._upload_from(stat.stream, reader, start, chunk_size,
                                               progress, finalize=finalize)  # fmt: skip
            except OffsetConflictError as exc:
                if not resume or attempt == 3 or exc.actual < 0:
                    raise
                start = exc.actual
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _upload_from(
        self,
        stream: str,
        reader: _Source,
        start: int,
        chunk_size: int,
        progress: Callable[[int], None] | None,
        *,
        finalize: bool,
    ) -> StreamStat:
        """``append`` from ``start`` and, with ``finalize``, the ``finalize`` right behind
        the data: its reply counts as the acknowledgement, so a clip is one round trip
        after ``create``. Safe to send unconfirmed: it carries the size and sha256 of what
        was sent, so it cannot finalize anything else (a failed ``append`` or write makes
        it fail, and that first failure is raised)."""
        async with self._upload_lock:
            chunks = reader.chunks()
            pending, sent = await self._send_upload(stream, chunks, start, chunk_size, progress)
            if not finalize:
                await self._acknowledged(await self._bound(pending) + sent)
                closing = None
            else:
                request = Finalize(stream=stream, size=start + sent, sha256=reader.hexdigest())
                closing = await self._submit(request)
                await self._bound(pending)
        if closing is None:
            return await self.stat(stream)
        await closing.done.wait()
        self._raise_upload_error(stream)
        if closing.error is not None:
            raise closing.error
        assert isinstance(closing.reply, StatReply), closing.reply
        return closing.reply.stat

    async def _check_complete(self, stat: StreamStat, reader: _Source) -> StreamStat:
        async for _ in reader.chunks():
            pass
        if reader.position != stat.size or reader.hexdigest() != stat.sha256:
            raise ChecksumMismatchError(
                f"stream {stat.stream!r} is already complete and differs from the source"
            )
        return stat

    # ---------------------------------------------------------------- plumbing

    async def _call(self, request: Request, expect: type[_R]) -> _R:
        pending = await self._submit(request)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert isinstance(pending.reply, expect), pending.reply
        return pending.reply

    async def _submit(self, request: Request) -> _Pending:
        self.raise_if_failed()
        self._next_id += 1
        request = attrs.evolve(request, id=self._next_id)
        pending = _Pending(request, REPLY_TYPES[type(request)])
        async with self._send_lock:  # queue order == wire order
            self._pending.append(pending)
            await self._send(encode_request(request))
        return pending

    async def _send(self, message: str | memoryview) -> None:
        self.raise_if_failed()
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise self._fail(_closed(exc)) from None

    def raise_if_failed(self) -> None:
        """Raise the error that ended the connection, if one did."""
        if self._failure is not None:
            raise self._failure

    def _raise_upload_error(self, stream: str) -> None:
        self.raise_if_failed()
        if self._upload_error is not None and self._upload_stream == stream:
            raise self._upload_error

    def _check_upload(self) -> None:
        """Raise what ended the connection, or the running upload."""
        self.raise_if_failed()
        if self._upload_error is not None:
            raise self._upload_error

    async def _wait_for_progress(self) -> None:
        event = self._progress
        self._check_upload()
        await event.wait()

    def _pulse(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _fail(self, exc: MmstreamError) -> MmstreamError:
        """The connection is unusable: wake and fail everything still waiting."""
        if self._failure is None:
            self._failure = exc
            for pending in (*self._pending, *self._reads):
                pending.error = exc
                pending.done.set()
            self._pending.clear()
            self._reads.clear()
            if self._tail is not None:
                self._tail.close()
            self._pulse()
        return self._failure

    async def run_receiver(self) -> None:
        """The task :func:`connect` runs beside every client: it routes replies, acks,
        events and tail frames to whoever waits for them (not to be called otherwise)."""
        try:
            while True:
                message = await self._ws.recv()
                if isinstance(message, str):
                    await self._on_text(message)
                else:
                    await self._on_binary(message)
        except ConnectionClosed as exc:
            self._fail(_closed(exc))
        except MmstreamError as exc:  # the server broke the protocol
            self._fail(ProtocolError(f"server broke the protocol: {exc}"))
            await self._ws.aclose(1002)

    async def _on_text(self, text: str) -> None:
        head = self._pending[0] if self._pending else None
        message = decode_server_message(text, expect=head.expect if head else None)
        match message:
            case Ack(stream=stream, offset=offset):
                if stream == self._upload_stream and offset > self._acked:
                    self._acked = offset
                    self._pulse()
            case End():
                if self._tail is not None:
                    await self._to_follower(message)
                    self._tail = None
            case ErrorEvent(stream=stream):
                if stream is None or stream == self._upload_stream:
                    self._upload_error = exception_from_wire(message)
                    self._pulse()
            case ErrorReply() | OkReply():
                if head is None or message.re != head.request.id:
                    raise ProtocolError(f"reply {message.re!r} answers no request")
                self._pending.popleft()
                if isinstance(message, ErrorReply):
                    head.error = exception_from_wire(message)
                    head.done.set()
                elif isinstance(message, ReadReply) and message.length > 0:
                    head.reply, head.remaining = message, message.length
                    self._reads.append(head)
                else:
                    if isinstance(message, AppendReply):
                        # Set here, before the acks that follow the reply are read.
                        self._upload_stream, self._acked = message.stream, message.offset
                    head.reply = message
                    head.done.set()

    async def _on_binary(self, data: bytes) -> None:
        if self._reads:
            pending = self._reads[0]
            if len(data) > pending.remaining:
                raise ProtocolError("a read frame runs past the length the reply announced")
            pending.data += data
            pending.remaining -= len(data)
            if not pending.remaining:
                self._reads.popleft()
                pending.done.set()
        elif self._tail is not None:
            await self._to_follower(data)
        # else: frames of a tail whose follower went away; dropped.

    async def _to_follower(self, item: bytes | End) -> None:
        assert self._tail is not None
        try:
            await self._tail.send(item)
        except trio.BrokenResourceError:  # the follower stopped iterating
            self._tail = None


def _closed(exc: ConnectionClosed) -> ConnectionFailedError:
    close = exc.rcvd or exc.sent
    if close is None:
        return ConnectionFailedError("connection lost")
    reason = f": {close.reason}" if close.reason else ""
    return ConnectionFailedError(f"connection closed ({close.code}{reason})")


class Follower:
    """The bytes of a followed stream, as an async iterator of chunks.

    After the iteration ends, ``end`` is the server's ``end`` event (final size, digest).
    A stream that was deleted or failed while followed raises instead of ending quietly.
    """

    def __init__(
        self,
        client: Client,
        stream: str,
        offset: int,
        channel: trio.MemoryReceiveChannel[bytes | End],
        *,
        header: int = 0,
    ) -> None:
        self.stream = stream
        self.offset = offset
        #: Bytes of the stream's header that come first (a live tail), before ``offset``'s.
        self.header = header
        self.end: End | None = None
        self._client = client
        self._channel = channel

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        async with self._channel:
            async for item in self._channel:
                if isinstance(item, End):
                    self.end = item
                    break
                yield item
            else:
                self._client.raise_if_failed()
                raise ProtocolError("the tail ended without an end message")
        match self.end.status:
            case "ready":
                return
            case "deleted":
                raise StreamNotFoundError(f"stream {self.stream!r} was deleted while followed")
            case status:
                raise MmstreamError(f"stream {self.stream!r} ended with status {status!r}")


async def _chunks(data: Data, chunk_size: int) -> AsyncIterator[memoryview]:
    """Any data the client accepts, as chunks of at most ``chunk_size`` bytes."""
    if isinstance(data, Buffer):
        for piece in _split(data, chunk_size):
            yield piece
        return
    if isinstance(data, AsyncIterable):
        async for item in data:
            for piece in _split(item, chunk_size):
                yield piece
        return
    for item in data:
        for piece in _split(item, chunk_size):
            yield piece


def _split(item: Buffer, chunk_size: int) -> Iterable[memoryview]:
    view = memoryview(item).cast("B")
    if len(view) <= chunk_size:
        return (view,) if len(view) else ()
    return (view[start : start + chunk_size] for start in range(0, len(view), chunk_size))


class _Source:
    """What ``upload`` reads: a file, a pipe or bytes, hashed as it goes. Reads run in a
    worker thread (a pipe blocks until the recorder writes), taking whatever is available
    so a live pipe is streamed as it arrives."""

    def __init__(self, source: IO[bytes] | Buffer, chunk_size: int) -> None:
        if isinstance(source, Buffer):
            import io

            source = io.BytesIO(bytes(source))
        self._file: IO[bytes] = source
        self._read: Callable[[int], bytes] = getattr(source, "read1", source.read)
        # One worker-thread round trip per read: read a few chunks' worth at a time (a pipe
        # still returns as soon as anything is available); append() splits them into frames.
        self._read_size = max(chunk_size, _SOURCE_READ_SIZE)
        self._hash: Any = hashlib.sha256()
        self.position = 0

    def hexdigest(self) -> str:
        return str(self._hash.hexdigest())

    async def seek(self, offset: int) -> None:
        """Continue from ``offset``, with the hash of every byte before it."""
        if offset < self.position:
            if not self._seekable():
                raise InvalidArgumentError(
                    f"cannot go back to byte {offset} of a pipe (already at {self.position})"
                )
            await trio.to_thread.run_sync(self._file.seek, 0)
            self._hash, self.position = hashlib.sha256(), 0
        while self.position < offset:
            if not await self.read(min(self._read_size, offset - self.position)):
                raise InvalidArgumentError(
                    f"the source has {self.position} bytes, fewer than the {offset} "
                    "already on the server"
                )

    def _seekable(self) -> bool:
        try:
            return bool(self._file.seekable())
        except (AttributeError, ValueError):
            return False

    async def read(self, size: int) -> bytes:
        return await trio.to_thread.run_sync(self._read_and_hash, size)

    def _read_and_hash(self, size: int) -> bytes:
        data = self._read(size)
        self._hash.update(data)
        self.position += len(data)
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        while data := await self.read(self._read_size):
            yield data
