"""What the session core's tests share: a core with small limits, a stream's stat as the
manager returns it, and the replies and events among a list of actions."""

from __future__ import annotations

from mmstream.auth import Authorizer
from mmstream.config import AuthConfig, TokenConfig
from mmstream.protocol import Ack, Reply
from mmstream.protocol.messages import Event
from mmstream.protocol.session import Action, Send, SessionCore, SessionLimits
from mmstream.streams import StreamInfo, StreamStatus

WRITER, READER = "w" * 16, "r" * 16


def core(
    ack_bytes: int = 100, drain: int = 3, ack_interval: float = 0.05, idle_timeout: float = 300.0
) -> SessionCore:
    limits = SessionLimits(
        ack_bytes=ack_bytes, drain=drain, ack_interval=ack_interval, idle_timeout=idle_timeout
    )
    return SessionCore(limits)


def guarded(bound: str | None = None, opened_at: float = 0.0) -> SessionCore:
    tokens = (TokenConfig(WRITER), TokenConfig(READER, scopes=("read",), streams="live-*"))
    return SessionCore(
        SessionLimits(ack_bytes=100, drain=3, hello_timeout=10.0),
        authorizer=Authorizer(AuthConfig(tokens=tokens)),
        bound=bound,
        opened_at=opened_at,
    )


def info(stream: str, size: int) -> StreamInfo:
    """A stream's stat as the manager answers it."""
    return StreamInfo(
        stream_id=stream,
        status=StreamStatus.UPLOADING,
        content_type="application/octet-stream",
        metadata={},
        size=size,
        durable_offset=0,
        reserved=size,
        created_at=0.0,
        last_accessed_at=0.0,
        finalized_at=None,
        sha256=None,
        error=None,
        generation="g1",
    )


def sent(actions: list[Action]) -> list[Reply | Event]:
    return [action.message for action in actions if isinstance(action, Send)]


def acks(actions: list[Action]) -> list[Ack]:
    return [message for message in sent(actions) if isinstance(message, Ack)]
