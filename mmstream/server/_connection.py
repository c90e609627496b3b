"""One WebSocket connection speaking protocol v1 (``docs/protocol.md``).

The session's applier takes whole messages from the connection in order (every message
one socket read completed at once), decodes text frames into requests, applies requests and
binary frames through the :class:`~mmstream.streams.StreamManager`, and sends the replies.
The upload frames queued together are applied as one batch, with one ``append_many`` call:
the one way an upload frame reaches the disk. When the disk is slower than the client, the
applier falls behind, the socket is not read and TCP slows the client down. A ``tail`` adds
a task that pushes the followed stream's bytes as they are written.

Errors are replies (or ``error`` events for upload frames) with the stable codes of
:mod:`mmstream.errors`; a bad request never closes the connection. A client that vanishes
mid-upload loses only what was not applied: every frame already received is written, and
the stream stays UPLOADING for the client to resume.
"""

from __future__ import annotations

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
    ProtocolError,
    StreamNotFoundError,
    UnauthorizedError,
)
from ..logs import log_context
from ..metrics import Metrics
from ..protocol import (
    SUBPROTOCOL,
    Append,
    AppendReply,
    Create,
    Delete,
    End,
    ErrorEvent,
    ErrorReply,
    Event,
    Finalize,
    Hello,
    HelloReply,
    List,
    ListReply,
    MalformedRequestError,
    Metadata,
    OkReply,
    Read,
    ReadReply,
    Reply,
    Request,
    Stat,
    StatReply,
    StreamStat,
    Sync,
    Tail,
    TailReply,
    decode_request,
    encode_ack,
    encode_event,
    encode_reply,
    error_event,
    error_reply,
    internal_error_reply,
    parse_path,
)
from ..protocol.session import BATCH_FRAMES, AckTiming, SessionState
from ..streams import StreamInfo, StreamManager, StreamStatus, WriterLease
from ._acks import AckClock
from ._admission import Slot
from ._fanout import FanoutHub
from ._frontdoor import SessionHandler
from ._replay import Delivery
from ._tail import Member
from ._transports import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    Connection,
    ConnectionClosed,
)

__all__ = ["Session", "connection_handler"]

log = logging.getLogger("mmstream.server")

#: How long a live ``tail`` waits for a new stream's header before starting at the live edge.
LIVE_START_WAIT = 2.0

_M = TypeVar("_M", str, bytes, Sequence[str | bytes])


class Session:
    """The Trio driver of protocol v1 on one WebSocket: it takes messages from the
    :class:`~._transports.Connection`, applies them through the
    :class:`~mmstream.streams.StreamManager` in order, and sends replies, events, acks and
    the bytes of reads and tails. The protocol's rules (grant, upload binding, when an ack
    is due, what is applied after a stop) live in its
    :class:`~mmstream.protocol.session.SessionState`, which has no I/O."""

    def __init__(
        self,
        connection: Connection,
        manager: StreamManager,
        config: ServerConfig,
        shutting_down: trio.Event,
        ack_clock: AckClock,
        metrics: Metrics | None = None,
        authorizer: Authorizer | None = None,
        hub: FanoutHub | None = None,
        slot: Slot | None = None,
    ) -> None:
        self.connection = connection
        #: The connection's place under the connection caps: idle while the applier waits
        #: for a message and no tail runs (then it may be closed to make room).
        self.slot = slot
        self.ack_clock = ack_clock
        self.hub = hub
        self.metrics = metrics
        self.manager = manager
        self.config = config
        self.shutting_down = shutting_down
        self.authorizer = authorizer if authorizer is not None else Authorizer(AuthConfig())
        endpoint = parse_path(connection.path)
        #: The stream named by the URL (``/v1/streams/{id}``), None on ``/v1``.
        self.bound = endpoint.stream if endpoint is not None else None
        #: The protocol state: grant, upload binding, acks, stop budget (no I/O, tested alone).
        self.state = SessionState(
            ack_bytes=config.ack_bytes,
            drain=config.request_queue,
            authorizer=self.authorizer,
            bound=self.bound,
        )
        #: The bound stream's writer lease, held while the binding lasts.
        self._lease: WriterLease | None = None
        self._tailing = False
        #: Held while a read sends its frames, so no tail frame can slip in between them.
        self._binary_lock = trio.Lock()
        self._peer_gone = False
        self._close: tuple[int, str] = (CLOSE_NORMAL, "")
        #: Set when the ack clock could not write an ack itself (the socket was busy).
        self._ack_owed = trio.Event()
        #: When the applier began waiting for the client's next message; None while it works.
        self._receiving_since: float | None = None

    # -- the tasks -------------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_shutdown)
            nursery.start_soon(self._watch_idle)
            nursery.start_soon(self._send_owed_acks)
            if self.authorizer.enabled:
                nursery.start_soon(self._watch_hello)
            if self.slot is not None:
                self.slot.evict = self._evicted
            self.connection.on_input_idle(self._input_idle)
            try:
                await self._apply_all()
            except _Broken as exc:
                self._close = (CLOSE_INTERNAL_ERROR, str(exc))
            finally:
                self.connection.on_input_idle(None)
                self.ack_clock.forget(self)
                if self._lease is not None:  # cancelled before it could end: the lease goes
                    self._lease.release()
            nursery.cancel_scope.cancel()  # the tail and the watchers
        if not self._peer_gone:
            await self.connection.close(*self._close)

    def _stop_receiving(self, close: tuple[int, str], *, drain: bool = True) -> None:
        """Take no new message and close with ``close`` afterwards; with ``drain``, what
        the transport already queued is still applied (up to a queue's worth)."""
        self._close = close
        self.state.stop(drain=drain)
        if self._receiving_since is not None:  # the applier waits for a message
            self.connection.interrupt_receive()

    async def _watch_shutdown(self) -> None:
        await self.shutting_down.wait()
        self._stop_receiving((CLOSE_GOING_AWAY, "server shutting down"))

    async def _watch_hello(self) -> None:
        """With access control on, a connection that has not said ``hello`` with a valid
        token within ``handshake_timeout`` is closed: unauthenticated, it could only hold
        a connection slot."""
        await trio.sleep(self.config.handshake_timeout)
        if self.state.grant is None and not self.state.stopping:
            log.info("hello timeout conn=%s", self.connection.id)
            self._stop_receiving((CLOSE_POLICY_VIOLATION, "no hello in time"), drain=False)

    def _evicted(self) -> None:
        """The connection caps closed this idle connection to make room for a newcomer."""
        log.info("idle connection closed to make room conn=%s", self.connection.id)
        self._stop_receiving((CLOSE_TRY_AGAIN_LATER, "server full: idle connection closed"))

    def _mark_activity(self) -> None:
        """Tell the connection caps whether this connection is idle (the applier waits for
        a message and no tail runs) or busy."""
        slot = self.slot
        if slot is None:
            return
        if self._receiving_since is not None and not self._tailing:
            slot.idle()
        else:
            slot.busy()

    async def _watch_idle(self) -> None:
        """Close the connection once the applier has waited ``idle_timeout`` for a message.

        A watchdog rather than a timeout around each receive: a cancel scope per message
        costs more than everything else done with it. An applier busy with a long request
        is not idle, and neither is a follower waiting for data."""
        timeout = self.config.idle_timeout
        while True:
            since = self._receiving_since
            if since is not None and not self._tailing:
                if trio.current_time() >= since + timeout:
                    self._stop_receiving((CLOSE_NORMAL, "idle timeout"))
                    return
                await trio.sleep_until(since + timeout)
            else:
                await trio.sleep(timeout)

    def acknowledge_due(self) -> None:
        """Acknowledge the upload's new bytes with a frame written straight to the socket,
        or, if it is busy, leave the ack to :meth:`_send_owed_acks`: at the ack clock's tick
        while frames keep arriving, and at once when the upload goes quiet."""
        ack = self.state.tick()
        if ack is None:
            return
        outcome = self._send_nowait(encode_ack(ack.stream, ack.offset))
        if outcome is not Delivery.REFUSED:
            self.state.sent(ack)
        if outcome is not Delivery.SENT:
            self._ack_owed.set()  # the rest of the frame, or the whole ack, is sent from there

    def _input_idle(self) -> None:
        """The transport's reader handed on everything it read: if the applier waits with
        nothing to apply, no upload frame is on its way, so what was written is acknowledged
        now rather than at the clock's next tick (a client finishing a clip waits for that
        ack). An applier still busy acknowledges when it comes to wait (:meth:`_next_message`)."""
        if self._receiving_since is not None:
            self.acknowledge_due()

    async def _send_owed_acks(self) -> None:
        while True:
            await self._ack_owed.wait()
            self._ack_owed = trio.Event()
            if not await self._flush():
                return
            await self._acknowledge()

    async def _next_message(self) -> str | bytes:
        """The next message. Raises :class:`_EndOfInput` at the end of the connection, at
        the idle timeout or when the server shuts down.

        The messages the transport already holds are taken without a checkpoint: a burst
        of upload frames is applied as one batch. The transport's queue is the bounded
        channel between the socket and this applier: while the applier works it fills,
        the transport stops reading and TCP slows the client down."""
        if not self.state.may_take():
            raise _EndOfInput  # stopped, and the queue's worth it may still apply is spent
        message = self.connection.receive_nowait()
        if message is not None:
            # The one checkpoint of a batch taken without waiting (the manager's append
            # takes a free lock without one): other connections get their turn. Shielded:
            # the message is already taken and must be applied.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        if self.state.stopping:
            raise _EndOfInput
        if self.connection.input_idle:
            self.acknowledge_due()  # nothing queued, nothing on its way: the upload is quiet
        self._receiving_since = trio.current_time()
        self._mark_activity()
        try:
            message = await self.connection.receive()
        except ConnectionClosed:
            self._peer_gone = True
            raise _EndOfInput from None
        finally:
            self._receiving_since = None
            self._mark_activity()
        if message is None:  # interrupted: the session is stopping
            raise _EndOfInput
        return message

    async def _apply_all(self) -> None:
        """Apply every message in order."""
        held: str | bytes | None = None  # taken while batching upload frames, applied next
        while True:
            message = held
            held = None
            if message is None:
                try:
                    message = await self._next_message()
                except _EndOfInput:
                    break
            match message:
                case bytes():
                    frames, held = self._take_frames(message)
                    await self._append_frames(frames)
                case str():
                    try:
                        request = decode_request(message)
                    except MalformedRequestError as exc:
                        await self._send_reply(error_reply(exc.request_id, exc))
                    else:
                        await self._answer(request)
        await self._end_upload("connection closing")

    def _take_frames(self, first: bytes) -> tuple[list[bytes], str | None]:
        """``first`` and the upload frames the transport holds right behind it, up to the
        batch limit, and the message after them that is not one, if it was taken."""
        frames = [first]
        total, limit = len(first), self.state.batch_limit()
        while total < limit and len(frames) < BATCH_FRAMES:
            message = self.connection.receive_nowait()
            if message is None:
                break
            if isinstance(message, str):
                return frames, message
            frames.append(message)
            total += len(message)
        return frames, None

    # -- uploads ---------------------------------------------------------------------------

    async def _append_frames(self, frames: list[bytes]) -> None:
        """Append the frames taken together with one manager call (one lock, one wakeup of
        the followers). If it falls short, the frames it did not write are appended again,
        so that the error is reported for the frame that met it, after the acknowledged
        ones before it."""
        upload, lease = self.state.upload, self._lease
        if upload is None or lease is None:
            if self.state.unbound_frame():
                problem = ProtocolError("binary frame with no upload bound (send append first)")
                await self._send_event(error_event(None, problem))
            return
        timing = AckTiming.NOTHING
        while frames:
            try:
                size = await self.manager.append_many(
                    upload.stream, frames, expected_offset=upload.offset, writer=lease
                )
            except MmstreamError as exc:
                await self._end_upload(f"failed: {exc.code}")
                self.state.binding_failed()  # the frames behind it are dropped silently
                await self._send_event(error_event(upload.stream, exc))
                return
            written = size - upload.offset
            timing = self.state.written(size)
            while frames and written >= len(frames[0]):
                written -= len(frames.pop(0))
        if timing is AckTiming.NOW:
            await self._acknowledge()
        elif timing is AckTiming.AT_TICK:
            self.ack_clock.due(self)

    async def _acknowledge(self) -> None:
        ack = self.state.take_ack()
        if ack is not None:
            await self._send_text(encode_ack(ack.stream, ack.offset))

    async def _end_upload(self, why: str) -> None:
        lease = await self._unbind(why)
        if lease is not None:
            lease.release()

    async def _unbind(self, why: str) -> WriterLease | None:
        """End the binding (acknowledging what it wrote) and hand back its lease, still held."""
        ended = self.state.unbind()
        lease, self._lease = self._lease, None
        if ended is None:
            return lease
        upload, ack = ended
        if ack is not None:
            await self._send_text(encode_ack(ack.stream, ack.offset))
        log.info(
            "upload ended conn=%s stream=%s offset=%d (%s)",
            self.connection.id,
            upload.stream,
            upload.offset,
            why,
        )
        return lease

    def _acknowledged_by_reply(self, info: StreamInfo) -> None:
        """``sync`` and ``finalize`` replies carry the size: they count as acks."""
        self.state.acknowledged_by_reply(info.stream_id, info.size)

    # -- requests --------------------------------------------------------------------------

    async def _answer(self, request: Request) -> None:
        try:
            reply = await self._apply(request)
        except _Broken:
            raise
        except MmstreamError as exc:
            reply = error_reply(request.id, exc)
        except Exception:
            log.exception("request failed conn=%s op=%s", self.connection.id, request.op)
            reply = internal_error_reply(request.id)
        if reply is not None:
            await self._send_reply(reply)

    async def _apply(self, request: Request) -> Reply | None:
        """The reply to ``request``, or None when it was already sent (``read``, ``tail``)."""
        if isinstance(request, Hello):
            self._authenticate(request)
            await self._recheck_upload()
        stream = self.state.authorize(request)
        match request:
            case Hello():
                return HelloReply(
                    re=request.id,
                    protocol=SUBPROTOCOL,
                    server=f"mmstream {__version__}",
                    max_message_size=self.config.max_message_size,
                    ack_bytes=self.config.ack_bytes,
                    ack_interval=self.config.ack_interval,
                )
            case List():
                infos = self.manager.list()
                shown = set(self.authorizer.visible(self.state.grant, (i.stream_id for i in infos)))
                streams = tuple(StreamStat.from_info(i) for i in infos if i.stream_id in shown)
                return ListReply(re=request.id, streams=streams)
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
                return StatReply(re=request.id, stat=StreamStat.from_info(info))
            case Append():
                return await self._bind(request, stream)
            case Sync():
                info = await self.manager.flush(stream)
                self._acknowledged_by_reply(info)
                return StatReply(re=request.id, stat=StreamStat.from_info(info))
            case Finalize():
                lease = None
                if self.state.upload is not None and self.state.upload.stream == stream:
                    lease = await self._unbind("finalize")
                try:
                    info = await self.manager.finalize(
                        stream, expected_size=request.size, sha256=request.sha256, writer=lease
                    )
                finally:
                    if lease is not None:
                        lease.release()
                return StatReply(re=request.id, stat=StreamStat.from_info(info))
            case Read():
                await self._read(request, stream)
                return None
            case Tail():
                await self._follow(request, stream)
                return None
            case Stat():
                return StatReply(
                    re=request.id, stat=StreamStat.from_info(self.manager.stat(stream, times=True))
                )
            case Delete():
                await self.manager.delete(stream)
                return OkReply(re=request.id)
            case Metadata():
                title = await self.manager.set_title(stream, request.title)
                if self.hub is not None:
                    self.hub.set_title(stream, title.title)
                return StatReply(
                    re=request.id, stat=StreamStat.from_info(self.manager.stat(stream))
                )
        raise AssertionError(f"unhandled request {request!r}")

    def _authenticate(self, request: Hello) -> None:
        """A wrong token is refused and ends the session (close 1008); the token itself is
        never logged nor echoed."""
        try:
            self.state.hello(request.token)
        except UnauthorizedError:
            log.warning("hello refused conn=%s: no valid token", self.connection.id)
            # Nothing sent after a refused hello is applied.
            self._stop_receiving((CLOSE_POLICY_VIOLATION, "unauthorized"), drain=False)
            raise

    async def _recheck_upload(self) -> None:
        """After a new ``hello``: the binding ends unless the new token may write its
        stream (write rights come from the latest hello, not from any earlier one). Later
        frames are then unbound: the first gets a ``bad-request`` event."""
        if self.state.may_keep_upload():
            return
        await self._end_upload("the new hello's token does not allow writing it")
        self.state.report_unbound = True

    async def _bind(self, request: Append, stream: str) -> Reply:
        await self._end_upload("a new append")
        self.state.binding_failed()  # until it succeeds: a failed append binds nothing
        lease = self.manager.acquire_writer(stream, f"conn={self.connection.id}")
        try:
            # An empty append checks what a bound upload needs: the stream exists, takes
            # data, and is at the expected offset (else offset-conflict with the real one).
            size = await self.manager.append(
                stream, b"", expected_offset=request.offset, writer=lease
            )
        except BaseException:
            lease.release()
            raise
        self.state.bind(stream, size)
        self._lease = lease
        log.info("upload bound conn=%s stream=%s offset=%d", self.connection.id, stream, size)
        return AppendReply(re=request.id, stream=stream, offset=size)

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
        if self._tailing:
            raise ProtocolError("this connection already follows a stream: open another")
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
        self._tailing = True
        reply = TailReply(re=request.id, stream=stream, offset=offset, header=len(header))
        await self._send_reply(reply)
        self._nursery.start_soon(self._push, stream, info.generation, offset, header)

    async def _live_start(self, info: StreamInfo) -> tuple[bytes, int]:
        """Header and decoder start point from the stream's broadcaster (the same ones HTTP
        live listeners get); the live edge for a finished stream or an unknown format."""
        if self.hub is None or info.status is not StreamStatus.UPLOADING:
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
        piece = self._send_piece
        if self.metrics is not None:
            self.metrics.followers.inc()
        try:
            if header:
                async with holding(self._binary_lock):
                    await self._send_bytes(header)
            while not self._peer_gone:
                if self.hub is not None:
                    reached = await self._follow_in_group(self.hub, stream, generation, position)
                    if reached is None:
                        break  # the peer is gone
                    position = reached
                try:
                    info = await self.manager.wait_for_data(stream, position, generation=generation)
                    if info.size > position:
                        data = await self.manager.read_shared(
                            stream,
                            position,
                            min(info.size - position, piece),
                            generation=generation,
                        )
                    else:
                        await self._send_event(
                            End(
                                stream=stream,
                                size=position,
                                status=info.status.value,
                                sha256=info.sha256,
                            )
                        )
                        return
                except CacheClosedError:
                    return  # the server is shutting down: so is the connection
                except StreamNotFoundError:
                    await self._send_event(End(stream=stream, size=position, status="deleted"))
                    return
                except MmstreamError:
                    await self._send_event(End(stream=stream, size=position, status="error"))
                    return
                async with holding(self._binary_lock):
                    await self._send_bytes(data)
                position += len(data)
        finally:
            if self.metrics is not None:
                self.metrics.followers.dec()
            self._tailing = False
            if self._receiving_since is not None:
                self._receiving_since = trio.current_time()  # idle from the end of the tail
            self._mark_activity()

    async def _follow_in_group(
        self, hub: FanoutHub, stream: str, generation: str, position: int
    ) -> int | None:
        """Be fed by the stream's :class:`~._tail.TailGroup` while it can take this
        follower (from ``position``, which must be the group's edge); return the position
        reached (None: the peer is gone). Returns at once if this follower is behind the
        group: it catches up alone."""
        member = Member(position, self._send_nowait)
        while True:
            try:
                group = hub.tail_group(
                    stream, position, piece=self.config.max_message_size, generation=generation
                )
            except CacheClosedError:
                return position
            if group.join(member):
                break
            if group.edge > position:
                return position
            await group.wait_advanced()  # the group is behind: it is about to come by
        try:
            await member.released.wait()
        finally:
            group.leave(member)
        if not await self._flush():
            return None
        return member.position

    @property
    def _send_piece(self) -> int:
        """The largest data frame a read or a tail sends: each is read from the stream
        only once the socket took the one before, so a client that does not read holds
        at most about this much of the server's memory (plus the socket's buffer)."""
        return min(self.config.max_message_size, SEND_PIECE)

    def _send_nowait(self, message: str | bytes) -> Delivery:
        if self._peer_gone or self._binary_lock.locked():
            return Delivery.REFUSED  # a read is sending its frames: no tail frame in between
        return self.connection.send_nowait(message)

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
    ack_clock: AckClock,
    metrics: Metrics | None = None,
    authorizer: Authorizer | None = None,
    hub: FanoutHub | None = None,
) -> SessionHandler:
    """The handler serving protocol v1 on each connection (given its connection slot);
    ``ack_clock`` (run by the caller) acknowledges every connection's uploads."""

    async def handle(connection: Connection, slot: Slot | None = None) -> None:
        endpoint = parse_path(connection.path)
        with log_context(stream=endpoint.stream if endpoint is not None else None):
            session = Session(
                connection,
                manager,
                config,
                shutting_down,
                ack_clock,
                metrics,
                authorizer,
                hub,
                slot,
            )
            await session.run()

    return handle
