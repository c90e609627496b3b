"""Every message of wire protocol v1 as a frozen attrs class.

The classes validate their own fields, so a message that exists is a legal message whichever
side built it: the codec builds requests from hostile JSON, the server builds replies from
manager snapshots, and both go through the same validators. The full text is
``docs/protocol.md``; the names here follow it (``id``/``re`` are the wire names).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, Protocol, TypeAlias

import attrs

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "MAX_CONTENT_TYPE_LENGTH",
    "MAX_OFFSET",
    "MAX_REQUEST_ID_LENGTH",
    "MAX_STREAM_FIELD_LENGTH",
    "Ack",
    "Append",
    "AppendReply",
    "Create",
    "Delete",
    "End",
    "ErrorEvent",
    "ErrorReply",
    "Event",
    "Finalize",
    "Hello",
    "HelloReply",
    "List",
    "ListReply",
    "Metadata",
    "OkReply",
    "Read",
    "ReadReply",
    "Reply",
    "Request",
    "RequestId",
    "ServerMessage",
    "Stat",
    "StatReply",
    "StreamInfoLike",
    "StreamStat",
    "Sync",
    "Tail",
    "TailReply",
    "TitleMark",
]

#: Offsets, lengths and sizes are non-negative signed 64-bit integers on the wire.
MAX_OFFSET: Final = 2**63 - 1
MAX_REQUEST_ID_LENGTH: Final = 64
#: The codec bounds stream ids only so that a hostile one costs nothing; the manager checks
#: the real alphabet (``[A-Za-z0-9_-]{1,128}``) and answers ``invalid-id``.
MAX_STREAM_FIELD_LENGTH: Final = 256
MAX_CONTENT_TYPE_LENGTH: Final = 255
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"

#: A client-chosen request id, echoed as ``re`` in the reply.
RequestId: TypeAlias = int | str

_SHA256_CHARS = frozenset("0123456789abcdef")


def _offset(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    # ``type(...) is int`` also refuses bool, which JSON would otherwise let through as 0/1.
    if type(value) is not int or not 0 <= value <= MAX_OFFSET:
        raise ValueError(
            f"{attribute.name}: expected an integer in 0..2**63-1, got {_short(value)}"
        )


def _optional_offset(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None:
        _offset(_, attribute, value)


#: A ``time`` beyond this many seconds is refused: no stream lasts that long.
MAX_TIME = 1e10


def _time(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    """Media seconds (negative: back from the end); instead of an offset, never with one."""
    if value is None:
        return
    if type(value) not in (int, float) or not -MAX_TIME <= value <= MAX_TIME:
        raise ValueError(f"{attribute.name}: expected seconds (a number), got {_short(value)}")
    offset = getattr(instance, "offset", None)
    if hasattr(instance, "live"):  # a tail: its offset is None unless given
        given = offset is not None or getattr(instance, "live", False)
    else:  # a read: its offset defaults to 0
        given = bool(offset)
    if given:
        raise ValueError(f"{attribute.name}: give a time or an offset (or live), not both")


def _request_id(_: object, attribute: attrs.Attribute[Any], value: RequestId | None) -> None:
    if value is None:
        return
    if type(value) is int:
        if -(2**63) <= value <= MAX_OFFSET:
            return
    elif type(value) is str and len(value) <= MAX_REQUEST_ID_LENGTH:
        return
    raise ValueError(
        f"{attribute.name}: expected a 64-bit integer or a string of at most "
        f"{MAX_REQUEST_ID_LENGTH} characters, got {_short(value)}"
    )


def _flag(_: object, attribute: attrs.Attribute[Any], value: bool) -> None:
    if type(value) is not bool:
        raise ValueError(f"{attribute.name}: expected true or false, got {_short(value)}")


def _bounded_str(limit: int, *, optional: bool = False) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value is None and optional:
            return
        if type(value) is not str:
            raise ValueError(f"{attribute.name}: expected a string, got {_short(value)}")
        if len(value) > limit:
            raise ValueError(f"{attribute.name}: longer than {limit} characters")

    return check


def _sha256(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if type(value) is not str or len(value) != 64 or not _SHA256_CHARS.issuperset(value):
        raise ValueError(f"{attribute.name}: expected 64 lowercase hex digits, got {_short(value)}")


def _metadata(_: object, attribute: attrs.Attribute[Any], value: Mapping[str, str]) -> None:
    # Only the shape is checked here; the size limits are the stream manager's (one place),
    # which answers ``too-large``. The message size limit already bounds what this costs.
    if type(value) is not dict:
        raise ValueError(f"{attribute.name}: expected an object of strings, got {_short(value)}")
    for key, item in value.items():
        if type(item) is not str:
            raise ValueError(f"{attribute.name}.{str(key)[:40]}: expected a string")


def _number(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None and attribute.default is None:
        return
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise ValueError(f"{attribute.name}: expected a finite number, got {_short(value)}")


def _extra(_: object, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    if type(value) is not dict or any(key in ("code", "message") for key in value):
        raise ValueError(f"{attribute.name}: expected an object without 'code' and 'message'")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_STREAM = _bounded_str(MAX_STREAM_FIELD_LENGTH)
_OPTIONAL_STREAM = _bounded_str(MAX_STREAM_FIELD_LENGTH, optional=True)
#: Server-side texts (messages, statuses) are bounded only by the message size.
_TEXT = _bounded_str(MAX_OFFSET)
_OPTIONAL_TEXT = _bounded_str(MAX_OFFSET, optional=True)
#: A stream's generation is opaque to clients: a short string they pass back as it came.
_MAX_GENERATION_LENGTH = 64
_OPTIONAL_GENERATION = _bounded_str(_MAX_GENERATION_LENGTH, optional=True)


def _frozen_dict(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # A copy, so a frozen message never shares a dict its builder may still change;
    # anything else is left for the validator to name.
    return dict(value) if isinstance(value, Mapping) else value


# --------------------------------------------------------------------------------------
# Requests (client → server). ``stream`` may be omitted on a connection bound to a stream
# by its URL (/v1/streams/{id}); the server resolves it with ``resolve_stream``.


@attrs.frozen(kw_only=True)
class _Request:
    op: ClassVar[str]
    id: RequestId | None = attrs.field(default=None, validator=_request_id)


@attrs.frozen(kw_only=True)
class _StreamRequest(_Request):
    stream: str | None = attrs.field(default=None, validator=_OPTIONAL_STREAM)


@attrs.frozen(kw_only=True)
class Hello(_Request):
    """Opens a session; carries the access token (issue 4) so it never appears in a URL."""

    op: ClassVar[str] = "hello"
    token: str | None = attrs.field(
        default=None, repr=False, validator=_bounded_str(4096, optional=True)
    )


@attrs.frozen(kw_only=True)
class Create(_StreamRequest):
    """``create``: a new, empty stream in UPLOADING (``size_hint`` reserves what a clip needs)."""

    op: ClassVar[str] = "create"
    content_type: str = attrs.field(
        default=DEFAULT_CONTENT_TYPE, validator=_bounded_str(MAX_CONTENT_TYPE_LENGTH)
    )
    metadata: Mapping[str, str] = attrs.field(
        factory=dict, converter=_frozen_dict, validator=_metadata
    )
    #: The size the stream is expected to reach, when the client knows it (a file, a clip):
    #: the server reserves no more than that up front. A hint, never checked.
    size_hint: int | None = attrs.field(default=None, validator=_optional_offset)


@attrs.frozen(kw_only=True)
class Append(_StreamRequest):
    """Binds the upload: binary frames that follow are appended to ``stream``.

    ``offset`` is the size the client believes the stream has; a mismatch is an
    ``offset-conflict`` carrying the real size, which is how a client resumes.
    """

    op: ClassVar[str] = "append"
    offset: int | None = attrs.field(default=None, validator=_optional_offset)


@attrs.frozen(kw_only=True)
class Sync(_StreamRequest):
    """Answered once every earlier binary frame is applied and made durable."""

    op: ClassVar[str] = "sync"


@attrs.frozen(kw_only=True)
class Finalize(_StreamRequest):
    """``finalize``: the upload is complete (checked against ``size`` and ``sha256`` if given)."""

    op: ClassVar[str] = "finalize"
    size: int | None = attrs.field(default=None, validator=_optional_offset)
    sha256: str | None = attrs.field(default=None, validator=_sha256)


@attrs.frozen(kw_only=True)
class Read(_StreamRequest):
    """``length`` omitted reads to the current end; the reply says how many bytes follow."""

    op: ClassVar[str] = "read"
    offset: int = attrs.field(default=0, validator=_offset)
    length: int | None = attrs.field(default=None, validator=_optional_offset)
    #: Read from the boundary a decoder can start at for this media time (the reply's
    #: ``offset`` says where), instead of from ``offset``.
    time: float | None = attrs.field(default=None, validator=_time)
    #: Only from this stream (a ``stat``'s ``generation``), else ``stream-changed``: a client
    #: that reads one stream in several requests never gets pieces of two.
    generation: str | None = attrs.field(default=None, validator=_OPTIONAL_GENERATION)


@attrs.frozen(kw_only=True)
class Tail(_StreamRequest):
    """Follow a stream from ``offset`` (omitted: from its current end, the live edge).

    ``live`` is for players joining mid-stream: the stream's header first (WebM/Ogg/WAV),
    then bytes from a point a decoder can start at, shortly before the live edge."""

    op: ClassVar[str] = "tail"
    offset: int | None = attrs.field(default=None, validator=_optional_offset)
    live: bool = attrs.field(default=False, validator=_flag)
    #: Follow from this media time (negative: back from the end): the stream's header
    #: first, as for ``live``, then the bytes from a boundary a decoder can start at.
    time: float | None = attrs.field(default=None, validator=_time)
    #: As for ``read``: follow only this stream, else ``stream-changed``.
    generation: str | None = attrs.field(default=None, validator=_OPTIONAL_GENERATION)


@attrs.frozen(kw_only=True)
class Stat(_StreamRequest):
    """``stat``: the stream's :class:`StreamStat`."""

    op: ClassVar[str] = "stat"


@attrs.frozen(kw_only=True)
class List(_Request):
    """Every stream the server holds."""

    op: ClassVar[str] = "list"


@attrs.frozen(kw_only=True)
class Delete(_StreamRequest):
    """``delete``: the stream and its files are removed; followers get ``end``."""

    op: ClassVar[str] = "delete"


@attrs.frozen(kw_only=True)
class Metadata(_StreamRequest):
    """Set a live stream's current title (Icecast's ``/admin/metadata``); replies ``stat``."""

    op: ClassVar[str] = "metadata"
    title: str = attrs.field(validator=_TEXT)


Request: TypeAlias = (
    Hello | Create | Append | Sync | Finalize | Read | Tail | Stat | List | Delete | Metadata
)


# --------------------------------------------------------------------------------------
# What the server sends.


class StreamInfoLike(Protocol):
    """The attributes of ``mmstream.streams.StreamInfo`` that a stat reply carries."""

    @property
    def stream_id(self) -> str: ...
    @property
    def status(self) -> Any: ...
    @property
    def content_type(self) -> str: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def size(self) -> int: ...
    @property
    def durable_offset(self) -> int: ...
    @property
    def reserved(self) -> int: ...
    @property
    def created_at(self) -> float: ...
    @property
    def last_accessed_at(self) -> float: ...
    @property
    def finalized_at(self) -> float | None: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def location(self) -> str: ...
    @property
    def generation(self) -> str: ...
    @property
    def titles(self) -> Sequence[Any]: ...
    @property
    def duration(self) -> float | None: ...
    @property
    def started_at(self) -> float | None: ...


@attrs.frozen(kw_only=True)
class TitleMark:
    """One title of a live stream and where it began (byte ``offset``, Unix ``time``)."""

    title: str = attrs.field(validator=_TEXT)
    offset: int = attrs.field(validator=_offset)
    time: float = attrs.field(validator=_number)


@attrs.frozen(kw_only=True)
class StreamStat:
    """A stream as the wire shows it (``stat``, ``list``, ``create``, ``sync``, ``finalize``)."""

    stream: str = attrs.field(validator=_STREAM)
    status: str = attrs.field(validator=_TEXT)  # "uploading" | "ready" | "error"
    content_type: str = attrs.field(validator=_TEXT)
    metadata: Mapping[str, str] = attrs.field(
        factory=dict, converter=_frozen_dict, validator=_metadata
    )
    #: Bytes written and acknowledged: readable now, survive a server process crash.
    size: int = attrs.field(validator=_offset)
    #: Bytes made durable (msync/fsync done): survive power loss.
    durable_offset: int = attrs.field(validator=_offset)
    reserved: int = attrs.field(default=0, validator=_offset)
    created_at: float = attrs.field(validator=_number)
    last_accessed_at: float = attrs.field(validator=_number)
    finalized_at: float | None = attrs.field(default=None, validator=_number)
    sha256: str | None = attrs.field(default=None, validator=_sha256)
    error: str | None = attrs.field(default=None, validator=_OPTIONAL_TEXT)
    #: Which stream of this id it is: another one after a delete and a create. None from
    #: servers older than generations.
    generation: str | None = attrs.field(default=None, validator=_OPTIONAL_GENERATION)
    #: Where the bytes are: "local", "local+remote" (also in the object-storage tier) or
    #: "remote" (only there, read through). None from servers older than the tier.
    location: str | None = attrs.field(default=None, validator=_OPTIONAL_TEXT)
    #: The titles a live stream was given, oldest first; the last is the current one.
    titles: tuple[TitleMark, ...] = ()
    #: Media seconds (docs/protocol.md says how they are known while live); None when
    #: unknown, outside ``stat`` replies, and from servers older than it.
    duration: float | None = attrs.field(default=None, validator=_number)
    #: When the upload's first byte arrived (Unix time); None outside ``stat`` replies.
    started_at: float | None = attrs.field(default=None, validator=_number)

    @classmethod
    def from_info(cls, info: StreamInfoLike) -> StreamStat:
        status = info.status
        return cls(
            stream=info.stream_id,
            status=status if isinstance(status, str) else str(status.value),
            content_type=info.content_type,
            metadata=info.metadata,
            size=info.size,
            durable_offset=info.durable_offset,
            reserved=info.reserved,
            created_at=info.created_at,
            last_accessed_at=info.last_accessed_at,
            finalized_at=info.finalized_at,
            sha256=info.sha256,
            error=info.error,
            generation=info.generation,
            location=info.location,
            titles=tuple(
                TitleMark(title=t.title, offset=t.offset, time=t.time) for t in info.titles
            ),
            duration=info.duration,
            started_at=info.started_at,
        )


@attrs.frozen(kw_only=True)
class OkReply:
    """``{"re": id, "ok": true}``: the reply to ``delete``; the base of every success."""

    re: RequestId | None = attrs.field(validator=_request_id)


@attrs.frozen(kw_only=True)
class HelloReply(OkReply):
    """The answer to ``hello``: the protocol, the server and the limits a client paces by."""

    protocol: str = attrs.field(validator=_TEXT)
    server: str = attrs.field(validator=_TEXT)
    max_message_size: int = attrs.field(validator=_offset)
    ack_bytes: int = attrs.field(validator=_offset)
    ack_interval: float = attrs.field(validator=_number)


@attrs.frozen(kw_only=True)
class StatReply(OkReply):
    """The reply to ``create``, ``sync``, ``finalize`` and ``stat``."""

    stat: StreamStat


@attrs.frozen(kw_only=True)
class AppendReply(OkReply):
    """The upload is bound; ``offset`` is the stream's size, where the next byte goes."""

    stream: str = attrs.field(validator=_STREAM)
    offset: int = attrs.field(validator=_offset)


@attrs.frozen(kw_only=True)
class ReadReply(OkReply):
    """Exactly ``length`` bytes follow in binary frames, nothing else in between."""

    stream: str = attrs.field(validator=_STREAM)
    offset: int = attrs.field(validator=_offset)
    length: int = attrs.field(validator=_offset)


@attrs.frozen(kw_only=True)
class TailReply(OkReply):
    """Binary frames from ``offset`` on follow as the stream grows, then an ``end`` event.
    With ``header`` > 0 the first ``header`` bytes sent are the stream's header (a live
    tail), and the bytes from ``offset`` follow them."""

    stream: str = attrs.field(validator=_STREAM)
    offset: int = attrs.field(validator=_offset)
    header: int = attrs.field(default=0, validator=_offset)


def _stat_tuple(streams: Iterable[StreamStat]) -> tuple[StreamStat, ...]:
    # A typed converter: with plain ``tuple`` mypy cannot infer the parameter's type.
    return tuple(streams)


@attrs.frozen(kw_only=True)
class ListReply(OkReply):
    """The answer to ``list``: the streams the token may see."""

    streams: tuple[StreamStat, ...] = attrs.field(converter=_stat_tuple)


@attrs.frozen(kw_only=True)
class ErrorReply:
    """``{"re": id, "ok": false, "error": {"code", "message", **extra}}``."""

    re: RequestId | None = attrs.field(validator=_request_id)
    code: str = attrs.field(validator=_TEXT)
    message: str = attrs.field(validator=_TEXT)
    #: Machine-readable details, e.g. ``offset`` for ``offset-conflict``.
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_dict, validator=_extra)


Reply: TypeAlias = (
    OkReply | HelloReply | StatReply | AppendReply | ReadReply | TailReply | ListReply | ErrorReply
)


@attrs.frozen(kw_only=True)
class Ack:
    """Coalesced upload acknowledgement: ``offset`` bytes of ``stream`` are written."""

    op: ClassVar[str] = "ack"
    stream: str = attrs.field(validator=_STREAM)
    offset: int = attrs.field(validator=_offset)


@attrs.frozen(kw_only=True)
class End:
    """The followed stream stopped growing: finalized (``ready``), failed or deleted."""

    op: ClassVar[str] = "end"
    stream: str = attrs.field(validator=_STREAM)
    size: int = attrs.field(validator=_offset)
    status: str = attrs.field(default="ready", validator=_TEXT)
    sha256: str | None = attrs.field(default=None, validator=_sha256)


@attrs.frozen(kw_only=True)
class ErrorEvent:
    """An error that answers no request: a failed upload frame, an unbound binary frame."""

    op: ClassVar[str] = "error"
    stream: str | None = attrs.field(default=None, validator=_OPTIONAL_STREAM)
    code: str = attrs.field(validator=_TEXT)
    message: str = attrs.field(validator=_TEXT)
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_dict, validator=_extra)


Event: TypeAlias = Ack | End | ErrorEvent
ServerMessage: TypeAlias = Reply | Event
