"""The sans-I/O core of one protocol v1 connection: decoded messages, storage results and the
time in, actions out. No Trio, no sockets, no clock of its own.

In the spirit of ``h11.Connection``: the server's :class:`~mmstream.server.Session` is a thin
Trio driver that reads messages, feeds them to :class:`SessionCore` and applies what it
answers, in order (:class:`Send` a reply or event, :class:`EndUpload` a binding, :class:`Apply`
a request through the :class:`~mmstream.streams.StreamManager` and report the result back,
:class:`Stop` taking messages). Every rule of the protocol lives here, once: who the client is
(the grant of its ``hello``), the upload binding, which reply or error answers which request,
which unbound frame is reported, when an ack is due (one rule, given ``now``), where a batch
of frames must end, the idle and ``hello`` deadlines, how much is still applied after a stop
and with which close code the connection ends. So they are tested synchronously, as
``web/ranges.py``'s are, and cannot drift between code paths (docs/server.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

import attrs

from ..auth import Authorizer, Grant
from ..config import AuthConfig, ServerConfig
from ..errors import MmstreamError, ProtocolError, UnauthorizedError
from .codec import (
    MalformedRequestError,
    decode_request,
    error_event,
    error_reply,
    internal_error_reply,
)
from .messages import (
    Ack,
    Append,
    AppendReply,
    Delete,
    ErrorReply,
    Event,
    Finalize,
    Hello,
    HelloReply,
    ListReply,
    OkReply,
    Reply,
    Request,
    StatReply,
    StreamInfoLike,
    StreamStat,
    Sync,
    Tail,
)
from .urls import SUBPROTOCOL, resolve_stream

__all__ = [
    "BATCH_BYTES",
    "BATCH_FRAMES",
    "CLOSE_BROKEN",
    "CLOSE_DONE",
    "CLOSE_EVICTED",
    "CLOSE_IDLE",
    "CLOSE_NO_HELLO",
    "CLOSE_SHUTDOWN",
    "CLOSE_UNAUTHORIZED",
    "Action",
    "Apply",
    "Close",
    "EndUpload",
    "Send",
    "SessionCore",
    "SessionLimits",
    "Stop",
    "Upload",
]

#: A batch of upload frames taken at once stops at this many bytes or frames.
BATCH_BYTES = 1024 * 1024
BATCH_FRAMES = 256


# -- what the connection ends with ----------------------------------------------------------


@attrs.frozen
class Close:
    """The WebSocket close code and reason a session ends with."""

    code: int
    reason: str = ""


#: The client closed, or nothing went wrong.
CLOSE_DONE = Close(1000)
#: The applier waited ``idle_timeout`` for a message.
CLOSE_IDLE = Close(1000, "idle timeout")
#: The server shuts down; what the client already sent is still applied (a queue's worth).
CLOSE_SHUTDOWN = Close(1001, "server shutting down")
#: Access control on, and no valid ``hello`` within ``handshake_timeout``.
CLOSE_NO_HELLO = Close(1008, "no hello in time")
#: A ``hello`` with a wrong token: nothing sent after it is applied.
CLOSE_UNAUTHORIZED = Close(1008, "unauthorized")
#: The connection caps closed this idle connection to make room (RFC 6455's "try again later").
CLOSE_EVICTED = Close(1013, "server full: idle connection closed")
#: The code of a connection that cannot be used any more (a read promised bytes it cannot send).
CLOSE_BROKEN = 1011


# -- the actions ----------------------------------------------------------------------------


@attrs.frozen
class Send:
    """Send ``message`` (a reply or an event), after everything sent before it."""

    message: Reply | Event


@attrs.frozen
class EndUpload:
    """The upload binding ended: send ``ack`` (the last one it owes) if any, and release the
    binding's writer lease, or, with ``hand_over``, keep it for the :class:`Apply` that
    follows (``finalize`` of the bound stream finishes it with the binding's lease)."""

    stream: str
    offset: int
    ack: Ack | None
    why: str
    hand_over: bool = False


@attrs.frozen
class Apply:
    """Carry out ``request`` on ``stream`` through the stream manager (it is allowed), then
    report the result to the core (:meth:`SessionCore.appended`, :meth:`~SessionCore.stat_reply`,
    :meth:`~SessionCore.listed`, :meth:`~SessionCore.failed`) and send that reply; ``read``
    and ``tail`` send their own. ``stream`` is None only for ``list``."""

    request: Request
    stream: str | None


@attrs.frozen
class Stop:
    """Take no new message (a waiting receive is interrupted); the session ends with
    :attr:`SessionCore.close` once what may still be applied is."""

    close: Close


Action: TypeAlias = Send | EndUpload | Apply | Stop


@attrs.frozen
class SessionLimits:
    """What the core is told of the server's configuration."""

    #: Acknowledge after this many bytes written since the last ack, while frames keep coming.
    ack_bytes: int = attrs.field(validator=attrs.validators.gt(0))
    #: ... or this many seconds after the first unacknowledged byte was written.
    ack_interval: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    #: Messages already queued that are still applied once the session stops.
    drain: int = attrs.field(default=16, validator=attrs.validators.ge(0))
    #: How long the applier may wait for a message before the connection is closed.
    idle_timeout: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    #: With access control on, how long a connection has to send a valid ``hello``.
    hello_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    #: Told to the client in the hello reply.
    max_message_size: int = attrs.field(default=4 * 1024 * 1024, validator=attrs.validators.gt(0))
    server: str = "mmstream"

    @classmethod
    def from_config(cls, config: ServerConfig, server: str) -> SessionLimits:
        return cls(
            ack_bytes=config.ack_bytes,
            ack_interval=config.ack_interval,
            drain=config.request_queue,
            idle_timeout=config.idle_timeout,
            hello_timeout=config.handshake_timeout,
            max_message_size=config.max_message_size,
            server=server,
        )


@attrs.define
class Upload:
    """The connection's upload binding (``append``)."""

    stream: str
    #: Where the next byte goes: the size after this binding's last write.
    offset: int
    #: The last offset acknowledged to the client (or on its way to it).
    acked: int
    #: When the first byte not acknowledged was written (None: everything is).
    unacked_since: float | None = None


@attrs.define
class SessionCore:
    """One connection's protocol v1, without I/O (see the module docstring)."""

    limits: SessionLimits
    authorizer: Authorizer = attrs.field(factory=lambda: Authorizer(AuthConfig()))
    #: The stream the URL names (``/v1/streams/{id}``), None on the multiplexed ``/v1``.
    bound: str | None = None
    #: When the connection opened (the ``hello`` deadline counts from it).
    opened_at: float = 0.0
    #: What the token of the latest ``hello`` allows (access control on).
    grant: Grant | None = None
    upload: Upload | None = None
    #: Whether the next binary frame with no binding gets a ``bad-request`` event (once),
    #: or is dropped silently because a failure was already reported.
    report_unbound: bool = True
    #: Whether a ``tail`` runs on this connection (one at a time; it is never idle then).
    following: bool = False
    #: Set once no new message is to be taken; :attr:`close` says why.
    stopping: bool = False
    close: Close = CLOSE_DONE
    #: Since when the applier waits for a message (None while it works).
    waiting_since: float | None = None
    _budget: int = 0

    # -- messages in ------------------------------------------------------------------------

    def receive_text(self, text: str) -> list[Action]:
        """A text message: what to do about it, in order."""
        try:
            request = decode_request(text)
        except MalformedRequestError as exc:
            return [Send(error_reply(exc.request_id, exc))]
        return self.receive_request(request)

    def receive_request(self, request: Request) -> list[Action]:
        """A decoded request: a ``hello`` is answered here; anything else is authorized and
        either refused (an error reply) or handed to the driver to :class:`Apply`."""
        if isinstance(request, Hello):
            return self._hello(request)
        try:
            stream = self._authorize(request)
            if isinstance(request, Tail) and self.following:
                raise ProtocolError("this connection already follows a stream: open another")
        except MmstreamError as exc:
            return [Send(error_reply(request.id, exc))]
        actions: list[Action] = []
        upload = self.upload
        if isinstance(request, Append):
            actions += self._unbind("a new append")
            self.report_unbound = False  # until it succeeds: a failed append binds nothing
        elif isinstance(request, Finalize) and upload is not None and upload.stream == stream:
            actions += self._unbind("finalize", hand_over=True)
        actions.append(Apply(request, stream))
        return actions

    def _hello(self, request: Hello) -> list[Action]:
        """With access control on, the token's grant replaces the last one; a wrong token
        stops the session with nothing more applied. Write rights come from the latest
        hello: a binding the new grant may not write ends, and later frames are unbound."""
        actions: list[Action] = []
        if self.authorizer.enabled:
            grant = self.authorizer.authenticate(request.token)
            if grant is None:
                problem = UnauthorizedError("unauthorized: the token is not valid")
                return [
                    self._stop(CLOSE_UNAUTHORIZED, drain=False),
                    Send(error_reply(request.id, problem)),
                ]
            self.grant = grant
            upload = self.upload
            if upload is not None and not self.authorizer.allows(grant, "append", upload.stream):
                actions += self._unbind("the new hello's token does not allow writing it")
                self.report_unbound = True
        limits = self.limits
        reply = HelloReply(
            re=request.id,
            protocol=SUBPROTOCOL,
            server=limits.server,
            max_message_size=limits.max_message_size,
            ack_bytes=limits.ack_bytes,
            ack_interval=limits.ack_interval,
        )
        return [*actions, Send(reply)]

    def _authorize(self, request: Request) -> str | None:
        """The stream ``request`` acts on (named, or the URL's), once the grant allows it;
        :class:`UnauthorizedError` otherwise (no ``hello`` yet, or not in its scope)."""
        if self.grant is None and self.authorizer.enabled:
            raise UnauthorizedError("unauthorized: send hello with a valid token first")
        stream = resolve_stream(request, self.bound)
        self.authorizer.check(self.grant, request.op, stream)
        return stream

    # -- storage results in -----------------------------------------------------------------

    def appended(self, request: Append, stream: str, size: int) -> AppendReply:
        """The ``append`` checked out (the stream takes data at ``size``): binary frames go
        there now."""
        self.upload = Upload(stream, offset=size, acked=size)
        self.report_unbound = True
        return AppendReply(re=request.id, stream=stream, offset=size)

    def stat_reply(self, request: Request, info: StreamInfoLike) -> StatReply:
        """The reply of a request answered with the stream's stat (``create``, ``sync``,
        ``finalize``, ``stat``, ``metadata``). ``sync`` and ``finalize`` replies carry the
        size: they count as acks."""
        upload = self.upload
        acks = isinstance(request, Sync | Finalize)
        if acks and upload is not None and upload.stream == info.stream_id:
            upload.acked = max(upload.acked, min(info.size, upload.offset))
            if upload.acked >= upload.offset:
                upload.unacked_since = None
        return StatReply(re=request.id, stat=StreamStat.from_info(info))

    def listed(self, request: Request, infos: Iterable[StreamInfoLike]) -> ListReply:
        """The ``list`` reply: the streams the grant covers (all, with access control off)."""
        infos = list(infos)
        shown = set(self.authorizer.visible(self.grant, (info.stream_id for info in infos)))
        streams = tuple(StreamStat.from_info(i) for i in infos if i.stream_id in shown)
        return ListReply(re=request.id, streams=streams)

    def done(self, request: Delete) -> OkReply:
        """A ``delete`` carried out."""
        return OkReply(re=request.id)

    def failed(self, request: Request, exc: Exception) -> ErrorReply:
        """The reply of a request whose application raised ``exc``: its stable code, or
        ``internal`` for anything that is not an :class:`MmstreamError` (a bug: the driver
        logs it, the peer learns nothing of it)."""
        if isinstance(exc, MmstreamError):
            return error_reply(request.id, exc)
        return internal_error_reply(request.id)

    # -- upload frames ----------------------------------------------------------------------

    def unbound_frames(self) -> list[Action]:
        """Binary frames arrived with no binding: the first is reported (once, and not after
        a failure that was reported), the rest dropped silently."""
        report, self.report_unbound = self.report_unbound, False
        if not report:
            return []
        problem = ProtocolError("binary frame with no upload bound (send append first)")
        return [Send(error_event(None, problem))]

    def batch_limit(self) -> int:
        """Bytes a batch of frames may reach: it ends where an ack falls due by size, so
        acks come at the same frames as without batching."""
        upload = self.upload
        if upload is None:
            return BATCH_BYTES
        return min(BATCH_BYTES, upload.acked + self.limits.ack_bytes - upload.offset)

    def written(self, size: int, now: float) -> None:
        """The bound stream has ``size`` bytes after a write of this binding, at ``now``."""
        upload = self.upload
        if upload is None:
            return
        if upload.unacked_since is None and size > upload.acked:
            upload.unacked_since = now
        upload.offset = size

    def write_failed(self, exc: MmstreamError) -> list[Action]:
        """A write of the binding failed: the binding ends (acknowledging what it wrote), the
        failure is reported once, and the frames behind it are dropped silently."""
        upload = self.upload
        stream = upload.stream if upload is not None else None
        actions = self._unbind(f"failed: {exc.code}")
        self.report_unbound = False
        return [*actions, Send(error_event(stream, exc))]

    # -- acknowledgements -------------------------------------------------------------------

    def ack_due(self, now: float, *, quiet: bool) -> Ack | None:
        """The one ack rule (docs/protocol.md §5): the binding's unacknowledged bytes are
        acknowledged at once when the upload is ``quiet`` (no frame is waiting or on its
        way), and while frames keep coming once ``ack_bytes`` were written since the last
        ack or ``ack_interval`` has passed since the first of them was. Tell :meth:`sent`
        once the ack is on its way; an ack the driver could not send yet stays due."""
        upload = self.upload
        if upload is None or upload.offset <= upload.acked:
            return None
        since = upload.unacked_since
        if (
            quiet
            or upload.offset - upload.acked >= self.limits.ack_bytes
            or (since is not None and now - since >= self.limits.ack_interval)
        ):
            return Ack(stream=upload.stream, offset=upload.offset)
        return None

    def sent(self, ack: Ack) -> None:
        """``ack`` is on its way to the client: it counts as acknowledged."""
        upload = self.upload
        if upload is None or upload.stream != ack.stream or ack.offset <= upload.acked:
            return
        upload.acked = ack.offset
        if upload.acked >= upload.offset:
            upload.unacked_since = None

    def _unbind(self, why: str, *, hand_over: bool = False) -> list[Action]:
        """End the binding, with the last ack it owes the client."""
        upload = self.upload
        if upload is None:
            return []
        self.upload = None
        ack = None
        if upload.offset > upload.acked:
            ack = Ack(stream=upload.stream, offset=upload.offset)
        return [EndUpload(upload.stream, upload.offset, ack, why, hand_over=hand_over)]

    def end(self) -> list[Action]:
        """The connection is closing: the binding ends (its lease goes)."""
        return self._unbind("connection closing")

    # -- waiting, following, deadlines ------------------------------------------------------

    def waiting(self, now: float) -> None:
        """The applier waits for the client's next message from ``now``."""
        self.waiting_since = now

    def working(self) -> None:
        """The applier has a message (or stopped waiting)."""
        self.waiting_since = None

    @property
    def idle(self) -> bool:
        """Whether the connection is idle for the connection caps and the idle timeout: the
        applier waits for a message and no ``tail`` runs."""
        return self.waiting_since is not None and not self.following

    def follow_started(self) -> None:
        self.following = True

    def follow_ended(self, now: float) -> None:
        """The ``tail`` ended; an applier waiting meanwhile is idle from ``now``."""
        self.following = False
        if self.waiting_since is not None:
            self.waiting_since = now

    def idle_check(self, now: float) -> float | Stop:
        """When to look again whether the connection went idle too long; :class:`Stop`
        once it has (closing 1000 "idle timeout", what is queued still applied)."""
        timeout = self.limits.idle_timeout
        since = self.waiting_since
        if since is None or self.following:
            return now + timeout
        if now < since + timeout:
            return since + timeout
        return self._stop(CLOSE_IDLE)

    def hello_deadline(self) -> float | None:
        """With access control on, when a connection that has not said a valid ``hello``
        is closed: unauthenticated, it could only hold a connection slot."""
        if not self.authorizer.enabled:
            return None
        return self.opened_at + self.limits.hello_timeout

    def hello_check(self) -> Stop | None:
        """The ``hello`` deadline passed: stop (1008, nothing more applied) unless a valid
        ``hello`` came."""
        if self.grant is not None or self.stopping:
            return None
        return self._stop(CLOSE_NO_HELLO, drain=False)

    # -- stopping ---------------------------------------------------------------------------

    def shutdown(self) -> Stop:
        """The server shuts down: what is queued is still applied (a queue's worth)."""
        return self._stop(CLOSE_SHUTDOWN)

    def evicted(self) -> Stop:
        """The connection caps closed this idle connection to make room for a newcomer."""
        return self._stop(CLOSE_EVICTED)

    def broken(self, why: str) -> None:
        """The connection can no longer be used (a read promised bytes it cannot send)."""
        self.stopping, self._budget = True, 0
        self.close = Close(CLOSE_BROKEN, why)

    def _stop(self, close: Close, *, drain: bool = True) -> Stop:
        """Take no new message; with ``drain``, what is already queued is still applied, up
        to ``limits.drain`` messages (a client that keeps sending must not hold a shutdown
        up); without it, nothing more is."""
        self.stopping, self.close = True, close
        self._budget = self.limits.drain if drain else 0
        return Stop(close)

    def may_take(self) -> bool:
        """Whether the next message may still be applied: always, until the session stops;
        then while the drain budget lasts (each call spends one)."""
        if not self.stopping:
            return True
        self._budget -= 1
        return self._budget >= 0
