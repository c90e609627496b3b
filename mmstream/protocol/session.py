"""The protocol state of one connection, without I/O: who it is (the grant of its
``hello``), its upload binding, acknowledgements, reporting of unbound frames and the stop
budget.

The server's :class:`~mmstream.server.Session` is the Trio driver around this: it reads
messages, calls the :class:`~mmstream.streams.StreamManager`, tells the state what was
written and sends what it says is due. Kept apart so that the rules (when an ack is due,
where a batch of frames must end, which frame is reported and which is dropped silently,
how much is still applied once the session stops) are tested synchronously, as
``web/ranges.py``'s are, and cannot drift between code paths.
"""

from __future__ import annotations

import enum

import attrs

from ..auth import Authorizer, Grant
from ..config import AuthConfig
from ..errors import UnauthorizedError
from .messages import Hello, Request
from .urls import resolve_stream

__all__ = ["BATCH_BYTES", "BATCH_FRAMES", "Ack", "AckTiming", "SessionState", "Upload"]

#: A batch of upload frames taken at once stops at this many bytes or frames.
BATCH_BYTES = 1024 * 1024
BATCH_FRAMES = 256


@attrs.define
class Upload:
    """The connection's upload binding (``append``)."""

    stream: str
    #: Where the next byte goes: the size after this binding's last write.
    offset: int
    #: The last offset acknowledged to the client.
    acked: int
    #: Whether the ack clock holds this upload for bytes written since ``acked``.
    ack_due: bool = False


@attrs.frozen
class Ack:
    """An ``ack`` event to send: ``stream`` is acknowledged up to ``offset``."""

    stream: str
    offset: int


class AckTiming(enum.Enum):
    """What a write asks of the driver (:meth:`SessionState.written`)."""

    #: ``ack_bytes`` went unacknowledged: acknowledge now.
    NOW = "now"
    #: The first unacknowledged bytes: register with the ack clock for its next tick.
    AT_TICK = "at-tick"
    #: Already registered (or nothing new): nothing to do.
    NOTHING = "nothing"


@attrs.define
class SessionState:
    """What one connection's protocol session remembers between messages.

    ``ack_bytes`` is ``server.ack_bytes``; ``drain`` is how many messages already queued
    are still applied once the session stops (``server.request_queue``).
    """

    ack_bytes: int = attrs.field(validator=attrs.validators.gt(0))
    drain: int = attrs.field(validator=attrs.validators.ge(0))
    authorizer: Authorizer = attrs.field(factory=lambda: Authorizer(AuthConfig()))
    #: The stream the URL names (``/v1/streams/{id}``), None on the multiplexed ``/v1``.
    bound: str | None = None
    #: What the token of the latest ``hello`` allows (access control on).
    grant: Grant | None = None
    upload: Upload | None = None
    #: Whether the next binary frame with no binding gets a ``bad-request`` event (once),
    #: or is dropped silently because a failure was already reported.
    report_unbound: bool = True
    #: Set once no new message is to be taken (shutdown, idle timeout, refused hello).
    stopping: bool = False
    _budget: int = 0

    # -- who the client is ----------------------------------------------------------------

    def hello(self, token: str | None) -> None:
        """A ``hello``: with access control on, its token's grant replaces the last one. A
        wrong token raises :class:`UnauthorizedError` and stops the session with nothing
        more applied (the driver closes 1008)."""
        if not self.authorizer.enabled:
            return
        grant = self.authorizer.authenticate(token)
        if grant is None:
            self.stop(drain=False)
            raise UnauthorizedError("unauthorized: the token is not valid")
        self.grant = grant

    def authorize(self, request: Request) -> str | None:
        """The stream ``request`` acts on (named, or the URL's), once the grant allows it;
        :class:`UnauthorizedError` otherwise (no ``hello`` yet, or not in its scope)."""
        if isinstance(request, Hello):
            return resolve_stream(request, self.bound)
        if self.grant is None and self.authorizer.enabled:
            raise UnauthorizedError("unauthorized: send hello with a valid token first")
        stream = resolve_stream(request, self.bound)
        self.authorizer.check(self.grant, request.op, stream)
        return stream

    def may_keep_upload(self) -> bool:
        """After a new ``hello``: whether the grant still allows writing the bound stream
        (write rights come from the latest hello, not from any earlier one)."""
        upload = self.upload
        return upload is None or self.authorizer.allows(self.grant, "append", upload.stream)

    # -- stopping --------------------------------------------------------------------------

    def stop(self, *, drain: bool = True) -> None:
        """Take no new message; with ``drain``, what is already queued is still applied,
        up to ``drain`` messages (a client that keeps sending must not hold a shutdown
        up); without it (a refused ``hello``), nothing more is."""
        self.stopping = True
        self._budget = self.drain if drain else 0

    def may_take(self) -> bool:
        """Whether the next message may still be applied: always, until the session
        stops; then while the drain budget lasts (each call spends one)."""
        if not self.stopping:
            return True
        self._budget -= 1
        return self._budget >= 0

    # -- the upload binding ----------------------------------------------------------------

    def bind(self, stream: str, size: int) -> None:
        """An ``append`` bound ``stream`` at ``size``: binary frames go there now."""
        self.upload = Upload(stream, offset=size, acked=size)
        self.report_unbound = True

    def unbind(self) -> tuple[Upload, Ack | None] | None:
        """End the binding; returns it, with the last ack it owes the client (None when
        nothing is unacknowledged), or None when nothing was bound."""
        upload = self.upload
        if upload is None:
            return None
        ack = self.take_ack()
        self.upload = None
        return upload, ack

    def binding_failed(self) -> None:
        """An ``append`` or a write failed and was reported: the frames that follow it
        are dropped silently (the client already knows)."""
        self.report_unbound = False

    def unbound_frame(self) -> bool:
        """A binary frame arrived with no binding: whether to report it (the first one
        only, and not after a failure that was reported)."""
        report, self.report_unbound = self.report_unbound, False
        return report

    def batch_limit(self) -> int:
        """Bytes a batch of frames may reach: it ends where an ack falls due, so acks
        come at the same frames as without batching."""
        upload = self.upload
        if upload is None:
            return BATCH_BYTES
        return min(BATCH_BYTES, upload.acked + self.ack_bytes - upload.offset)

    # -- acknowledgements ------------------------------------------------------------------

    def written(self, size: int) -> AckTiming:
        """The bound stream has ``size`` bytes after a write of this binding."""
        upload = self.upload
        if upload is None:
            return AckTiming.NOTHING
        upload.offset = size
        if upload.offset - upload.acked >= self.ack_bytes:
            return AckTiming.NOW
        if upload.offset > upload.acked and not upload.ack_due:
            upload.ack_due = True
            return AckTiming.AT_TICK
        return AckTiming.NOTHING

    def tick(self) -> Ack | None:
        """The ack clock's tick: the ack due now, if any (not yet counted as sent: call
        :meth:`sent` once it is on its way)."""
        upload = self.upload
        if upload is None:
            return None
        upload.ack_due = False
        if upload.offset <= upload.acked:
            return None
        return Ack(upload.stream, upload.offset)

    def sent(self, ack: Ack) -> None:
        """``ack`` went out (or is owed on the socket): it counts as acknowledged."""
        upload = self.upload
        if upload is not None and upload.stream == ack.stream:
            upload.acked = max(upload.acked, ack.offset)

    def take_ack(self) -> Ack | None:
        """The ack owed now, counted as sent (the driver sends it), or None."""
        ack = self.tick() if self.upload is not None else None
        if ack is not None:
            self.sent(ack)
        return ack

    def acknowledged_by_reply(self, stream: str, size: int) -> None:
        """``sync`` and ``finalize`` replies carry the size: they count as acks."""
        upload = self.upload
        if upload is not None and upload.stream == stream:
            upload.acked = max(upload.acked, min(size, upload.offset))
