"""The front door: one listening port for WebSockets and plain HTTP.

Each accepted TCP connection is counted against the global and per-IP caps, its first
request head is read with h11 within the handshake timeout (slow or silent clients are
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
import collections
import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import h11
import trio

from ..config import ServerConfig
from ..logs import tag_task
from ._http import MAX_HEAD_SIZE, HttpSettings, Router, receive_event, send_error, serve_http
from ._replay import ReplayStream
from ._transports import Handler, Transport

__all__ = ["FrontDoor"]

log = logging.getLogger("mmstream.server")

#: How long a refused client gets to read its 503 before the socket is closed.
_REFUSAL_LINGER = 1.0
#: The `kind` of a connection that only served a load-balancer health check.
_HEALTH_CHECK = "health-check"


class FrontDoor:
    def __init__(
        self,
        config: ServerConfig,
        transport: Transport,
        websocket_handler: Handler,
        router: Router,
        *,
        websocket_path: Callable[[str], bool] = lambda path: True,
        origin_allowed: Callable[[str | None], bool] = lambda origin: True,
    ) -> None:
        self.config = config
        self.transport = transport
        self.websocket_handler = websocket_handler
        self.websocket_path = websocket_path
        self.origin_allowed = origin_allowed
        self.http = HttpSettings(router, config.handshake_timeout, lambda: self.shutting_down)
        self.shutting_down = False
        self._ids = itertools.count(1)
        self._active = 0
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._idle_scopes: set[trio.CancelScope] = set()

    @property
    def active_connections(self) -> int:
        return self._active

    def begin_shutdown(self) -> None:
        """Refuse new work: handshakes in progress get 503, idle keep-alive connections
        close now, HTTP responses in progress finish and then close."""
        self.shutting_down = True
        self.transport.begin_shutdown()
        for scope in self._idle_scopes:
            scope.cancel()

    async def handle(self, stream: trio.SocketStream) -> None:
        """The ``trio.serve_listeners`` handler: one call per accepted connection."""
        ip, remote = _peer(stream)
        connection_id = f"c{next(self._ids)}"
        tag_task(connection=connection_id)
        refusal = self._refusal(ip)
        if refusal is not None:
            log.warning("connection refused conn=%s remote=%s: %s", connection_id, remote, refusal)
            await _refuse(stream, refusal)
            return
        self._active += 1
        self._per_ip[ip] += 1
        started = trio.current_time()
        kind = "none"
        try:
            kind = await self._serve(stream, connection_id, remote)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("connection broken conn=%s: %r", connection_id, exc)
        except Exception:
            log.exception("connection failed conn=%s remote=%s", connection_id, remote)
        finally:
            self._active -= 1
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]
            await trio.aclose_forcefully(stream)
            log.log(
                logging.DEBUG if kind == _HEALTH_CHECK else logging.INFO,
                "connection close conn=%s remote=%s kind=%s duration=%.3fs",
                connection_id,
                remote,
                kind,
                trio.current_time() - started,
            )

    def _refusal(self, ip: str) -> str | None:
        if self.shutting_down:
            return "server is shutting down"
        if self._active >= self.config.max_connections:
            return "too many connections"
        if self._per_ip[ip] >= self.config.max_connections_per_ip:
            return "too many connections from this address"
        return None

    async def _serve(self, stream: trio.SocketStream, connection_id: str, remote: str) -> str:
        deadline = trio.current_time() + self.config.handshake_timeout
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        event: object = None
        with trio.move_on_at(deadline):
            try:
                event = await receive_event(stream, conn)
            except h11.RemoteProtocolError as exc:
                await send_error(stream, conn, exc.error_status_hint, str(exc))
                return "bad-request"
        if not isinstance(event, h11.Request):
            log.info("connection open conn=%s remote=%s", connection_id, remote)
            if event is None:
                log.info("handshake timeout conn=%s remote=%s", connection_id, remote)
            return "none"
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
            replay = ReplayStream(
                stream,
                _request_head(event) + conn.trailing_data[0],
                receive_size=self.config.receive_buffer_size,
            )
            await self.transport.serve_stream(
                replay,
                self.websocket_handler,
                connection_id=connection_id,
                remote=remote,
                path=path,
                handshake_deadline=deadline,
            )
            return "websocket"
        await serve_http(
            stream,
            conn,
            event,
            self.http,
            remote=remote,
            connection_id=connection_id,
            idle_scope=self._idle_scope,
        )
        return _HEALTH_CHECK if health_check else "http"

    @contextmanager
    def _idle_scope(self) -> Iterator[trio.CancelScope]:
        scope = trio.CancelScope()
        if self.shutting_down:
            scope.cancel()
        self._idle_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._idle_scopes.discard(scope)


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
            await stream.send_eof()
            while await stream.receive_some(MAX_HEAD_SIZE):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)
