"""One WebSocket connection speaking protocol v1 (``docs/protocol.md``): the thin Trio driver
of the sans-I/O :class:`~mmstream.protocol.session.SessionCore`.

The driver reads whole messages from the connection in order, feeds them to the core and
applies the actions it answers: it sends replies and events, calls the
:class:`~mmstream.streams.StreamManager` for the requests the core hands it (and reports the
result back for the reply), holds the upload binding's writer lease, and stops taking messages
when the core says so. Every decision (who the client is, the binding, which error answers
what, when an ack is due, the deadlines and close codes) is the core's, tested without
sockets; what stays here is moving bytes: taking a burst of upload frames as one batch (one
``append_many`` call, the one way an upload frame reaches the disk), sending the frames of a
``read`` and the task of a ``tail``.

When the disk is slower than the client, the driver falls behind, the socket is not read and
TCP slows the client down. A client that vanishes mid-upload loses only what was not applied:
every frame already received is written, and the stream stays UPLOADING for the client to
resume.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import attrs
import trio

from .. import __version__
from .._locks import holding
from ..auth import Authorizer
from ..config import AuthConfig, ServerConfig
from ..errors import (
    CacheClosedError,
    InvalidArgumentError,
    MmstreamError,
    OutOfRangeError,
    StreamNotFoundError,
)
from ..logs import log_context
from ..metrics import Metrics
from ..protocol import (
    Ack,
    Append,
    AppendReply,
    Create,
    Delete,
    End,
    ErrorEvent,
    ErrorReply,
    Event,
    Finalize,
    List,
    Metadata,
    Read,
    ReadReply,
    Reply,
    Request,
    Stat,
    Sync,
    Tail,
    TailReply,
    encode_ack,
    encode_event,
    encode_reply,
    parse_path,
)
from ..protocol.session import (
    BATCH_FRAMES,
    CLOSE_EVICTED,
    CLOSE_NO_HELLO,
    CLOSE_UNAUTHORIZED,
    Action,
    Apply,
    EndUpload,
    Send,
    SessionCore,
    SessionLimits,
    Stop,
)
from ..streams import StreamInfo, StreamManager, StreamStatus, WriterLease
from ._admission import Slot
from ._encoders import Parts, Plain, WebSocketFrames
from ._fanout import FanoutHub, Listener, ListenerState
from ._frontdoor import SessionHandler
from ._replay import Delivery
from ._source_titles import SourceTitles, UploadTitles
from ._transports import Connection, ConnectionClosed

__all__ = ["Session", "connection_handler"]

log = logging.getLogger("mmstream.server")

#: How long a live ``tail`` waits for a new stream's header before starting at the live edge.
LIVE_START_WAIT = 2.0

_M = TypeVar("_M", str, bytes, Sequence[str | bytes])


class Session:
    """The Trio driver of protocol v1 on one WebSocket: it takes messages from the
    :class:`~._transports.Connection`, feeds them to its
    :class:`~mmstream.protocol.session.SessionCore` and applies the actions the core answers,
    in order (see the module docstring)."""

    def __init__(
        self,
        connection: Connection,
        manager: StreamManager,
        config: ServerConfig,
        shutting_down: trio.Event,
        hub: FanoutHub,
        metrics: Metrics | None = None,
        authorizer: Authorizer | None = None,
        slot: Slot | None = None,
        upload_titles: UploadTitles | None = None,
    ) -> None:
        self.connection = connection
        #: The titles in uploads' Ogg streams, read across bindings and connections.
        self.upload_titles = upload_titles or UploadTitles(manager, hub)
        #: The connection's place under the connection caps: idle while the applier waits
        #: for a message and no tail runs (then it may be closed to make room).
        self.slot = slot
        self.hub = hub
        self.metrics = metrics
        self.manager = manager
        self.config = config
        self.shutting_down = shutting_down
        endpoint = parse_path(connection.path)
        #: Every rule of the protocol, without I/O (tested alone).
        self.core = SessionCore(
            SessionLimits.from_config(config, server=f"mmstream {__version__}"),
            authorizer=authorizer if authorizer is not None else Authorizer(AuthConfig()),
            bound=endpoint.stream if endpoint is not None else None,
            opened_at=trio.current_time(),
        )
        #: The bound stream's writer lease, held while the binding lasts.
        self._lease: WriterLease | None = None
        #: The titles in the bound upload's Ogg stream, heard as an Icecast source's are
        #: (the stream's reader in :attr:`upload_titles`).
        self._titles: SourceTitles | None = None
        #: A binding's lease handed over to the ``finalize`` that ended it.
        self._handed: WriterLease | None = None
        #: Held while a read sends its frames, so no tail frame can slip in between them.
        self._binary_lock = trio.Lock()
        self._peer_gone = False
        #: Set when an ack could not be written at once: :meth:`_send_owed_acks` sends it.
        self._ack_owed = trio.Event()

    # -- the tasks -------------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_shutdown)
            nursery.start_soon(self._watch_idle)
            nursery.start_soon(self._watch_hello)
            nursery.start_soon(self._send_owed_acks)
            if self.slot is not None:
                self.slot.evict = lambda: self._stopped(self.core.evicted())
            self.connection.on_input_idle(self._input_idle)
            try:
                await self._apply_all()
            except _Broken as exc:
                self.core.broken(str(exc))
            finally:
                self.connection.on_input_idle(None)
                for lease in (self._lease, self._handed):
                    if lease is not None:  # cancelled before the binding could end
                        lease.release()
            nursery.cancel_scope.cancel()  # the tail and the watchers
        if not self._peer_gone:
            close = self.core.close
            await self.connection.close(close.code, close.reason)

    def _stopped(self, stop: Stop) -> None:
        """The core stopped taking messages: a waiting receive returns at once."""
        close = stop.close
        if close == CLOSE_UNAUTHORIZED:  # the token itself is never logged nor echoed
            log.warning("hello refused conn=%s: no valid token", self.connection.id)
        elif close == CLOSE_NO_HELLO:
            log.info("hello timeout conn=%s", self.connection.id)
        elif close == CLOSE_EVICTED:
            log.info("idle connection closed to make room conn=%s", self.connection.id)
        if self.core.waiting_since is not None:
            self.connection.interrupt_receive()

    async def _watch_shutdown(self) -> None:
        await self.shutting_down.wait()
        self._stopped(self.core.shutdown())

    async def _watch_hello(self) -> None:
        deadline = self.core.hello_deadline()
        if deadline is None:
            return
        await trio.sleep_until(deadline)
        stop = self.core.hello_check()
        if stop is not None:
            self._stopped(stop)

    async def _watch_idle(self) -> None:
        """The idle timeout as a watchdog the core sets, rather than a timeout around each
        receive: a cancel scope per message costs more than everything else done with it."""
        while True:
            check = self.core.idle_check(trio.current_time())
            if isinstance(check, Stop):
                self._stopped(check)
                return
            await trio.sleep_until(check)

    def _mark_activity(self) -> None:
        """Tell the connection caps whether this connection is idle or busy."""
        slot = self.slot
        if slot is None:
            return
        if self.core.idle:
            slot.idle()
        else:
            slot.busy()

    # -- acknowledgements ------------------------------------------------------------------

    async def _acknowledge(self, *, quiet: bool) -> None:
        """Send the ack the core says is due (its one rule), from the applier or the ack
        task: counted when it is on its way, so acks only grow. ``quiet``: no upload frame
        waits or is on its way."""
        ack = self.core.ack_due(trio.current_time(), quiet=quiet)
        if ack is not None:
            self.core.sent(ack)
            await self._send_text(encode_ack(ack.stream, ack.offset))

    def _input_idle(self) -> None:
        """The transport's reader handed on everything it read: if the applier waits with
        nothing to apply, no upload frame is on its way and the upload is quiet (on
        ``websockets`` this runs inside the applier's own receive)."""
        if self.core.waiting_since is not None:
            self._acknowledge_nowait(quiet=True)

    def _acknowledge_nowait(self, *, quiet: bool) -> None:
        """:meth:`_acknowledge` without awaiting (the applier is about to wait, or waits):
        the ack is written straight to the socket or, if the socket is busy, left due for
        :meth:`_send_owed_acks`, which asks the core again when it can send."""
        ack = self.core.ack_due(trio.current_time(), quiet=quiet)
        if ack is None:
            return
        outcome = self._send_nowait(encode_ack(ack.stream, ack.offset))
        if outcome is not Delivery.REFUSED:
            self.core.sent(ack)
        if outcome is not Delivery.SENT:
            self._ack_owed.set()  # the rest of the frame, or the whole ack, is sent there

    async def _send_owed_acks(self) -> None:
        while True:
            await self._ack_owed.wait()
            self._ack_owed = trio.Event()
            if not await self._flush():
                return
            await self._acknowledge(quiet=True)  # what was due is still due: a debt

    # -- messages in -----------------------------------------------------------------------

    async def _next_message(self) -> str | bytes:
        """The next message. Raises :class:`_EndOfInput` at the end of the connection or
        once the core stopped taking messages.

        The messages the transport already holds are taken without a checkpoint: a burst
        of upload frames is applied as one batch. The transport's queue is the bounded
        channel between the socket and this applier: while the applier works it fills,
        the transport stops reading and TCP slows the client down."""
        if not self.core.may_take():
            raise _EndOfInput  # stopped, and the queue's worth it may still apply is spent
        message = self.connection.receive_nowait()
        if message is not None:
            # The one checkpoint of a batch taken without waiting (the manager's append
            # takes a free lock without one): other connections get their turn. Shielded:
            # the message is already taken and must be applied.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        if self.core.stopping:
            raise _EndOfInput
        self._acknowledge_nowait(quiet=self.connection.input_idle)
        self.core.waiting(trio.current_time())
        self._mark_activity()
        try:
            message = await self.connection.receive()
        except ConnectionClosed:
            self._peer_gone = True
            raise _EndOfInput from None
        finally:
            self.core.working()
            self._mark_activity()
        if message is None:  # interrupted: the session is stopping
            raise _EndOfInput
        return message

    async def _apply_all(self) -> None:
        """Apply every message in order."""
        while True:
            try:
                message = await self._next_message()
            except _EndOfInput:
                break
            match message:
                case bytes():
                    await self._append_frames(self._take_frames(message))
                case str():
                    await self._act(self.core.receive_text(message))
        await self._act(self.core.end())

    def _take_frames(self, first: bytes) -> list[bytes]:
        """``first`` and the upload frames the transport holds right behind it, up to the
        batch limit, taken in one call (a text message behind them stays queued)."""
        frames = [first]
        rest = self.core.batch_limit() - len(first)
        if rest > 0:
            frames += self.connection.receive_frames_nowait(rest, BATCH_FRAMES - 1)
        return frames

    # -- actions ---------------------------------------------------------------------------

    async def _act(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(message=message):
                    await self._send_message(message)
                case EndUpload():
                    await self._end_upload(action)
                case Apply(request=request, stream=stream):
                    await self._answer(request, stream)
                case Stop():
                    self._stopped(action)

    async def _end_upload(self, ended: EndUpload) -> None:
        lease, self._lease = self._lease, None
        titles, self._titles = self._titles, None
        if titles is not None and lease is not None:
            with contextlib.suppress(MmstreamError):  # the upload's end is what it reports
                await titles.settle(last=ended.hand_over)  # last: before its finalize
            if ended.hand_over:
                self.upload_titles.ended(ended.stream, lease.generation)
        if ended.ack is not None:  # before what follows the end (an error event, a reply)
            await self._send_text(encode_ack(ended.ack.stream, ended.ack.offset))
        log.info(
            "upload ended conn=%s stream=%s offset=%d (%s)",
            self.connection.id,
            ended.stream,
            ended.offset,
            ended.why,
        )
        if ended.hand_over:
            self._handed = lease
        elif lease is not None:
            lease.release()

    # -- uploads ---------------------------------------------------------------------------

    async def _append_frames(self, frames: list[bytes]) -> None:
        """Append the frames taken together with one manager call (one lock, one wakeup of
        the followers). If it falls short, the frames it did not write are appended again,
        so that the error is reported for the frame that met it, after the acknowledged
        ones before it."""
        upload, lease, titles = self.core.upload, self._lease, self._titles
        if upload is None or lease is None or titles is None:
            await self._act(self.core.unbound_frames())
            return
        while frames:
            try:
                size = await self.manager.append_many(
                    upload.stream, frames, expected_offset=upload.offset, writer=lease
                )
            except MmstreamError as exc:
                await self._act(self.core.write_failed(exc))
                return
            written = size - upload.offset
            self.core.written(size, trio.current_time())
            done = 0
            for frame in frames:
                if written < len(frame):
                    break
                written -= len(frame)
                titles.read(frame)
                done += 1
            del frames[:done]  # one move, not one per frame (a batch holds up to 256)
        try:
            await titles.settle()
        except MmstreamError as exc:
            await self._act(self.core.write_failed(exc))
            return
        await self._acknowledge(quiet=False)

    # -- requests --------------------------------------------------------------------------

    async def _answer(self, request: Request, stream: str | None) -> None:
        """Carry out an allowed request; its reply (or error reply) from the core."""
        try:
            reply = await self._carry_out(request, stream)
        except _Broken:
            raise
        except MmstreamError as exc:
            reply = self.core.failed(request, exc)
        except Exception as exc:
            log.exception("request failed conn=%s op=%s", self.connection.id, request.op)
            reply = self.core.failed(request, exc)
        finally:
            if self._handed is not None:  # a finalize that failed before taking it
                self._handed.release()
                self._handed = None
        if reply is not None:
            await self._send_reply(reply)

    async def _carry_out(self, request: Request, stream: str | None) -> Reply | None:
        """The storage side of ``request``; the reply from the core, or None when it was
        already sent (``read``, ``tail``)."""
        if isinstance(request, List):
            return self.core.listed(request, self.manager.list())
        assert stream is not None  # every other request names (or is bound to) a stream
        if isinstance(request, Read | Tail | Stat | Delete):
            await self.manager.find(stream)  # not here: maybe in the tier (docs/tiering.md)
        match request:
            case Create():
                info = await self.manager.create(
                    stream,
                    content_type=request.content_type,
                    metadata=request.metadata,
                    size_hint=request.size_hint,
                )
                return self.core.stat_reply(request, info)
            case Append():
                return await self._bind(request, stream)
            case Sync():
                return self.core.stat_reply(request, await self.manager.flush(stream))
            case Finalize():
                lease, self._handed = self._handed, None
                try:
                    info = await self.manager.finalize(
                        stream, expected_size=request.size, sha256=request.sha256, writer=lease
                    )
                finally:
                    if lease is not None:
                        lease.release()
                return self.core.stat_reply(request, info)
            case Read():
                await self._read(request, stream)
                return None
            case Tail():
                await self._follow(request, stream)
                return None
            case Stat():
                return self.core.stat_reply(request, self.manager.stat(stream, times=True))
            case Delete():
                await self.manager.delete(stream)
                return self.core.done(request)
            case Metadata():
                await self.hub.set_title(stream, request.title)
                return self.core.stat_reply(request, self.manager.stat(stream))
        raise AssertionError(f"unhandled request {request!r}")

    async def _bind(self, request: Append, stream: str) -> AppendReply:
        lease = self.manager.acquire_writer(stream, f"conn={self.connection.id}")
        try:
            # An empty append checks what a bound upload needs: the stream exists, takes
            # data, and is at the expected offset (else offset-conflict with the real one).
            size = await self.manager.append(
                stream, b"", expected_offset=request.offset, writer=lease
            )
            titles = await self.upload_titles.bound(stream, lease.generation, size)
        except BaseException:
            lease.release()
            raise
        self._lease = lease
        self._titles = titles
        log.info("upload bound conn=%s stream=%s offset=%d", self.connection.id, stream, size)
        return self.core.appended(request, stream, size)

    async def _read(self, request: Read, stream: str) -> None:
        info = self.manager.stat(stream, generation=request.generation)
        if request.time is not None:  # a time: the offset a decoder can start at
            request = attrs.evolve(request, offset=await self.manager.offset_at(
                stream, request.time, generation=info.generation), time=None)  # fmt: skip
        available = max(info.size - request.offset, 0)
        total = available if request.length is None else min(request.length, available)
        piece = self._send_piece
        # The first piece is read before the reply so that its errors are the reply.
        generation = info.generation  # every piece from this stream, never a successor's
        first = await self.manager.read(
            stream, request.offset, min(total, piece), generation=generation
        )
        if len(first) < min(total, piece):  # cannot happen while sizes only grow; be exact
            total = len(first)
        # Held: the stream is not evicted while the frames this reply promises are sent.
        async with holding(self._binary_lock):
            with self.manager.hold(stream, generation=generation):
                # The reply and its first piece go out together: one write, one round trip.
                reply = ReadReply(re=request.id, stream=stream, offset=request.offset, length=total)
                await self._send_reply(reply, first)
                position, end = request.offset + len(first), request.offset + total
                while position < end and not self._peer_gone:
                    try:
                        data = await self.manager.read(
                            stream, position, min(end - position, piece), generation=generation
                        )
                    except MmstreamError as exc:
                        # The reply promised bytes that can no longer be read (the stream was
                        # deleted, replaced or failed): the client cannot tell what follows,
                        # so stop.
                        log.warning(
                            "read broken conn=%s stream=%s: %s", self.connection.id, stream, exc
                        )
                        raise _Broken(f"read of {stream} failed: {exc.code}") from None
                    if not data:
                        raise _Broken(f"read of {stream} came up short")
                    await self._send_bytes(data)
                    position += len(data)

    async def _follow(self, request: Tail, stream: str) -> None:
        info = self.manager.stat(stream, generation=request.generation)
        header = b""
        if request.live:
            if request.offset is not None:
                raise InvalidArgumentError("tail: 'live' picks its own start; give no offset")
            header, offset = await self._live_start(info)
        elif request.time is not None:
            found = await self.manager.seek(
                stream, seconds=request.time, generation=info.generation
            )
            header, offset = found.header, found.offset
        else:
            offset = info.size if request.offset is None else request.offset
        if offset > info.size:
            raise OutOfRangeError(f"offset {offset} is past the end of {stream} ({info.size})")
        self.core.follow_started()
        reply = TailReply(re=request.id, stream=stream, offset=offset, header=len(header))
        await self._send_reply(reply)
        self._nursery.start_soon(self._push, stream, info.generation, offset, header)

    async def _live_start(self, info: StreamInfo) -> tuple[bytes, int]:
        """Header and decoder start point from the stream's broadcaster (the same ones HTTP
        live listeners get); the live edge for a finished stream or an unknown format."""
        if info.status is not StreamStatus.UPLOADING:
            return b"", info.size
        broadcaster = self.hub.get(info.stream_id, info.generation)
        with trio.move_on_after(LIVE_START_WAIT):
            await broadcaster.wait_ready()
        if not broadcaster.ready or broadcaster.ended:
            return b"", self.manager.stat(info.stream_id, generation=info.generation).size
        return broadcaster.start_point()

    async def _push(self, stream: str, generation: str, position: int, header: bytes = b"") -> None:
        """The tail task: the header if any, bytes as they are written (of the stream of
        that ``generation`` only), then ``end``."""
        if self.metrics is not None:
            self.metrics.followers.inc()
        try:
            if header:
                async with holding(self._binary_lock):
                    await self._send_bytes(header)
            end = await self._tail(stream, generation, position)
            if end is not None:
                await self._send_event(end)
        finally:
            if self.metrics is not None:
                self.metrics.followers.dec()
            self.core.follow_ended(trio.current_time())  # idle from the end of the tail
            self._mark_activity()

    async def _tail(self, stream: str, generation: str, position: int) -> End | None:
        """Every byte from ``position``: from the stream's broadcaster while it is live,
        then what the cache holds past it; the ``end`` to send (None: the peer or the
        server is gone)."""
        try:
            info = self.manager.stat(stream, generation=generation)
            if info.status is StreamStatus.UPLOADING:
                reached = await self._follow_live(self.hub, stream, generation, position)
                if reached is None:
                    return None
                position = reached
        except CacheClosedError:
            return None  # the server is shutting down: so is the connection
        except MmstreamError as exc:
            # Deleted, replaced or failed: the manager says which, below.
            log.debug("tail of %s left its broadcaster: %s", stream, exc)
        piece = self._send_piece
        while not self._peer_gone:
            try:
                info = await self.manager.wait_for_data(stream, position, generation=generation)
                if info.size <= position:
                    status, sha256 = info.status.value, info.sha256
                    return End(stream=stream, size=position, status=status, sha256=sha256)
                data = await self.manager.read_shared(
                    stream, position, min(info.size - position, piece), generation=generation
                )
            except CacheClosedError:
                return None
            except StreamNotFoundError:
                return End(stream=stream, size=position, status="deleted")
            except MmstreamError:
                return End(stream=stream, size=position, status="error")
            await self._send_tail_bytes(data)
            if self.metrics is not None and not self._peer_gone:
                self.metrics.bytes_out.labels("websocket").inc(len(data))
            position += len(data)
        return None

    async def _follow_live(
        self, hub: FanoutHub, stream: str, generation: str, position: int
    ) -> int | None:
        """Follow the stream as one of its broadcaster's immediate listeners (every byte
        from ``position``, caught up from the cache when behind); the position reached
        when the stream ended (None: the peer is gone). Where the transport can, the
        broadcaster writes its shared frames straight to the socket; else this task sends."""
        broadcaster = hub.get(stream, generation)
        direct = self.connection.writes_frames
        listener = Listener(
            _FrameWriter(self._send_frames_nowait, self._flush) if direct else None,
            position,
            encoder=WebSocketFrames(self._send_piece) if direct else Plain("websocket"),
            catch_up=True,
            immediate=True,
        )
        try:
            async with contextlib.aclosing(broadcaster.serve(listener)) as pieces:
                async for data in pieces:
                    await self._send_tail_bytes(data)
                    if self._peer_gone:
                        return None
        except CacheClosedError:
            raise
        except MmstreamError as exc:
            # Deleted, replaced or failed: the manager says which (see :meth:`_tail`).
            log.debug("tail of %s left its broadcaster at %d: %s", stream, listener.position, exc)
        return None if listener.state is ListenerState.GONE else listener.position

    async def _send_tail_bytes(self, data: bytes) -> None:
        """Send a tail's bytes as frames of at most :attr:`_send_piece`, no read's frame
        between them (counted in ``bytes_out`` by the caller: the broadcaster counts its
        own)."""
        piece = self._send_piece
        async with holding(self._binary_lock):
            for at in range(0, len(data), piece):
                chunk = data[at : at + piece]
                await self._deliver(self.connection.send_bytes, chunk, chunk)

    @property
    def _send_piece(self) -> int:
        """The largest data frame a read or a tail sends: each is read from the stream
        only once the socket took the one before, so a client that does not read holds
        at most about this much of the server's memory (plus the socket's buffer)."""
        return min(self.config.max_message_size, SEND_PIECE)

    def _send_nowait(self, message: str | bytes) -> Delivery:
        if self._peer_gone or self._binary_lock.locked():
            return Delivery.REFUSED  # a read is sending its frames: no frame in between
        return self.connection.send_nowait(message)

    def _send_frames_nowait(self, parts: Parts) -> Delivery:
        """Write a live stream's shared frames (see :class:`_FrameWriter`)."""
        if self._peer_gone:
            raise BrokenPipeError("the peer is gone")
        if self._binary_lock.locked():
            return Delivery.REFUSED  # a read is sending its frames: no tail frame in between
        return self.connection.send_frames_nowait(*parts)

    # -- sending ---------------------------------------------------------------------------

    async def _send_reply(self, reply: Reply, data: bytes = b"") -> None:
        """Send ``reply``, and ``data`` as a binary frame right behind it if given."""
        if self.metrics is not None and isinstance(reply, ErrorReply):
            self.metrics.errors.labels(reply.code).inc()
        text = encode_reply(reply)
        if not data:
            await self._send_text(text)
            return
        messages: Sequence[str | bytes] = (text, data)
        await self._deliver(self.connection.send_many, messages, *messages)
        if self.metrics is not None and not self._peer_gone:
            self.metrics.bytes_out.labels("websocket").inc(len(data))

    async def _send_message(self, message: Reply | Event) -> None:
        if isinstance(message, Ack | End | ErrorEvent):
            await self._send_event(message)
        else:
            await self._send_reply(message)

    async def _send_event(self, event: Event) -> None:
        if self.metrics is not None and isinstance(event, ErrorEvent):
            self.metrics.errors.labels(event.code).inc()
        await self._send_text(encode_event(event))

    async def _send_text(self, text: str) -> None:
        await self._deliver(self.connection.send_text, text, text)

    async def _send_bytes(self, data: bytes) -> None:
        await self._deliver(self.connection.send_bytes, data, data)
        if self.metrics is not None and not self._peer_gone:
            self.metrics.bytes_out.labels("websocket").inc(len(data))

    async def _deliver(
        self, send: Callable[[_M], Awaitable[None]], message: _M, *parts: str | bytes
    ) -> None:
        """Send, unless the peer is gone: then the applier keeps applying what it
        received (uploads are kept) and only the replies are dropped.

        ``parts`` are ``message``'s messages: framed and written straight to the socket
        when nothing else is being sent (no pass through the scheduler: a ``read``'s round
        trip is mostly those), else ``message`` is sent the ordinary, awaited way."""
        if self._peer_gone:
            return
        outcome = self.connection.send_nowait(*parts)
        if outcome is Delivery.STARTED:
            await self._flush()  # the rest of the frame
        elif outcome is Delivery.REFUSED:
            try:
                await send(message)
            except ConnectionClosed:
                self._peer_gone = True

    async def _flush(self) -> bool:
        """Send what a direct write left owed; False if the peer is gone."""
        try:
            await self.connection.flush()
        except ConnectionClosed:
            self._peer_gone = True
            return False
        return True


@attrs.define(eq=False)
class _FrameWriter:
    """A WebSocket follower's socket, as the broadcaster's rounds write to it: whole
    frames, shared by every follower of the stream (:class:`~._fanout.Writer`)."""

    send: Callable[[Parts], Delivery]
    #: Sends what a frame left owed; False if the peer is gone.
    flush_owed: Callable[[], Awaitable[bool]]
    owes: bool = False

    def write(self, parts: Parts) -> int:
        outcome = self.send(parts)
        if outcome is Delivery.REFUSED:
            raise BlockingIOError("busy: a read's frames, or a frame still owed")
        self.owes = outcome is Delivery.STARTED
        return sum(map(len, parts))

    async def flush(self) -> None:
        self.owes = False
        await self.flush_owed()


#: The largest data frame of a read or a tail (smaller if ``max_message_size`` is).
SEND_PIECE = 256 * 1024


class _Broken(Exception):
    """The connection can no longer be used: a read promised bytes it cannot send."""


class _EndOfInput(Exception):
    """No more messages will be applied: the peer is gone, or the session is stopping."""


def connection_handler(
    manager: StreamManager,
    config: ServerConfig,
    shutting_down: trio.Event,
    hub: FanoutHub,
    metrics: Metrics | None = None,
    authorizer: Authorizer | None = None,
) -> SessionHandler:
    """The handler serving protocol v1 on each connection (given its connection slot)."""

    upload_titles = UploadTitles(manager, hub)

    async def handle(connection: Connection, slot: Slot | None = None) -> None:
        endpoint = parse_path(connection.path)
        with log_context(stream=endpoint.stream if endpoint is not None else None):
            session = Session(
                connection,
                manager,
                config,
                shutting_down,
                hub,
                metrics,
                authorizer,
                slot,
                upload_titles,
            )
            await session.run()

    return handle
