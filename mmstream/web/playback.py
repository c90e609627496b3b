"""``GET``/``HEAD /streams/{id}``: a stream's bytes for ``<audio src>``, ``curl -r`` and friends.

:func:`stream_response` turns a request into a :class:`Response` — status, headers and an
async iterator of body pieces — so whatever speaks HTTP on the socket (the server's h11 front
door) only moves bytes. Bodies come from the manager in pieces of at most ``piece_size``
bytes, one piece at a time: the sender awaits each send before the next piece is read, so a
slow client slows its own response down (TCP backpressure) and memory per response stays at
one piece, whatever the stream's size.

A stream still UPLOADING is served live: a request without a range (or ``bytes=0-``) gets
200 with no length (chunked), the bytes written so far, then more as they arrive, and the
body ends when the stream is finalized. If the stream is deleted (or deleted and created
again: another generation) or fails meanwhile, the body stops short and the connection must be
closed, so the client sees an incomplete response rather than a clean end. See :mod:`mmstream.web.ranges` for ranges on a growing
stream.
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import AsyncGenerator, Callable, Mapping

import attrs

from ..audio import detect_format
from ..errors import MmstreamError, StorageError, StreamNotFoundError
from ..metrics import Metrics
from ..streams import DEFAULT_CONTENT_TYPE, StreamInfo, StreamManager, StreamStatus
from .media import served_type
from .ranges import Full, Live, Partial, Unsatisfiable, evaluate_range
from .timeseek import parse_time_query

__all__ = [
    "HTTP_STATUS",
    "PIECE_SIZE",
    "Response",
    "error_response",
    "etag_of",
    "stream_response",
]

#: Bytes read from the cache and sent per piece.
PIECE_SIZE = 64 * 1024

#: The server's follow path: (stream id, generation, start) -> every byte of that stream
#: from ``start`` as it grows, until it is finalized (raises if it fails or is deleted).
Follow = Callable[[str, str, int], AsyncGenerator[bytes]]

#: The HTTP status for each wire error code (anything else: 500).
HTTP_STATUS: Mapping[str, int] = {
    "bad-request": 400,
    "invalid-id": 400,
    "unauthorized": 401,
    "not-found": 404,
    "stream-changed": 404,
    "out-of-range": 416,
    "too-large": 413,
    "quota": 507,
    "no-space": 507,
    "io-error": 503,
    "closed": 503,
}

Headers = list[tuple[str, str]]


@attrs.frozen
class Response:
    """What to send. ``body`` is ``None`` for none (304), else bytes or pieces; when it is
    pieces, ``Content-Length`` (if present) is exactly what they add up to."""

    status: int
    headers: Headers
    body: bytes | AsyncGenerator[bytes, None] | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def error_response(exc: MmstreamError, metrics: Metrics | None = None) -> Response:
    """A short plain-text error, its status from the error's wire code; counted in
    ``mmstream_errors_total`` when ``metrics`` are given (every refusal a client sees is)."""
    if metrics is not None:
        metrics.errors.labels(exc.code).inc()
    body = f"{exc.code}: {exc.public_message}\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-store"),
    ]
    return Response(HTTP_STATUS.get(exc.code, 500), headers, body)


def _http_date(unix: float) -> str:
    return email.utils.formatdate(unix, usegmt=True)


def etag_of(info: StreamInfo) -> str | None:
    """A READY stream's entity tag: its generation and its sha256. Its bytes never change,
    but the same id may name another stream later (delete, then create): the generation
    tells them apart, even when the bytes are the same."""
    if info.status is not StreamStatus.READY or info.sha256 is None:
        return None
    return f'"{info.generation}-{info.sha256}"'


async def _content_type(manager: StreamManager, info: StreamInfo) -> str:
    """The stored type, or, for the generic default, what the first bytes say."""
    if info.content_type != DEFAULT_CONTENT_TYPE or info.size == 0:
        return info.content_type
    found = detect_format(await manager.read(info.stream_id, 0, 64, generation=info.generation))
    return found.content_type if found is not None else info.content_type


async def stream_response(
    manager: StreamManager,
    stream_id: str,
    request_headers: Mapping[str, str],
    *,
    piece_size: int = PIECE_SIZE,
    metrics: Metrics | None = None,
    query: str = "",
    follow: Follow,
) -> Response:
    """Answer ``GET /streams/{stream_id}``; header names are lower case. For ``HEAD`` the
    sender sends the same head and drops the body (an iterator it never starts reads
    nothing). A ``query`` with ``t=`` or ``at=`` asks for a time (:mod:`.timeseek`).

    A growing stream's body comes from ``follow``, the server's one follow path (its
    per-stream broadcaster: ``FanoutHub.follow``). It is a parameter, not an import,
    because ``web/`` does not import ``server/``; and it is required, so there is no
    second way to follow a stream here (the sans-server tests pass a real hub too)."""
    try:
        asked = parse_time_query(query)
        info = await manager.find(stream_id)  # stat, or found in the tier (docs/tiering.md)
        if info.status is StreamStatus.ERROR:
            # Quarantined: its bytes are not trusted (the manager refuses to read them too).
            raise StorageError(f"stream {stream_id} is in error: {info.error}")
        content_type = await _content_type(manager, info)
        if asked is not None:
            found = await manager.seek(
                stream_id, seconds=asked.seconds, at=asked.at, generation=info.generation
            )
    except MmstreamError as exc:
        return error_response(exc, metrics)
    growing = info.status is StreamStatus.UPLOADING
    headers: Headers = [*served_type(content_type).headers, ("Accept-Ranges", "bytes")]
    pieces = _Pieces(manager, stream_id, info.generation, piece_size, metrics, follow)
    if asked is not None:
        # From a time: the header a decoder needs, then the stream from a boundary. The
        # body is not the stream's (no validators); a live one goes on as bytes arrive.
        headers += [("X-Mmstream-Time", f"{found.time:.3f}"),
                    ("X-Mmstream-Offset", str(found.offset))]  # fmt: skip
        if growing:
            headers.append(("Cache-Control", "no-store"))
            return Response(200, headers, pieces.live(found.offset, found.header))
        headers += [("Cache-Control", "no-cache"),
                    ("Content-Length", str(len(found.header) + info.size - found.offset))]  # fmt: skip
        return Response(200, headers, pieces.span(found.offset, info.size, found.header))
    etag = last_modified = None
    if growing:
        headers.append(("Cache-Control", "no-store"))
    else:
        etag = etag_of(info)
        last_modified = _http_date(info.finalized_at or info.created_at)
        headers += [("Cache-Control", "no-cache"), ("Last-Modified", last_modified)]
        if etag:
            headers.append(("ETag", etag))
            if _none_match(request_headers.get("if-none-match"), etag):
                # The length a 200 would have had (RFC 9110 §8.6), and no body.
                return Response(304, [*headers, ("Content-Length", str(info.size))])
    decision = evaluate_range(
        request_headers.get("range"),
        info.size,
        growing=growing,
        if_range=request_headers.get("if-range"),
        etag=etag,
        last_modified=last_modified,
    )
    match decision:
        case Full(size=size):
            headers.append(("Content-Length", str(size)))
            return Response(200, headers, pieces.span(0, size))
        case Partial(start=start, stop=stop):
            headers += [("Content-Range", decision.content_range),
                        ("Content-Length", str(stop - start))]  # fmt: skip
            return Response(206, headers, pieces.span(start, stop))
        case Live(start=start):
            return Response(200, headers, pieces.live(start))
        case Unsatisfiable():
            if decision.content_range is not None:
                headers.append(("Content-Range", decision.content_range))
            headers.append(("Content-Length", "0"))
            return Response(416, headers, b"")


def _none_match(value: str | None, etag: str) -> bool:
    if value is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in value.split(",")}
    return "*" in tags or etag in tags


@attrs.define
class _Pieces:
    manager: StreamManager
    stream_id: str
    #: The stream the head describes: a piece of another one under the same id is refused
    #: (StreamChangedError), and the response is cut short.
    generation: str
    piece_size: int
    metrics: Metrics | None
    #: The server's one follow path, for a growing stream.
    follow: Follow

    async def _read(self, offset: int, length: int) -> bytes:
        data = await self.manager.read(self.stream_id, offset, length, generation=self.generation)
        if not data:
            # Shorter than its Content-Length promised: only if the stream changed under us.
            raise StreamNotFoundError(f"stream {self.stream_id} ended at {offset}")
        if self.metrics is not None:
            self.metrics.bytes_out.labels("http").inc(len(data))
        return data

    async def span(self, start: int, stop: int, header: bytes = b"") -> AsyncGenerator[bytes, None]:
        position = start
        # Not evicted while the response is sent.
        with self.manager.hold(self.stream_id, generation=self.generation):
            if header:
                yield header
            while position < stop:
                data = await self._read(position, min(self.piece_size, stop - position))
                position += len(data)
                yield data

    async def live(self, start: int, header: bytes = b"") -> AsyncGenerator[bytes, None]:
        """``header``, then everything from ``start``, waiting for more until the stream
        is finalized."""
        if self.metrics is not None:
            self.metrics.followers.inc()
        try:
            if header:
                yield header
            followed = self.follow(self.stream_id, self.generation, start)
            async with contextlib.aclosing(followed) as pieces:
                async for data in pieces:
                    yield data
        finally:
            if self.metrics is not None:
                self.metrics.followers.dec()
