"""Plain HTTP/1.1 on the WebSocket port, spoken through h11.

Neither WebSocket library serves plain HTTP well (trio-websocket answers 400 to anything
without ``Upgrade``; ``websockets`` copies whole bodies into memory and has no keep-alive),
so the front door hands non-upgrade requests here. A :class:`Router` maps method and path to
an async handler returning an :class:`HttpResponse` whose body is bytes or an async
iterable of pieces, written one piece at a time so memory stays bounded whatever the size.
"""

from __future__ import annotations

import contextlib
import http
import json
import logging
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol
from urllib.parse import unquote

import attrs
import h11
import trio

from .. import __version__
from ..web.clientaddr import TrustedProxies, forwarded_client, host_of
from ..web.cors import cors_headers, preflight

__all__ = [
    "MAX_HEAD_SIZE",
    "HandedOver",
    "HttpRequest",
    "HttpResponse",
    "HttpSettings",
    "Lease",
    "Router",
    "ShutdownScope",
    "TakeoverHandler",
    "json_response",
    "receive_event",
    "send_error",
    "serve_http",
    "text_response",
]

log = logging.getLogger("mmstream.server")

#: The largest request head (request line and headers) accepted.
MAX_HEAD_SIZE = 16 * 1024
#: A request body larger than this is not read: the reply is sent and the connection closed.
MAX_DISCARDED_BODY = 64 * 1024
_RECEIVE_SIZE = 64 * 1024
SERVER_HEADER = f"mmstream/{__version__}".encode()
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}


@attrs.frozen
class HttpRequest:
    """A parsed request as a route handler sees it (the body, if any, was already read)."""

    method: str
    #: The decoded path without the query string.
    path: str
    query: str
    headers: Sequence[tuple[bytes, bytes]]
    #: Values captured by ``{name}`` segments of the route.
    params: Mapping[str, str]
    remote: str

    def header_fields(self) -> dict[str, str]:
        """Lower-case names; a repeated field's values joined with commas (RFC 9110 §5.3)."""
        out: dict[str, str] = {}
        for raw_name, raw_value in self.headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None


@attrs.frozen
class HttpResponse:
    """What a route handler returns; :func:`serve_http` writes it (HEAD drops the body)."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    #: Bytes, or an async iterable of pieces (written as they come; with ``length`` set it
    #: must yield exactly that many bytes, else the body is sent chunked).
    body: bytes | AsyncIterable[bytes] = b""
    length: int | None = None


def json_response(
    status: int, payload: object, headers: Sequence[tuple[str, str]] = ()
) -> HttpResponse:
    body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
    return HttpResponse(status, [("content-type", "application/json"), *headers], body)


def text_response(status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> HttpResponse:
    body = text.encode() + b"\n"
    return HttpResponse(status, [("content-type", "text/plain; charset=utf-8"), *headers], body)


RouteHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
#: A cancel scope that a graceful shutdown cancels (at once if one has begun), for the waits
#: that never end by themselves and would hold it up until its deadline: a live response, a
#: source's next piece. The connection stays busy meanwhile (not idle: never closed to make
#: room for a newcomer).
ShutdownScope = Callable[[], AbstractContextManager[trio.CancelScope]]


class HandedOver(Protocol):
    """A connection whose task returned without ending it: whoever took it ends it with
    :meth:`finish`. Until then it is only its socket's file descriptor ``fd`` (what the
    rounds write to); what ending it takes is what the ``finally`` clauses the task left
    would have done, pushed by each (:meth:`push`) and run last-pushed first, after the
    socket is closed."""

    @property
    def fd(self) -> int: ...

    def push(self, cleanup: Callable[[], Awaitable[object]]) -> None: ...

    def finish(self, last: Callable[[trio.SocketStream], Awaitable[None]]) -> None:
        """Start the connection's last task: ``last`` (given the socket as a stream again),
        then close it and run the cleanups. Called from anywhere, without awaiting (a
        broadcaster's round, a watch noticing the client gone)."""
        ...


class Lease(Protocol):
    """What a takeover handler holds of its connection. Called, it gives the
    :data:`ShutdownScope` for open-ended waits. :meth:`hand_over` lets the handler's task
    return without ending the connection (a live listener served by its broadcaster's
    rounds needs no task: :meth:`.Broadcaster.park`)."""

    def __call__(self) -> AbstractContextManager[trio.CancelScope]: ...

    @property
    def handed(self) -> HandedOver | None:
        """Set once handed over: the layers above push their cleanup to it rather than
        running it as the task returns."""
        ...

    def hand_over(self, cut: Callable[[], None]) -> HandedOver | None:
        """Hand the connection over (None: it cannot be, e.g. the server is shutting
        down; keep the task): its socket is detached from the task's stream, which the
        task must not use any more. ``cut`` ends it early, without awaiting (a shutdown): its
        new owner then calls :meth:`HandedOver.finish` as for any end."""
        ...


#: A handler that may take the connection over (a request body read as it streams in, a
#: response that never ends): it returns True once it has answered, and the connection is
#: then closed (or was handed over: :class:`Lease`); False to let the ordinary route answer.
#: It gets the request before its body, and the connection's :class:`Lease`.
TakeoverHandler = Callable[
    [HttpRequest, trio.abc.HalfCloseableStream, h11.Connection, Lease], Awaitable[bool]
]
_SEGMENT = re.compile(r"\{(\w+)\}")


@attrs.define
class _Route:
    pattern: re.Pattern[str]
    handlers: dict[str, RouteHandler]
    takeovers: dict[str, TakeoverHandler] = attrs.Factory(dict)


class Router:
    """Method + path → handler. Patterns are literal paths with ``{name}`` segments, each
    matching one non-empty path segment. ``HEAD`` is served wherever ``GET`` is."""

    def __init__(self, cors_origins: Sequence[str] = ()) -> None:
        self._routes: dict[str, _Route] = {}
        #: ``server.cors_origins``: every answer carries the CORS headers its request's
        #: ``Origin`` earns, and ``OPTIONS`` preflights are answered (:mod:`mmstream.web.cors`).
        self.cors_origins = tuple(cors_origins)

    def add(self, method: str, pattern: str, handler: RouteHandler) -> None:
        route = self._routes.get(pattern)
        if route is None:
            regex = _SEGMENT.sub(
                r"(?P<\1>[^/]+)", re.escape(pattern).replace(r"\{", "{").replace(r"\}", "}")
            )
            route = self._routes[pattern] = _Route(re.compile(f"^{regex}$"), {})
        route.handlers[method.upper()] = handler

    def add_takeover(self, method: str, pattern: str, handler: TakeoverHandler) -> None:
        """Offer ``method`` requests on ``pattern`` to ``handler`` first (see
        :data:`TakeoverHandler`); a method with only a takeover is routed as allowed."""
        route = self._routes.get(pattern)
        if route is None or method.upper() not in route.handlers:
            self.add(method, pattern, _not_taken)
        self._routes[pattern].takeovers[method.upper()] = handler

    def takeover(self, method: str, path: str) -> tuple[TakeoverHandler, dict[str, str]] | None:
        for route in self._routes.values():
            handler = route.takeovers.get(method)
            if handler is not None and (match := route.pattern.match(path)):
                return handler, match.groupdict()
        return None

    def route(self, method: str, pattern: str) -> Callable[[RouteHandler], RouteHandler]:
        def decorate(handler: RouteHandler) -> RouteHandler:
            self.add(method, pattern, handler)
            return handler

        return decorate

    def resolve(self, method: str, path: str) -> tuple[RouteHandler, dict[str, str]] | list[str]:
        """The handler and captured values, or (no handler) the methods the path allows:
        empty for an unknown path (404), else a 405 with ``Allow``."""
        allowed: list[str] = []
        for route in self._routes.values():
            match = route.pattern.match(path)
            if match is None:
                continue
            methods = dict(route.handlers)
            if "GET" in methods:
                methods.setdefault("HEAD", methods["GET"])
            handler = methods.get(method)
            if handler is not None:
                return handler, match.groupdict()
            allowed.extend(methods)
        return sorted(set(allowed))


Incoming = h11.Request | h11.Data | h11.EndOfMessage | h11.ConnectionClosed | type[h11.PAUSED]


async def receive_event(stream: trio.abc.Stream, conn: h11.Connection) -> Incoming:
    """The next h11 event, reading the socket as needed. Raises h11.RemoteProtocolError."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
            continue
        assert (
            isinstance(event, h11.Request | h11.Data | h11.EndOfMessage | h11.ConnectionClosed)
            or event is h11.PAUSED
        )
        return event


@attrs.define
class HttpSettings:
    """What every HTTP connection of the front door shares: the routes, the timeouts and the
    shutdown flags."""

    router: Router
    #: Seconds a keep-alive connection may take to send its next complete request head.
    head_timeout: float
    #: Set when the server shuts down: finish the current response, then close.
    shutting_down: Callable[[], bool]
    #: For live responses and takeovers' open-ended waits.
    until_shutdown: ShutdownScope
    #: ``server.trusted_proxies``: their ``X-Forwarded-For`` names a request's client.
    trusted_proxies: TrustedProxies = attrs.Factory(TrustedProxies)


async def serve_http(
    stream: trio.abc.HalfCloseableStream,
    conn: h11.Connection,
    request: h11.Request,
    settings: HttpSettings,
    *,
    remote: str,
    connection_id: str,
    idle_scope: Callable[[], AbstractContextManager[trio.CancelScope]],
    lease: Lease,
) -> None:
    """Answer ``request`` and every following request on the connection (keep-alive).

    ``idle_scope`` gives a cancel scope for the wait between requests, which a shutdown
    cancels so idle keep-alive connections close at once; ``lease`` is what a takeover
    handler gets of the connection."""
    while True:
        keep_alive = await _answer(
            stream, conn, request, settings, remote=remote, connection_id=connection_id,
            lease=lease,
        )  # fmt: skip
        if not keep_alive or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()
        with idle_scope() as scope:
            scope.deadline = min(scope.deadline, trio.current_time() + settings.head_timeout)
            try:
                event = await receive_event(stream, conn)
            except h11.RemoteProtocolError as exc:
                await send_error(stream, conn, exc.error_status_hint, str(exc))
                return
        if scope.cancelled_caught or not isinstance(event, h11.Request):
            return
        request = event


async def _answer(
    stream: trio.abc.HalfCloseableStream,
    conn: h11.Connection,
    request: h11.Request,
    settings: HttpSettings,
    *,
    remote: str,
    connection_id: str,
    lease: Lease,
) -> bool:
    """Send one response; whether the connection may serve another request."""
    method = request.method.decode("ascii", "replace").upper()
    target = request.target.decode("ascii", "replace")
    raw_path, _, query = target.partition("?")
    if settings.trusted_proxies:
        remote = _forwarded(remote, request, settings.trusted_proxies)
    takeover = settings.router.takeover(method, unquote(raw_path))
    if takeover is not None:
        handler, params = takeover
        taken = HttpRequest(method, unquote(raw_path), query, list(request.headers), params, remote)
        if await handler(taken, stream, conn, lease):
            return False
    try:
        body_read = await _discard_body(stream, conn)
    except h11.RemoteProtocolError as exc:  # a body cut short or badly framed: not served
        await send_error(stream, conn, exc.error_status_hint, str(exc))
        return False
    router = settings.router
    response = await _dispatch(router, method, unquote(raw_path), query, request, remote)
    if router.cors_origins:
        response = _with_cors(router, method, unquote(raw_path), request, response)
    log.debug("http conn=%s %s %s -> %d", connection_id, method, target, response.status)
    close = not body_read or settings.shutting_down()
    head_only = method == "HEAD"
    if head_only or isinstance(response.body, bytes) or response.length is not None:
        await _send_response(stream, conn, response, head_only=head_only, close=close)
        return not close
    # No length: a live stream's body, which ends when its stream does, not at a shutdown.
    with settings.until_shutdown() as scope:
        await _send_response(stream, conn, response, head_only=False, close=close)
    return not (close or scope.cancelled_caught)


def _forwarded(remote: str, request: h11.Request, trusted: TrustedProxies) -> str:
    """The request's client: ``remote``, or the address a trusted proxy forwarded."""
    peer = host_of(remote)
    client = forwarded_client(peer, request.headers, trusted)
    return remote if client == peer else client


def _with_cors(
    router: Router, method: str, path: str, request: h11.Request, response: HttpResponse
) -> HttpResponse:
    """Add the CORS headers ``Origin`` earns; answer a preflight ``OPTIONS`` on a path that
    serves ``GET`` with 204 (else the 405 stands)."""
    fields = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}
    origin = fields.get("origin")
    if method == "OPTIONS" and not isinstance(router.resolve("GET", path), list):
        answer = preflight(
            origin,
            fields.get("access-control-request-method"),
            fields.get("access-control-request-headers"),
            router.cors_origins,
        )
        if answer is not None:
            return HttpResponse(204, answer)
    extra = cors_headers(origin, router.cors_origins)
    return attrs.evolve(response, headers=[*response.headers, *extra]) if extra else response


async def _not_taken(request: HttpRequest) -> HttpResponse:
    """Where a takeover handler declined and no ordinary route exists."""
    return text_response(405, "method not allowed here")


async def _dispatch(
    router: Router, method: str, path: str, query: str, request: h11.Request, remote: str
) -> HttpResponse:
    found = router.resolve(method, path)
    if isinstance(found, list):
        if not found:
            return text_response(404, "not found")
        return text_response(405, "method not allowed", [("allow", ", ".join(found))])
    handler, params = found
    http_request = HttpRequest(method, path, query, list(request.headers), params, remote)
    try:
        return await handler(http_request)
    except Exception:
        log.exception("http handler failed: %s %s", method, path)
        return text_response(500, "internal server error")


async def _discard_body(stream: trio.abc.Stream, conn: h11.Connection) -> bool:
    """Read and drop a (small) request body; False when it was too big to bother.
    Raises h11.RemoteProtocolError for a body that breaks its framing."""
    seen = 0
    while True:
        event = await receive_event(stream, conn)
        match event:
            case h11.Data(data=data):
                seen += len(data)
                if seen > MAX_DISCARDED_BODY:
                    return False
            case h11.EndOfMessage() | h11.PAUSED:
                return True
            case _:
                return False


async def _send_response(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    response: HttpResponse,
    *,
    head_only: bool,
    close: bool,
) -> None:
    headers: list[tuple[bytes, bytes]] = [(b"server", SERVER_HEADER)]
    headers += [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    body = response.body
    if isinstance(body, bytes):
        headers.append((b"content-length", str(len(body)).encode()))
    elif response.length is not None:
        headers.append((b"content-length", str(response.length).encode()))
    elif conn.their_http_version == b"1.0":
        close = True  # no chunked encoding for HTTP/1.0: the end of the body is the close
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    if close:
        headers.append((b"connection", b"close"))
    reason = _REASONS.get(response.status, b"")
    await stream.send_all(
        conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    )
    if isinstance(body, bytes):
        if body and not head_only:
            await stream.send_all(conn.send(h11.Data(data=body)))
    elif head_only:
        await _close_iterable(body)
    else:
        try:
            async for piece in body:
                if piece:
                    await stream.send_all(conn.send(h11.Data(data=piece)))
        finally:
            await _close_iterable(body)
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def _close_iterable(body: AsyncIterable[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()


async def send_error(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    status: int,
    message: str,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    """Best effort: answer a broken request, if h11 still lets us."""
    if conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
        return
    response = text_response(status, message, headers)
    with contextlib.suppress(
        h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError
    ):
        await _send_response(stream, conn, response, head_only=False, close=True)
