"""Text frames ⇄ messages, for both ends of a connection; no I/O, no event loop.

Requests are decoded strictly (hostile input: unknown or missing fields, wrong types and
out-of-range numbers are each a :class:`MalformedRequestError` naming the field); server
messages are decoded leniently (unknown fields are ignored, so an older client keeps working
against a newer server). Binary frames never pass through here: they are data, not messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from ..errors import (
    ChecksumMismatchError,
    ConflictError,
    InvalidStreamIdError,
    MmstreamError,
    NoSpaceError,
    NotUploadingError,
    OffsetConflictError,
    OutOfRangeError,
    ProtocolError,
    QuotaExceededError,
    StorageError,
    StreamBusyError,
    StreamChangedError,
    StreamExistsError,
    StreamNotFoundError,
    TooLargeError,
    UnauthorizedError,
)
from .messages import (
    MAX_OFFSET,
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
    Hello,
    HelloReply,
    List,
    ListReply,
    Metadata,
    OkReply,
    Read,
    ReadReply,
    Reply,
    Request,
    RequestId,
    ServerMessage,
    Stat,
    StatReply,
    Sync,
    Tail,
    TailReply,
)

__all__ = [
    "REPLY_TYPES",
    "REQUEST_TYPES",
    "WIRE_ERRORS",
    "MalformedRequestError",
    "decode_request",
    "decode_server_message",
    "encode_event",
    "encode_reply",
    "encode_request",
    "error_event",
    "error_reply",
    "exception_from_wire",
    "internal_error_reply",
]

REQUEST_TYPES: Final[Mapping[str, type[Request]]] = {
    cls.op: cls
    for cls in (Hello, Create, Append, Sync, Finalize, Read, Tail, Stat, List, Delete, Metadata)
}

#: What a successful reply to each request looks like; the client decodes by it.
REPLY_TYPES: Final[Mapping[type[Request], type[OkReply]]] = {
    Hello: HelloReply,
    Create: StatReply,
    Append: AppendReply,
    Sync: StatReply,
    Finalize: StatReply,
    Read: ReadReply,
    Tail: TailReply,
    Stat: StatReply,
    List: ListReply,
    Delete: OkReply,
    Metadata: StatReply,
}

_EVENT_TYPES: Final[Mapping[str, type[Event]]] = {"ack": Ack, "end": End}

#: Every error code the wire carries → the exception a client raises for it.
#: Codes of mmstream errors that are not listed here go out as ``internal``.
WIRE_ERRORS: Final[Mapping[str, type[MmstreamError]]] = {
    "bad-request": ProtocolError,
    "invalid-id": InvalidStreamIdError,
    "not-found": StreamNotFoundError,
    "stream-changed": StreamChangedError,
    "exists": StreamExistsError,
    "conflict": ConflictError,
    "offset-conflict": OffsetConflictError,
    "busy": StreamBusyError,
    "not-uploading": NotUploadingError,
    "checksum-mismatch": ChecksumMismatchError,
    "out-of-range": OutOfRangeError,
    "too-large": TooLargeError,
    "quota": QuotaExceededError,
    "no-space": NoSpaceError,
    "io-error": StorageError,
    "unauthorized": UnauthorizedError,
    "closed": MmstreamError,
    "internal": MmstreamError,
}


class MalformedRequestError(ProtocolError):
    """A text frame that is not a valid request. ``request_id`` is its ``id`` when that much
    could be read, so the error reply still correlates with what the client sent."""

    def __init__(self, message: str, *, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def _passthrough(value: Any, _: Any) -> Any:
    # The attrs validators check every field with messages naming it; cattrs' own
    # conversions would quietly turn "5" or 5.7 or true into 5.
    return value


def _make_converter(*, strict: bool) -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=strict)
    for scalar in (int, str, float, bool):
        converter.register_structure_hook(scalar, _passthrough)
    converter.register_structure_hook_func(
        lambda t: t == (RequestId | None) or t == Mapping[str, str] or t == Mapping[str, Any],
        _passthrough,
    )
    return converter


_requests = _make_converter(strict=True)
_server = _make_converter(strict=False)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(data: str | bytes | bytearray | memoryview) -> Any:
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise MalformedRequestError("not a JSON text: invalid UTF-8") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        reason = exc.args[0] if isinstance(exc, ValueError) and exc.args else "nested too deeply"
        raise MalformedRequestError(f"not a JSON text: {str(reason)[:80]}") from None


def _describe(exc: BaseException, path: str) -> list[str]:
    """Readable reasons, each naming the field, from a cattrs error tree."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without = exc.group_exceptions()
        reasons: list[str] = []
        for inner, note in with_notes:
            name = getattr(note, "name", None)
            step = str(name) if name is not None else f"[{getattr(note, 'index', '?')}]"
            reasons += _describe(inner, f"{path}.{step}" if path and name else path + step)
        for inner in without:
            reasons += _describe(inner, path)
        return reasons
    if isinstance(exc, ForbiddenExtraKeysError):
        names = ", ".join(sorted(repr(k) for k in exc.extra_fields))
        return [f"unknown field(s) {names}" + (f" in {path}" if path else "")]
    if isinstance(exc, KeyError):
        return [f"missing field {path or exc.args[0]!r}"]
    if isinstance(exc, ValueError) and exc.args:
        return [str(exc.args[0])]
    return [f"{path or 'message'}: invalid value"]


def _explain(exc: Exception) -> str:
    return "; ".join(_describe(exc, "")[:3]) or "invalid message"


def _request_id_of(obj: Mapping[str, Any]) -> RequestId | None:
    rid = obj.get("id")
    if type(rid) is int and -(2**63) <= rid < 2**63:
        return rid
    if type(rid) is str and len(rid) <= 64:
        return rid
    return None


def decode_request(data: str | bytes | bytearray | memoryview) -> Request:
    """One text frame from a client → a request, or :class:`MalformedRequestError`."""
    obj = _loads(data)
    if type(obj) is not dict:
        raise MalformedRequestError(f"expected a JSON object, got {type(obj).__name__}")
    op = obj.pop("op", None)
    cls = REQUEST_TYPES.get(op) if type(op) is str else None
    if cls is None:
        known = ", ".join(REQUEST_TYPES)
        what = "missing field 'op'" if op is None else f"unknown op {str(op)[:40]!r}"
        raise MalformedRequestError(f"{what} (one of {known})", request_id=_request_id_of(obj))
    try:
        return _requests.structure(obj, cls)
    except Exception as exc:  # cattrs wraps every field's failure in one error tree
        raise MalformedRequestError(
            f"{op}: {_explain(exc)}", request_id=_request_id_of(obj)
        ) from None


def encode_request(request: Request) -> str:
    body = {"op": request.op}
    for key, value in _requests.unstructure(request).items():
        if value is not None and not (key == "metadata" and not value):
            body[key] = value
    return _dumps(body)


def encode_reply(reply: Reply) -> str:
    match reply:
        case ErrorReply(re=re, code=code, message=message, extra=extra):
            return _dumps(
                {"re": re, "ok": False, "error": {"code": code, "message": message, **extra}}
            )
        case _:
            body = _server.unstructure(reply)
            return _dumps({"re": body.pop("re"), "ok": True, **body})


def encode_event(event: Event) -> str:
    match event:
        case ErrorEvent(stream=stream, code=code, message=message, extra=extra):
            error = {"code": code, "message": message, **extra}
            return _dumps({"op": "error", "stream": stream, "error": error})
        case _:
            return _dumps({"op": event.op, **_server.unstructure(event)})


#: A stream name JSON writes as it is (no escape), short enough for ``Ack.stream``.
_PLAIN_STREAM = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def encode_ack(stream: str, offset: int) -> str:
    """``encode_event(Ack(stream=stream, offset=offset))``, formatted directly: the server
    sends one per upload every ``ack_interval`` (20,000 a second with 1,000 real-time
    streams), and building the event costs 7 µs where this costs under 1. Anything but a
    plain stream name and a valid offset goes the general way (and raises the same)."""
    if type(offset) is int and 0 <= offset <= MAX_OFFSET and _PLAIN_STREAM.fullmatch(stream):
        return f'{{"op":"ack","stream":"{stream}","offset":{offset}}}'
    return encode_event(Ack(stream=stream, offset=offset))


def decode_server_message(
    data: str | bytes | bytearray | memoryview, *, expect: type[OkReply] | None = None
) -> ServerMessage:
    """One text frame from the server → an event or a reply.

    A successful reply carries no type of its own: ``expect`` is the reply type of the
    request it answers (``REPLY_TYPES[type(request)]``), which the client knows because
    replies come in request order. Raises :class:`~mmstream.errors.ProtocolError`.
    """
    obj = _loads(data)
    if type(obj) is not dict:
        raise ProtocolError(f"server sent a {type(obj).__name__}, not a JSON object")
    try:
        if "op" in obj:
            return _decode_event(obj)
        if "re" not in obj or type(obj.get("ok")) is not bool:
            raise ProtocolError("server message has neither 'op' nor 're' and 'ok'")
        if obj["ok"]:
            if expect is None:
                raise ProtocolError(f"unexpected reply to request {obj['re']!r}")
            return _server.structure(obj, expect)
        re, error = obj["re"], obj.get("error")
        return ErrorReply(re=re, **_split_error(error))
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed server message: {_explain(exc)}") from None


def _decode_event(obj: dict[str, Any]) -> Event:
    op = obj["op"]
    if op == "error":
        return ErrorEvent(stream=obj.get("stream"), **_split_error(obj.get("error")))
    cls = _EVENT_TYPES.get(op) if type(op) is str else None
    if cls is None:
        raise ProtocolError(f"unknown server event {str(op)[:40]!r}")
    return _server.structure(obj, cls)


def _split_error(error: object) -> dict[str, Any]:
    if type(error) is not dict:
        raise ProtocolError("error reply without an 'error' object")
    extra = dict(error)
    return {"code": extra.pop("code", None), "message": extra.pop("message", None), "extra": extra}


def _wire_code(exc: MmstreamError) -> tuple[str, dict[str, Any]]:
    code = exc.code if exc.code in WIRE_ERRORS else "internal"
    match exc:
        case OffsetConflictError(actual=actual):
            return code, {"offset": actual}
        case StorageError(errno=errno) if errno is not None:
            return code, {"errno": errno}
        case _:
            return code, {}


def error_reply(request_id: RequestId | None, exc: MmstreamError) -> ErrorReply:
    """The reply for a request that failed with ``exc``."""
    code, extra = _wire_code(exc)
    return ErrorReply(re=request_id, code=code, message=exc.public_message, extra=extra)


def error_event(stream: str | None, exc: MmstreamError) -> ErrorEvent:
    """The unsolicited error for a failure no request is waiting on (an upload frame)."""
    code, extra = _wire_code(exc)
    return ErrorEvent(stream=stream, code=code, message=exc.public_message, extra=extra)


def internal_error_reply(request_id: RequestId | None) -> ErrorReply:
    """For a bug: the details go to the server log, never to the peer."""
    return ErrorReply(re=request_id, code="internal", message="internal server error")


def exception_from_wire(error: ErrorReply | ErrorEvent) -> MmstreamError:
    """The exception a client raises for an error the server sent."""
    cls = WIRE_ERRORS.get(error.code, MmstreamError)
    exc: MmstreamError
    if cls is OffsetConflictError:
        offset = error.extra.get("offset")
        exc = OffsetConflictError(error.message, actual=offset if type(offset) is int else -1)
    elif issubclass(cls, StorageError):
        errno = error.extra.get("errno")
        exc = cls(error.message, errno=errno if type(errno) is int else None)
    else:
        exc = cls(error.message)
    if exc.code != error.code:
        exc.code = error.code  # "closed", "internal" and codes of newer servers stay visible
    return exc
