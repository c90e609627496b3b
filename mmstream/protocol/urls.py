"""Where protocol v1 lives: URL paths and the WebSocket subprotocol, as pure functions.

``/v1/streams/{id}`` binds a connection to one stream, so an ordinary HTTP load balancer can
route every connection of a stream to the node that owns it; ``/v1`` is the multiplexed
endpoint where each request names its ``stream``.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import attrs

from ..errors import InvalidStreamIdError, ProtocolError
from .messages import MAX_STREAM_FIELD_LENGTH, List, Request

__all__ = ["PATH_PREFIX", "SUBPROTOCOL", "Endpoint", "endpoint_url", "parse_path", "resolve_stream"]

SUBPROTOCOL: Final = "mmstream.v1"
PATH_PREFIX: Final = "/v1"
_STREAMS_PREFIX: Final = "/v1/streams/"


@attrs.frozen
class Endpoint:
    """A v1 endpoint: ``stream`` is the id bound by the path, ``None`` when multiplexed."""

    stream: str | None = None


def parse_path(target: str) -> Endpoint | None:
    """An HTTP request target (path and optional query) → its endpoint, or ``None`` if the
    path is not a v1 endpoint (answer 404). The id is percent-decoded and otherwise passed
    through: the manager checks its alphabet, so ``%2e%2e`` fails there as ``invalid-id``, and
    so does a percent-encoding that is not UTF-8 (each bad byte becomes U+FFFD, which no id
    may hold), as the HTTP routes decode it too."""
    path = target.split("?", 1)[0]
    if path in (PATH_PREFIX, PATH_PREFIX + "/"):
        return Endpoint()
    if not path.startswith(_STREAMS_PREFIX):
        return None
    raw = path[len(_STREAMS_PREFIX) :]
    if not raw or "/" in raw or len(raw) > 3 * MAX_STREAM_FIELD_LENGTH:
        return None
    stream = unquote(raw, errors="replace") if "%" in raw else raw
    return Endpoint(stream) if len(stream) <= MAX_STREAM_FIELD_LENGTH else None


def endpoint_url(base: str, stream: str | None = None) -> str:
    """``ws://host:port`` (or ``http://``, or a URL already ending in ``/v1``) → the URL of
    the multiplexed endpoint, or of the endpoint bound to ``stream``.

    Raises :class:`InvalidStreamIdError` for an id no bound path can carry (empty, or longer
    than the protocol's field): the server would only answer 404, which blames the server.
    Other ids are left for the server to judge (``invalid-id``)."""
    if stream is not None and not 0 < len(stream) <= MAX_STREAM_FIELD_LENGTH:
        reason = "it is empty" if not stream else f"it is {len(stream)} characters long"
        raise InvalidStreamIdError(f"invalid stream id {stream[:40]!r}: {reason}")
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a ws:// or wss:// URL: {base!r}")
    path = parts.path.rstrip("/")
    if path.endswith(PATH_PREFIX):
        path = path[: -len(PATH_PREFIX)]
    path += PATH_PREFIX
    if stream is not None:
        path += "/streams/" + quote(stream, safe="")
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def resolve_stream(request: Request, bound: str | None) -> str | None:
    """The stream a request is about on a connection whose path bound ``bound`` (or none).

    ``list`` and ``hello`` concern no stream (``None``). Otherwise the request's ``stream``
    may be omitted on a bound connection and must equal the bound id when given.
    """
    if isinstance(request, List) or not hasattr(request, "stream"):
        return None
    named: str | None = request.stream
    if named is None:
        if bound is None:
            raise ProtocolError(f"{request.op}: missing field 'stream' (required on {PATH_PREFIX})")
        return bound
    if bound is not None and named != bound:
        raise ProtocolError(
            f"{request.op}: stream {named!r} is not the stream this connection is bound to"
        )
    return named
