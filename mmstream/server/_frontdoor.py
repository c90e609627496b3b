"""The front door: one listening port for WebSockets and plain HTTP.

Each accepted TCP connection gets a slot from the :class:`~._admission.ConnectionLimiter`
(at a cap, the longest-idle connection is closed to make room; when every slot is busy the
newcomer is read briefly, a health check answered and anything else refused with 503), its
first request head is read with h11 within the handshake timeout (slow or silent clients are
dropped at that deadline), and then:

- a WebSocket upgrade goes on to the configured transport over a :class:`ReplayStream`
  that gives the library the request head again;
- anything else is served by the HTTP handler, with keep-alive.

A connection that breaks or fails in any way ends alone: nothing it does reaches the
listener or the other connections.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial

import attrs
import h11
import trio

from ..config import ServerConfig
from ..logs import tag_task
from ..web.clientaddr import MAX_PROXY_LINE, TrustedProxies, forwarded_client, parse_proxy_v1
from ._admission import ConnectionLimiter, Slot
from ._budget import ByteBudget
from ._http import (
    MAX_HEAD_SIZE,
    HandedOver,
    HttpSettings,
    Lease,
    Router,
    receive_event,
    send_error,
    serve_http,
)
from ._replay import ReplayStream
from ._transports import Connection, Transport

__all__ = ["FrontDoor", "SessionHandler", "WebSocketSide"]

log = logging.getLogger("mmstream.server")

#: How long a refused client gets to read its 503 before the socket is closed.
_REFUSAL_LINGER = 1.0
#: How long a connection beyond the cap (an overflow slot) may take to send its request head.
_OVERFLOW_HEAD_TIMEOUT = 1.0
#: What a connection may hold beyond its largest message (the frame's header, the next one).
_FRAME_ROOM = 64 * 1024
#: Seconds between looks at a PROXY line that came in pieces.
_PROXY_POLL = 0.005
#: The `kind` of a connection that only served a load-balancer health check.
_HEALTH_CHECK = "health-check"

#: Serves protocol v1 on an open WebSocket; the session marks its slot idle or busy and
#: takes over what evicting it means (a closing handshake rather than a dropped socket).
SessionHandler = Callable[[Connection, Slot | None], Awaitable[None]]
#: Builds the transport and the session handler; the front door calls it at the first
#: WebSocket upgrade, so a server that only ever speaks HTTP and Icecast never loads the
#: protocol, its sessions or the WebSocket library.
WebSocketSide = Callable[[], tuple[Transport, SessionHandler]]


class FrontDoor:
    """The one listening port's handler: caps, the first request head, then a WebSocket
    session or plain HTTP (see the module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        websockets: WebSocketSide,
        router: Router,
        *,
        websocket_path: Callable[[str], bool] = lambda path: True,
        origin_allowed: Callable[[str | None], bool] = lambda origin: True,
    ) -> None:
        self.config = config
        self._build_websockets = websockets
        self._websockets: tuple[Transport, SessionHandler] | None = None
        self.websocket_path = websocket_path
        self.origin_allowed = origin_allowed
        self.trusted_proxies = TrustedProxies(config.trusted_proxies)
        self.http = HttpSettings(
            router,
            config.handshake_timeout,
            lambda: self.shutting_down,
            self.until_shutdown,
            self.trusted_proxies,
        )
        #: For the one request of a connection beyond the cap: answered, then closed.
        self._http_once = HttpSettings(
            router, config.handshake_timeout, lambda: True, self.until_shutdown,
            self.trusted_proxies,
        )  # fmt: skip
        self.shutting_down = False
        self._ids = itertools.count(1)
        self.limiter = ConnectionLimiter(config.max_connections, config.max_connections_per_ip)
        #: What WebSockets may hold received and not yet applied (see :mod:`._budget`).
        self.receive_budget = ByteBudget(
            config.receive_budget,
            max(config.connection_buffer, config.max_message_size + _FRAME_ROOM),
        )
        #: What a shutdown cancels: waits for a next request, live responses, sources.
        self._shutdown_scopes: set[trio.CancelScope] = set()
        #: Connections handed over by their task (:class:`Lease`), each with its ``cut``.
        self.handed_over: set[_Lease] = set()

    @property
    def active_connections(self) -> int:
        return self.limiter.active

    def begin_shutdown(self) -> None:
        """Refuse new work: handshakes in progress get 503, idle keep-alive connections,
        live responses and Icecast sources close now, other HTTP responses in progress
        finish and then close."""
        self.shutting_down = True
        if self._websockets is not None:
            self._websockets[0].begin_shutdown()
        for scope in self._shutdown_scopes:
            scope.cancel()
        for lease in list(self.handed_over):
            assert lease.cut is not None
            lease.cut()

    def websockets(self) -> tuple[Transport, SessionHandler]:
        """The transport and the session handler, built on the first call."""
        if self._websockets is None:
            self._websockets = self._build_websockets()
            if self.shutting_down:
                self._websockets[0].begin_shutdown()
        return self._websockets

    async def handle(self, stream: trio.SocketStream) -> None:
        """The ``trio.serve_listeners`` handler: one call per accepted connection."""
        ip, remote = _peer(stream)
        connection_id = f"c{next(self._ids)}"
        tag_task(connection=connection_id)
        if ip in self.trusted_proxies:
            # Before admission: the per-address cap counts the client, not the proxy.
            deadline = trio.current_time() + self.config.handshake_timeout
            try:
                client = await _proxy_header(stream, deadline)
            except (ValueError, OSError) as exc:
                log.warning("connection refused conn=%s remote=%s: %s", connection_id, remote, exc)
                await trio.aclose_forcefully(stream)
                return
            if client is not None:
                ip, port = client
                remote = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        if self.shutting_down:
            log.warning(
                "connection refused conn=%s remote=%s: shutting down", connection_id, remote
            )
            await _refuse(stream, "server is shutting down")
            return
        slot = self.limiter.admit(ip)
        lease = _Lease(self, stream, slot, connection_id, remote, trio.current_time(),
                       trio.lowlevel.current_task().parent_nursery)  # fmt: skip
        kind = "none"
        try:
            with trio.CancelScope() as scope:
                slot.evict = partial(_evict, scope, connection_id, remote)
                try:
                    if slot.refusal is not None:
                        kind = await self._serve_over_cap(
                            stream, slot.refusal, connection_id, remote, lease
                        )
                    else:
                        kind = await self._serve(stream, slot, connection_id, remote, lease)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    log.debug("connection broken conn=%s: %r", connection_id, exc)
                except Exception:
                    log.exception("connection failed conn=%s remote=%s", connection_id, remote)
        finally:
            if lease.handed is None:
                await lease.close(kind)

    async def _serve_over_cap(
        self, stream: trio.SocketStream, refusal: str, connection_id: str, remote: str,
        lease: Lease,
    ) -> str:  # fmt: skip
        """Every slot does real work: answer a health check (never refused for load), and
        refuse anything else with 503, both after reading the request head briefly."""
        timeout = min(_OVERFLOW_HEAD_TIMEOUT, self.config.handshake_timeout)
        head = await _first_head(stream, trio.current_time() + timeout)
        if head is None:
            return "bad-request"
        conn, event = head
        if (
            isinstance(event, h11.Request)
            and event.target.partition(b"?")[0] == b"/healthz"
            and not _is_websocket_upgrade(event)
        ):
            await serve_http(
                stream,
                conn,
                event,
                self._http_once,
                remote=remote,
                connection_id=connection_id,
                idle_scope=self._idle_scope,
                lease=lease,
            )
            return _HEALTH_CHECK
        log.warning("connection refused conn=%s remote=%s: %s", connection_id, remote, refusal)
        await send_error(stream, conn, 503, refusal, [("retry-after", "1")])
        await _linger(stream)
        return "refused"

    async def _serve(
        self, stream: trio.SocketStream, slot: Slot, connection_id: str, remote: str, lease: Lease
    ) -> str:
        deadline = trio.current_time() + self.config.handshake_timeout
        head = await _first_head(stream, deadline)
        if head is None:
            return "bad-request"
        conn, event = head
        slot.busy()
        if not isinstance(event, h11.Request):
            log.info("connection open conn=%s remote=%s", connection_id, remote)
            if event is None:
                log.info("handshake timeout conn=%s remote=%s", connection_id, remote)
            return "none"
        if slot.ip in self.trusted_proxies and not self._count_forwarded(slot, event):
            await send_error(stream, conn, 503, "too many connections from this address",
                             [("retry-after", "1")])  # fmt: skip
            return "refused"
        # A load balancer checks /healthz every second or so: those connections log at DEBUG.
        health_check = event.target.startswith(b"/healthz")
        log.log(
            logging.DEBUG if health_check else logging.INFO,
            "connection open conn=%s remote=%s",
            connection_id,
            remote,
        )
        if _is_websocket_upgrade(event):
            path = event.target.decode("ascii", "replace").partition("?")[0]
            if not self.websocket_path(path):
                await send_error(stream, conn, 404, f"no WebSocket endpoint at {path}")
                return "bad-request"
            problem = _handshake_problem(event)
            origin = _header(event, b"origin")
            if problem is None and not self.origin_allowed(origin):
                problem = 403, "this Origin may not open WebSockets here"
            if problem is not None:
                status, message = problem
                extra = [("sec-websocket-version", "13")] if status == 426 else []
                await send_error(stream, conn, status, message, extra)
                return "bad-request"
            transport, session_handler = self.websockets()
            account = self.receive_budget.open_account()
            replay = ReplayStream(
                stream,
                _request_head(event) + conn.trailing_data[0],
                receive_size=self.config.receive_buffer_size,
                account=account,
            )
            try:
                await transport.serve_stream(
                    replay,
                    lambda connection: session_handler(connection, slot),
                    connection_id=connection_id,
                    remote=remote,
                    path=path,
                    handshake_deadline=deadline,
                )
            finally:
                account.close()
            return "websocket"
        await serve_http(
            stream,
            conn,
            event,
            self.http,
            remote=remote,
            connection_id=connection_id,
            idle_scope=partial(self._idle_scope, slot),
            lease=lease,
        )
        return _HEALTH_CHECK if health_check else "http"

    def _count_forwarded(self, slot: Slot, request: h11.Request) -> bool:
        """A trusted proxy's connection counts, from its first request on, for the client
        its ``X-Forwarded-For`` names (the per-address cap); False if that client is at its
        cap with no idle connection to close."""
        client = forwarded_client(slot.ip, request.headers, self.trusted_proxies)
        return client == slot.ip or self.limiter.rebind(slot, client)

    @contextmanager
    def _idle_scope(self, slot: Slot | None = None) -> Iterator[trio.CancelScope]:
        """The wait for a keep-alive connection's next request: idle (a shutdown closes it
        at once, a full cap may close it to make room)."""
        with self.until_shutdown() as scope:
            if slot is None:
                scope.cancel()
            else:
                slot.idle()
            try:
                yield scope
            finally:
                if slot is not None:
                    slot.busy()

    @contextmanager
    def until_shutdown(self) -> Iterator[trio.CancelScope]:
        """A wait a shutdown cuts at once (see :data:`ShutdownScope`); by itself it leaves
        the connection busy."""
        scope = trio.CancelScope()
        if self.shutting_down:
            scope.cancel()
        self._shutdown_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._shutdown_scopes.discard(scope)


async def _first_head(
    stream: trio.SocketStream, deadline: float
) -> tuple[h11.Connection, object] | None:
    """The connection's first h11 event by ``deadline`` (None in its place if nothing whole
    came in time); None instead when the head was malformed (then answered with its 4xx)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
    event: object = None
    with trio.move_on_at(deadline):
        try:
            event = await receive_event(stream, conn)
        except h11.RemoteProtocolError as exc:
            await send_error(stream, conn, exc.error_status_hint, str(exc))
            return None
    return conn, event


async def _proxy_header(stream: trio.SocketStream, deadline: float) -> tuple[str, int] | None:
    """Take a PROXY protocol v1 line off the connection if it starts with one: the client's
    address and port; None when it does not (or for ``PROXY UNKNOWN``). The line is only
    peeked at until whole, so a request without one is left untouched for h11. Raises
    ValueError for a malformed line or one not whole by ``deadline``."""
    sock = stream.socket
    with trio.move_on_at(deadline):
        while True:
            seen = await sock.recv(MAX_PROXY_LINE, socket.MSG_PEEK)
            if not seen or not (seen.startswith(b"PROXY ") or b"PROXY ".startswith(seen)):
                return None
            end = seen.find(b"\r\n")
            if end >= 0:
                line = seen[: end + 2]
                taken = b""
                while len(taken) < len(line):  # already received: no wait
                    taken += await sock.recv(len(line) - len(taken))
                return parse_proxy_v1(line)
            if len(seen) >= MAX_PROXY_LINE:
                raise ValueError("PROXY line longer than 107 bytes")
            await trio.sleep(_PROXY_POLL)  # a line split across segments: rare
    raise ValueError("no whole PROXY line in time")


@attrs.define(eq=False)
class _Lease:
    """A connection as its handlers hold it (:class:`Lease`): the door's shutdown scope,
    and what ending it takes (release its slot, close it, log it), run by its task or, once
    handed over, by whoever took it (it is then its own :class:`HandedOver`: one object per
    parked listener's connection, not several)."""

    door: FrontDoor
    #: None once handed over (then only its file descriptor ``fd`` is kept).
    stream: trio.SocketStream | None
    slot: Slot
    connection_id: str
    remote: str
    started: float
    nursery: trio.Nursery | None
    fd: int = -1
    #: Set when handed over: ends it early (a shutdown).
    cut: Callable[[], None] | None = None
    cleanups: tuple[Callable[[], Awaitable[object]], ...] = ()

    def __call__(self) -> AbstractContextManager[trio.CancelScope]:
        return self.door.until_shutdown()

    @property
    def handed(self) -> HandedOver | None:
        return None if self.cut is None else self

    def hand_over(self, cut: Callable[[], None]) -> HandedOver | None:
        if self.door.shutting_down or self.nursery is None or self.stream is None:
            return None
        # Detached, or trio.serve_listeners closes it as this task returns.
        self.fd = self.stream.socket.detach()
        self.stream = None
        self.cut = self.slot.evict = cut
        self.door.handed_over.add(self)
        return self

    def push(self, cleanup: Callable[[], Awaitable[object]]) -> None:
        self.cleanups = (*self.cleanups, cleanup)

    def finish(self, last: Callable[[trio.SocketStream], Awaitable[None]]) -> None:
        if self not in self.door.handed_over:
            return  # finishing already
        self.door.handed_over.discard(self)  # a shutdown no longer cuts it
        assert self.nursery is not None
        try:
            self.nursery.start_soon(self._finish, last)
        except RuntimeError:  # the connections' nursery is closed: the server is stopping
            trio.lowlevel.spawn_system_task(self._finish, last)

    async def _finish(self, last: Callable[[trio.SocketStream], Awaitable[None]]) -> None:
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.close)
            for cleanup in self.cleanups:
                stack.push_async_callback(cleanup)
            stream = trio.SocketStream(
                trio.socket.from_stdlib_socket(socket.socket(fileno=self.fd))
            )
            try:
                await last(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("connection broken conn=%s: %r", self.connection_id, exc)
            except Exception:
                log.exception("connection failed conn=%s remote=%s", self.connection_id,
                              self.remote)  # fmt: skip
            finally:
                await trio.aclose_forcefully(stream)

    async def close(self, kind: str = "http") -> None:
        self.door.handed_over.discard(self)
        self.door.limiter.release(self.slot)
        if self.stream is not None:  # else _finish closed it
            await trio.aclose_forcefully(self.stream)
        log.log(
            logging.DEBUG if kind == _HEALTH_CHECK else logging.INFO,
            "connection close conn=%s remote=%s kind=%s duration=%.3fs",
            self.connection_id,
            self.remote,
            kind,
            trio.current_time() - self.started,
        )


def _evict(scope: trio.CancelScope, connection_id: str, remote: str) -> None:
    """Close an idle connection to make room for a newcomer."""
    log.info("connection closed to make room conn=%s remote=%s: idle", connection_id, remote)
    scope.cancel()


def _peer(stream: trio.SocketStream) -> tuple[str, str]:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "?", "?"
    if isinstance(address, tuple):
        host, port = str(address[0]), address[1]
        return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address), str(address)


def _is_websocket_upgrade(request: h11.Request) -> bool:
    if request.method != b"GET":
        return False
    for name, value in request.headers:
        if name == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


def _handshake_problem(request: h11.Request) -> tuple[int, str] | None:
    """Check the opening handshake (RFC 6455, 4.2.1) here, so both transports answer a
    broken one alike and at once (trio-websocket would hold it until the timeout)."""
    headers: dict[bytes, list[bytes]] = {}
    for name, value in request.headers:
        headers.setdefault(name, []).append(value)
    connection = b",".join(headers.get(b"connection", [])).lower()
    if request.http_version != b"1.1":
        return 400, "WebSocket needs HTTP/1.1"
    if b"upgrade" not in [token.strip() for token in connection.split(b",")]:
        return 400, "missing 'Connection: Upgrade'"
    if headers.get(b"sec-websocket-version") != [b"13"]:
        return 426, "unsupported Sec-WebSocket-Version (13 is)"
    keys = headers.get(b"sec-websocket-key", [])
    try:
        valid_key = len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        return 400, "missing or invalid Sec-WebSocket-Key"
    return None


def _header(request: h11.Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _request_head(request: h11.Request) -> bytes:
    """The request head as the client sent it (header names keep their case), for the
    WebSocket library to parse again."""
    lines = [b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)]
    lines += [name + b": " + value for name, value in request.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _refuse(stream: trio.SocketStream, reason: str) -> None:
    """A clean 503 (sent before reading the request: the client reads it as the answer to
    its handshake), then a short linger so the close does not reset the reply away."""
    body = reason.encode() + b"\n"
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\nretry-after: 1\r\n\r\n" % len(body)
    )
    try:
        with trio.move_on_after(_REFUSAL_LINGER):
            await stream.send_all(head + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    await _linger(stream)


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close and read what the client still sends, briefly, so that closing does not
    reset a reply just sent away; then close."""
    try:
        with trio.move_on_after(_REFUSAL_LINGER):
            await stream.send_eof()
            while await stream.receive_some(MAX_HEAD_SIZE):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)
