"""Icecast on the front door: sources ``PUT`` (or ``SOURCE``) a stream, listeners ``GET`` it.

Ingest. ``PUT /streams/{id}`` (and the legacy ``SOURCE`` method, which h11 parses like any
other token) creates the stream, or resumes it if it is still UPLOADING, stores its
``Content-Type`` and keeps its ``ice-*``/``icy-*`` headers as metadata. The body is appended
as it arrives, in whatever framing it comes: ``Content-Length``, chunked, or none at all —
ffmpeg's icecast output sends ``Expect: 100-continue`` with neither, and legacy ``SOURCE``
clients send HTTP/1.0 without a length. h11 reads such a request as having an empty body, so
here, as for an upgrade, the rest of the connection *is* the body: answer 100 (or 200 for
``SOURCE``), then append every byte until the client closes its side.

- A body that ends cleanly (the close of an unframed body, the last chunk, the full
  ``Content-Length``) finalizes the stream (``icecast.source_end = "finalize"``) or leaves
  it UPLOADING (``"keep"``) for a later source to continue.
- A source that drops (reset, ``icecast.source_timeout`` without a byte, a framed body cut
  short) leaves the stream UPLOADING with every byte received; a new ``PUT`` on the same id
  appends to it, and its listeners get the new source's header before its data.
- One writer per stream at a time, whatever its route: a source holds the stream's writer
  lease (``StreamManager.acquire_writer``) while connected, so a second source, or a
  WebSocket upload, gets 409 ``busy`` (``busy`` too for a source while a WebSocket client
  uploads), and the first is untouched.
- A graceful shutdown closes a source at once, between two pieces (``PUT`` gets a 503
  ``closed``): the stream stays UPLOADING with every byte received, flushed as the server
  stops, for the source to resume on the next server.

Listening. ``GET /streams/{id}`` on an UPLOADING stream, without ``Range``, is answered the
Icecast way: ``200`` with no length and ``Connection: close``, the stream's header, a burst
of recent audio from a sync point, then the live bytes as they arrive, until finalize (see
:mod:`._fanout`). ``?offset=N`` gives the bytes from ``N`` instead (no header). Requests
with ``Range``, ``HEAD``, and finished streams are left to the playback routes. A graceful
shutdown closes live listeners at once.
"""

from __future__ import annotations

import collections
import contextlib
import http
import itertools
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import quote

import attrs
import h11
import trio

from ..audio import detect_format
from ..auth import CHALLENGE, Authorizer, basic_credentials, token_from_header
from ..capability import Refusal, asks_beyond_access
from ..config import IcecastConfig
from ..errors import (
    CacheClosedError,
    MmstreamError,
    NotUploadingError,
    OutOfRangeError,
    StreamNotFoundError,
    UnauthorizedError,
)
from ..fallbacks import choose, fallback_chain, overrides
from ..icecast import ListenerHookCall, admitted
from ..metrics import Metrics
from ..streams import (
    DEFAULT_CONTENT_TYPE,
    StreamInfo,
    StreamManager,
    StreamStatus,
    WriterLease,
    is_valid_stream_id,
)
from ..web.clientaddr import host_of
from ..web.cors import cors_headers
from ..web.media import served_type
from ..web.playback import HTTP_STATUS
from ..web.timeseek import asks_time
from ._encoders import PLAIN, Encoder, Icy
from ._fanout import Broadcaster, FanoutHub, FdWriter, Listener, ListenerClient, ListenerState
from ._hooks import post_form
from ._http import (
    SERVER_HEADER,
    HandedOver,
    HttpRequest,
    HttpResponse,
    Lease,
    Router,
    ShutdownScope,
)
from ._read_access import read_access
from ._source_titles import SourceTitles
from ._switch import OnAir, RelayedStations, Stations, listen_switching

if TYPE_CHECKING:  # relays load only when peers are configured
    from ._relay import Relays

__all__ = ["Icecast", "SourceRecord", "add_icecast_routes", "source_metadata"]

log = logging.getLogger("mmstream.server")

_RECEIVE_SIZE = 64 * 1024
#: Seconds a finished listener gets to take the end of the stream.
_DRAIN_TIMEOUT = 30.0
_METADATA_PREFIXES = ("ice-", "icy-")
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}
_STATUS = {**HTTP_STATUS, "exists": 409, "not-uploading": 409, "offset-conflict": 409, "busy": 409}
_MAX_METADATA = 64


@attrs.define(eq=False)
class SourceRecord:
    """A connected Icecast source, for ``/admin/`` (``listmounts``, ``stats``,
    ``killsource``)."""

    address: str
    user_agent: str
    #: Wall-clock time it connected.
    since: float
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)


_MAX_VALUE = 1024


def source_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``ice-*`` and ``icy-*`` request headers (names lower case), as stream metadata."""
    found = {
        name: value[:_MAX_VALUE]
        for name, value in headers.items()
        if name.startswith(_METADATA_PREFIXES) and len(name) <= 128
    }
    return dict(list(found.items())[:_MAX_METADATA])


def _reply(status: int, reason: str, payload: object, version: bytes = b"1.1") -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
    return (
        b"HTTP/%s %d %s\r\nserver: %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n"
        % (version, status, reason.encode(), SERVER_HEADER, len(body))
    ) + body


def _error(status: int, exc: MmstreamError) -> bytes:
    """A JSON error, shaped as the protocol's: ``{"error": {"code", "message"}}``."""
    reason = _REASONS.get(status, "Error")
    return _reply(status, reason, {"error": {"code": exc.code, "message": exc.public_message}})


#: Icecast's answer when a mount has its ``max-listeners``.
_FULL = (
    b"HTTP/1.1 403 Forbidden\r\nserver: " + SERVER_HEADER + b"\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 22\r\nconnection: close\r\n\r\nmax listeners reached\n"
)


def _refused(refusal: Refusal) -> bytes:
    """A refusal in one line, as playback answers it (with a ``Bearer`` challenge if 401)."""
    body = refusal.reason.encode() + b"\n"
    challenge = b"www-authenticate: %s\r\n" % CHALLENGE.encode() if refusal.status == 401 else b""
    return (
        b"HTTP/1.1 %d %s\r\nserver: %s\r\n%scontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n"
        % (refusal.status, _REASONS[refusal.status].encode(), SERVER_HEADER, challenge, len(body))
    ) + body


#: Says nothing about the token (docs/reliability.md); Icecast sources expect 401.
_UNAUTHORIZED = _refused(Refusal(401, "unauthorized"))


def _error_for(exc: MmstreamError) -> bytes:
    """The status playback uses for the same wire code; conflicts are 409."""
    return _error(_STATUS.get(exc.code, 500), exc)


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


class Icecast:
    """The Icecast routes' state: the sources connected, the listener ids given."""

    def __init__(
        self,
        manager: StreamManager,
        hub: FanoutHub,
        config: IcecastConfig,
        metrics: Metrics | None,
        authorizer: Authorizer | None,
        relays: Relays | None,
    ) -> None:
        self.relays = relays
        self.on_air = OnAir(manager, hub)
        self.manager = manager
        self.metrics = metrics
        self.authorizer = authorizer
        self.hub = hub
        self.config = config
        #: ``server.cors_origins``, which the router's answers honour too.
        self.cors_origins: Sequence[str] = ()
        #: The connected Icecast sources, by stream id (``/admin/`` lists and kills them).
        self.sources: dict[str, SourceRecord] = {}
        #: Connections since start, by kind, and the ids given to listeners.
        self.source_connections = 0
        self.listener_connections = 0
        self._listener_ids = itertools.count(1)
        #: Live listeners admitted per stream, counted from admission (before the header
        #: is sent), so concurrent joins cannot pass ``max_listeners`` together.
        self.admitted: collections.Counter[str] = collections.Counter()

    async def _refuse(self, stream: trio.abc.Stream, exc: MmstreamError) -> None:
        """Answer ``exc`` with the status playback uses for its code (conflicts: 409), and
        count it in ``mmstream_errors_total`` as every route does."""
        if self.metrics is not None:
            self.metrics.errors.labels(exc.code).inc()
        await _send_quietly(stream, _error_for(exc))

    # -- ingest ----------------------------------------------------------------------------

    def _allowed(self, request: HttpRequest, operation: str) -> bool:
        """``[auth]`` tokens: Icecast sources send basic auth unasked, whose password is
        taken as the token (any user name: ffmpeg's ``icecast://source:TOKEN@host``);
        listeners send ``Bearer`` or basic auth too. A refusal challenges with ``Bearer``
        only (:data:`~mmstream.auth.CHALLENGE`). With auth off, everyone is allowed."""
        if self.authorizer is None or not self.authorizer.enabled:
            return True
        token = token_from_header(request.header("authorization"))
        try:
            self.authorizer.authorize(token, operation, request.params["stream_id"])
        except UnauthorizedError:
            return False
        return True

    async def ingest(
        self,
        request: HttpRequest,
        stream: trio.abc.HalfCloseableStream,
        conn: h11.Connection,
        until_shutdown: ShutdownScope,
    ) -> bool:
        stream_id = request.params["stream_id"]
        headers = request.header_fields()
        version = conn.their_http_version or b"1.1"
        probe = headers.get("content-length") == "0" and "authorization" not in headers
        if (probe and is_valid_stream_id(stream_id)) or not self._allowed(request, "PUT"):
            # An empty source without credentials is libshout's probe (MPD, ices, ezstream):
            # Icecast answers it 401 and libshout retries with its password, so answer the
            # same even with auth off, and an empty probe never creates a stream.
            if self.metrics is not None:
                self.metrics.errors.labels(UnauthorizedError.code).inc()
            await _send_quietly(stream, _UNAUTHORIZED)
            return True
        try:
            info = self.manager.stat(stream_id)
        except StreamNotFoundError:
            content_type = headers.get("content-type", DEFAULT_CONTENT_TYPE)
            try:
                info = await self.manager.create(
                    stream_id,
                    content_type=content_type,
                    metadata=source_metadata(headers),
                    size_hint=_content_length(headers),
                )
            except MmstreamError as exc:
                await self._refuse(stream, exc)
                return True
        except MmstreamError as exc:
            await self._refuse(stream, exc)
            return True
        try:
            if info.status is not StreamStatus.UPLOADING:
                raise NotUploadingError(f"stream {stream_id} is {info.status.value}")
            lease = self.manager.acquire_writer(stream_id, f"icecast source {request.remote}")
        except MmstreamError as exc:
            await self._refuse(stream, exc)
            return True
        self.on_air.source_started(stream_id, lease.generation)
        try:
            await self._receive_source(
                request, stream, conn, headers, version, lease, until_shutdown
            )
        finally:
            lease.release()
            self.on_air.source_stopped(stream_id, lease.generation)
        return True

    async def _receive_source(
        self,
        request: HttpRequest,
        stream: trio.abc.HalfCloseableStream,
        conn: h11.Connection,
        headers: Mapping[str, str],
        version: bytes,
        lease: WriterLease,
        until_shutdown: ShutdownScope,
    ) -> None:
        stream_id = request.params["stream_id"]
        start = self.manager.stat(stream_id, generation=lease.generation).size
        # A new source: a new header, for the broadcaster of this stream.
        self.hub.get(stream_id, lease.generation).restart_at(start)
        framed = "content-length" in headers or "transfer-encoding" in headers
        if request.method == "SOURCE":
            await stream.send_all(b"HTTP/1.0 200 OK\r\n\r\n")
        elif headers.get("expect", "").lower() == "100-continue":
            await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        log.info(
            "source connected stream=%s remote=%s resume_at=%d framing=%s",
            stream_id,
            request.remote,
            start,
            "http" if framed else "connection",
        )
        pieces = _framed_body(stream, conn) if framed else _raw_body(stream, conn)
        # Ogg Opus/Vorbis: each new title starts a chained logical stream in the stored
        # bytes, and the source's own chains' titles are heard (docs/icecast.md, *Titles in
        # Ogg*); other formats pass unchanged.
        titles = SourceTitles(self.manager, self.hub, stream_id, lease.generation, chain=True)
        size = start
        clean = stopped = False
        problem: MmstreamError | None = None
        user_agent = request.header("user-agent") or ""
        record = SourceRecord(host_of(request.remote), user_agent, time.time())
        self.sources[stream_id] = record
        self.source_connections += 1
        try:
            with record.scope:  # cancelled by /admin/killsource: then as a dropped source
                while True:
                    # Only the wait for a piece is cut short: a piece received is appended.
                    timeout = self.config.source_timeout
                    with until_shutdown() as shutdown, trio.move_on_after(timeout) as idle:
                        piece = await anext(pieces, None)
                    if shutdown.cancelled_caught or idle.cancelled_caught:
                        stopped = shutdown.cancelled_caught
                        break
                    if piece is None:
                        clean = True
                        break
                    piece = titles.feed(piece)
                    if piece:
                        size = await self.manager.append(stream_id, piece, writer=lease)
                    await titles.settle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        except MmstreamError as exc:
            problem = exc
        finally:
            if self.sources.get(stream_id) is record:
                del self.sources[stream_id]
            await pieces.aclose()
        rest = titles.flush()  # what it held (a first few bytes, an incomplete page head)
        if problem is None:
            try:
                if rest:
                    size = await self.manager.append(stream_id, rest, writer=lease)
                await titles.settle(last=True)  # its last title, held back by the interval
            except MmstreamError as exc:
                problem = exc
        if problem is not None:
            log.warning("source failed stream=%s: %s", stream_id, problem)
            await self._refuse(stream, problem)
            return
        if stopped:
            log.info(
                "source closed at shutdown stream=%s size=%d (stays uploading)", stream_id, size
            )
            if request.method != "SOURCE":  # SOURCE had its answer (200) at the start
                closed = CacheClosedError("the server is shutting down: resume the stream later")
                await self._refuse(stream, closed)
            return
        if not clean:
            log.info("source dropped stream=%s size=%d (stays uploading)", stream_id, size)
            return
        status = "uploading"
        if self.config.source_end == "finalize":
            try:
                status = (await self.manager.finalize(stream_id, writer=lease)).status.value
            except MmstreamError as exc:
                await self._refuse(stream, exc)
                return
        log.info("source ended stream=%s size=%d status=%s", stream_id, size, status)
        if request.method != "SOURCE":
            reply = _reply(200, "OK", {"stream": stream_id, "size": size, "status": status},
                           version)  # fmt: skip
            await _send_quietly(stream, reply)

    # -- listeners -------------------------------------------------------------------------

    async def listen(
        self,
        request: HttpRequest,
        stream: trio.abc.HalfCloseableStream,
        conn: h11.Connection,
        lease: Lease,
    ) -> bool:
        # ffmpeg-based players (ffplay, mpv) send ``Range: bytes=0-`` with
        # ``Icy-MetaData: 1``: a player that asks for titles wants the radio, and gets it,
        # as from Icecast, which ignores Range. Other ranged requests are playback's.
        wants_titles = request.header("icy-metadata") == "1"
        if (request.header("range") is not None and not wants_titles) or asks_time(request.query):
            return False  # a range or a time (a 400 if malformed): the playback route's
        # A capability is all a player without the token can present: it keeps nobody off
        # the relays, and for a stream held elsewhere it is checked against the owner's.
        relayable = self.relays is not None and not asks_beyond_access(request.query)
        elsewhere = self._relayed_generation if relayable else None
        access = await read_access(request, self.manager, self.authorizer, elsewhere=elsewhere)
        if isinstance(access, Refusal):
            if self.metrics is not None:
                self.metrics.errors.labels(UnauthorizedError.code).inc()
            await _send_quietly(stream, _refused(access))
            return True
        stream_id = request.params["stream_id"]
        chain = fallback_chain(stream_id, self.config.fallback)
        if (
            len(chain) > 1
            and "offset=" not in request.query
            and isinstance(stream, trio.SocketStream)
            and (not relayable or self.on_air.holds(stream_id))
        ):
            # In a cluster, a stream held elsewhere is relayed first (a fallback held here
            # must not win over the stream live on its owner); its owner decides fallbacks.
            override = overrides(stream_id, self.config.fallback)
            start = choose(chain, self.on_air, None, override=override)
            if start is not None:
                stations = self._stations()
                serve = partial(self._switching, chain, start, override, stations, stream, conn)
                return await self._counted(request, stream, stream_id, lease, serve, wants_titles)
            # Nothing of the chain on air: as without fallbacks.
        try:
            info = await self.manager.find(stream_id)  # a finished one may be in the tier
        except StreamNotFoundError:
            if not relayable:
                return False  # the playback route answers errors
            relay = partial(self._relay, stream_id, stream, conn, lease)
            return await self._counted(request, stream, stream_id, lease, relay, wants_titles)
        except MmstreamError:
            return False  # the playback route answers errors
        if info.status is not StreamStatus.UPLOADING:
            return False
        offset: int | None = None
        for pair in request.query.split("&"):
            name, _, value = pair.partition("=")
            if name == "offset":
                if not value.isdigit() or len(value) > 19 or int(value) > info.size:
                    await self._refuse(stream, OutOfRangeError(f"bad offset {value[:32]!r}"))
                    return True
                offset = int(value)
        local = partial(self._local, info, stream, conn, lease, offset)
        return await self._counted(request, stream, stream_id, lease, local, wants_titles)

    async def _relayed_generation(self, stream_id: str) -> str | None:
        """The generation of ``stream_id`` on the peer uploading it (relayed from now on:
        its listener is about to be), or None if no peer uploads it."""
        assert self.relays is not None
        relayed = await self.relays.get(stream_id)
        return None if relayed is None else relayed[1].generation

    def _stations(self) -> Stations:
        """Where a switching listener's streams are: here, or (relays on) on any peer."""
        return self.on_air if self.relays is None else RelayedStations(self.on_air, self.relays)

    async def _counted(
        self,
        request: HttpRequest,
        stream: trio.abc.HalfCloseableStream,
        stream_id: str,
        lease: Lease,
        serve: Callable[[_Join], Awaitable[None]],
        wants_titles: bool = False,
    ) -> bool:
        """Admit a live listener (``max_listeners``, the ``listener_add`` hook) and serve
        it, counted in ``mmstream_followers``, until it ends or the server shuts down; then
        tell ``listener_remove`` (once the connection's new owner ends it, if ``serve``
        handed it over)."""
        limit = self.config.mount(stream_id).max_listeners
        if limit and self.admitted[stream_id] >= limit:
            log.info("listener refused stream=%s: max_listeners %d reached", stream_id, limit)
            await _send_quietly(stream, _FULL)
            return True
        self.admitted[stream_id] += 1
        if self.metrics is not None:
            self.metrics.followers.inc()
        user_agent = request.header("user-agent") or ""
        client = ListenerClient(
            next(self._listener_ids), host_of(request.remote), user_agent, time.time()
        )
        join = _Join(
            Icy(self.config.icy_metaint) if wants_titles else None,
            client,
            cors_headers(request.header("origin"), self.cors_origins),
        )
        hook = self._hook_call(request, stream_id, client)
        joined = False  # admitted: listener_remove is told when it leaves
        try:
            if self.config.listener_add and not await self._hook_admits(hook):
                log.info("listener refused stream=%s client=%d by listener_add", stream_id,
                         client.id)  # fmt: skip
                await _send_quietly(stream, _UNAUTHORIZED)
                return True
            joined = True
            self.listener_connections += 1
            with lease():  # a live response never ends by itself: cut it
                await serve(join)
        except MmstreamError as exc:
            # Deleted, replaced (another generation) or failed while being sent: the end
            # of the connection is the end of the response, so the client sees it cut.
            log.info("listener cut short stream=%s: %s", stream_id, exc)
        finally:
            told = hook if joined and self.config.listener_remove else None
            left = _Admitted(self, stream_id, client, told)
            if lease.handed is not None:
                lease.handed.push(left)
            else:
                await left()
        return True

    def _hook_call(
        self, request: HttpRequest, stream_id: str, client: ListenerClient
    ) -> ListenerHookCall:
        host, _, port = (request.header("host") or "").rpartition(":")
        if not port.isdigit():
            host, port = request.header("host") or "", "80"
        user, password = basic_credentials(request.header("authorization")) or ("", "")
        return ListenerHookCall(
            server=host[:256], port=int(port[:5]), client=client.id,
            mount=f"/streams/{stream_id}", ip=client.address, agent=client.user_agent[:1024],
            user=user, password=password,
        )  # fmt: skip

    async def _hook_admits(self, call: ListenerHookCall) -> bool:
        """Icecast's ``listener_add``: admitted on 200 with ``icecast-auth-user: 1``; a hook
        that times out or cannot be reached decides by ``auth_failure``."""
        outcome, status, headers = await post_form(
            self.config.listener_add, call.add_body(), self.config.auth_timeout
        )
        return admitted(outcome, status, headers, on_failure=self.config.auth_failure)

    async def _local(
        self,
        info: StreamInfo,
        stream: trio.abc.HalfCloseableStream,
        conn: h11.Connection,
        lease: Lease,
        offset: int | None,
        join: _Join,
    ) -> None:
        """A live listener of a stream this worker holds."""
        head = await self._response_head(info, conn, join)
        broadcaster = self.hub.get(info.stream_id, info.generation)
        await self._listen(stream, lease, head, broadcaster, offset, join)

    async def _switching(
        self,
        chain: tuple[str, ...],
        start: str,
        override: bool,
        stations: Stations,
        stream: trio.SocketStream,
        conn: h11.Connection,
        join: _Join,
    ) -> None:
        """A live listener of a stream with fallbacks: it hears the first of ``chain`` on
        air and moves along it as sources come and go (:mod:`._switch`); the response
        head is the first stream's."""
        head = await self._response_head(self.manager.stat(start), conn, join)
        await stream.send_all(head)
        await listen_switching(
            stream, stations, chain, start, override=override, encoder=join.encoder
        )

    async def _relay(
        self,
        stream_id: str,
        stream: trio.abc.HalfCloseableStream,
        conn: h11.Connection,
        lease: Lease,
        join: _Join,
    ) -> None:
        """A live listener of a stream another worker holds: served from this worker's
        relay of it (:mod:`._relay`); if no peer is uploading it, sent to its owner with a
        redirect that the balancer hashes to the owner (a query keeps it off the relays)."""
        assert self.relays is not None
        relayed = await self.relays.get(stream_id)
        if relayed is None:
            location = f"/streams/{quote(stream_id, safe='')}?owner"
            await _send_quietly(stream, _redirect(location))
            return
        broadcaster, stat = relayed
        await broadcaster.wait_ready()
        content_type = stat.content_type
        if content_type == DEFAULT_CONTENT_TYPE:
            found = detect_format(bytes((broadcaster.sync.header or broadcaster.window)[:64]))
            content_type = found.content_type if found is not None else content_type
        head = _head(content_type, stat.metadata, conn, join)
        chain = fallback_chain(stream_id, self.config.fallback)
        if len(chain) > 1 and isinstance(stream, trio.SocketStream):
            # If the owner dies, its listeners here go to the fallback (:mod:`._switch`).
            await stream.send_all(head)
            override = overrides(stream_id, self.config.fallback)
            await listen_switching(
                stream, self._stations(), chain, stream_id, override=override, encoder=join.encoder
            )
            return
        await self._listen(stream, lease, head, broadcaster, None, join)

    async def _listen(
        self,
        stream: trio.abc.HalfCloseableStream,
        lease: Lease,
        head: bytes,
        broadcaster: Broadcaster,
        offset: int | None,
        join: _Join,
    ) -> None:
        """One listener of ``broadcaster`` (local or a relay); ``offset`` (local streams
        only) starts it there, caught up from the cache while it is far behind. A live-edge
        listener on a plain socket is parked (:meth:`.Broadcaster.park`): the connection is
        handed over and this task returns; the rest keep their task."""
        await stream.send_all(head)
        fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        writer = None if fd is None else FdWriter(fd)
        if offset is None:
            listener = await broadcaster.live_listener(writer, join.encoder, join.client)
            if broadcaster.can_park(listener):
                parked = _Parked(broadcaster, listener)
                parked.handed = lease.hand_over(parked)
                if parked.handed is not None:
                    broadcaster.park(listener, parked)
                    return
        else:
            listener = Listener(writer, offset, encoder=join.encoder, catch_up=True,
                                client=join.client)  # fmt: skip

        async def until_gone() -> None:
            while await stream.receive_some(4096):
                pass  # nothing is expected from a listener; its close ends the response

        served = broadcaster.serve(listener, until_gone if writer else None)
        async with contextlib.aclosing(served) as pieces:
            async for piece in pieces:
                if broadcaster.ended:  # the end of the stream: sent as far as it goes
                    with trio.move_on_after(_DRAIN_TIMEOUT):
                        await _send_quietly(stream, piece)
                else:
                    await stream.send_all(piece)

    async def _response_head(self, info: StreamInfo, conn: h11.Connection, join: _Join) -> bytes:
        content_type = info.content_type
        if content_type == DEFAULT_CONTENT_TYPE:
            head = await self.manager.read(info.stream_id, 0, 64, generation=info.generation)
            found = detect_format(head)
            content_type = found.content_type if found is not None else content_type
        return _head(content_type, info.metadata, conn, join)


@attrs.define(eq=False)
class _Admitted:
    """A listener :meth:`Icecast._counted` admitted; called when it has left: the counts
    go down and ``listener_remove`` is told (``hook``). An object rather than a closure:
    a parked listener's connection holds it until it ends."""

    icecast: Icecast
    stream_id: str
    client: ListenerClient
    hook: ListenerHookCall | None

    async def __call__(self) -> None:
        admitted, config = self.icecast.admitted, self.icecast.config
        admitted[self.stream_id] -= 1
        if not admitted[self.stream_id]:
            del admitted[self.stream_id]
        if self.hook is not None:
            with trio.CancelScope(shield=True):  # also when the server stops
                body = self.hook.remove_body(time.time() - self.client.since)
                await post_form(config.listener_remove, body, config.auth_timeout)
        if self.icecast.metrics is not None:
            self.icecast.metrics.followers.dec()


@attrs.define(eq=False)
class _Parked:
    """A listener served by its broadcaster's rounds with no task, and its handed-over
    connection: one small object, and itself the one callable both need (no closures or
    bound methods kept), as there may be 15,000 of them."""

    broadcaster: Broadcaster
    listener: Listener
    handed: HandedOver | None = None

    def __call__(self) -> None:
        """The listener left the rounds (its ``parked``): end the connection. Or, while it
        is in them, the door cuts it (a shutdown: its ``cut``): drop it, which calls this
        again."""
        if self.listener.state is ListenerState.LIVE:
            self.broadcaster.cut(self.listener)
            return
        assert self.handed is not None
        self.handed.finish(self.last)

    async def last(self, stream: trio.SocketStream) -> None:
        """The rest of the stream if it ended (sent as far as it goes), nothing if its
        client left or it was dropped."""
        try:
            ending = self.broadcaster.ending(self.listener)
        except MmstreamError as exc:
            log.info("listener cut short stream=%s: %s", self.broadcaster.stream_id, exc)
            return
        if ending is ListenerState.ENDED:
            with trio.move_on_after(_DRAIN_TIMEOUT):
                await _send_quietly(stream, self.broadcaster.rest(self.listener))


@attrs.frozen
class _Join:
    """What an admitted live listener asked for and is: in-band titles (``Icy-MetaData:
    1``), its id and address, the CORS headers its ``Origin`` earns."""

    icy: Icy | None
    client: ListenerClient
    cors: Sequence[tuple[str, str]] = ()

    @property
    def encoder(self) -> Encoder:
        return PLAIN if self.icy is None else self.icy


def _head(
    content_type: str, metadata: Mapping[str, str], conn: h11.Connection, join: _Join
) -> bytes:
    """A live listener's response head: the served type, ``icy-metaint`` for in-band titles,
    CORS, and the source's ``icy-*``."""
    version = b"1.0" if conn.their_http_version == b"1.0" else b"1.1"
    lines = [b"HTTP/%s 200 OK" % version, b"server: " + SERVER_HEADER]
    lines += [f"{name}: {value}".encode() for name, value in served_type(content_type).headers]
    lines += [b"cache-control: no-store", b"connection: close"]
    if join.icy is not None:
        lines.append(b"icy-metaint: %d" % join.icy.metaint)
    lines += [f"{name}: {value}".encode("latin-1", "replace") for name, value in join.cors]
    for name, value in metadata.items():
        # ice-name etc. are what sources send; listeners' players read icy-*.
        if name.startswith(_METADATA_PREFIXES) and name != "icy-metadata" and value.isprintable():
            icy = "icy-" + name[4:]
            lines.append(f"{icy}: {value}".encode("latin-1", "replace"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _redirect(location: str) -> bytes:
    return (
        b"HTTP/1.1 307 Temporary Redirect\r\nserver: %s\r\nlocation: %s\r\n"
        b"content-length: 0\r\nconnection: close\r\n\r\n" % (SERVER_HEADER, location.encode())
    )


def _content_length(headers: Mapping[str, str]) -> int | None:
    """The body's declared size (h11 has checked the header), a size hint for the new
    stream's reservation; None for a chunked or unframed body."""
    value = headers.get("content-length")
    if value is None or "transfer-encoding" in headers or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


async def _raw_body(stream: trio.abc.Stream, conn: h11.Connection) -> AsyncGenerator[bytes]:
    """An unframed body: what h11 already buffered past the head, then the connection."""
    buffered = conn.trailing_data[0]
    if buffered:
        yield bytes(buffered)
    while data := await stream.receive_some(_RECEIVE_SIZE):
        yield bytes(data)


async def _framed_body(stream: trio.abc.Stream, conn: h11.Connection) -> AsyncGenerator[bytes]:
    """A body with Content-Length or chunked framing, decoded by h11; a body cut short
    raises (h11.RemoteProtocolError or a broken stream)."""
    while True:
        event = conn.next_event()
        match event:
            case h11.Data(data=data):
                yield bytes(data)
            case h11.EndOfMessage():
                return
            case h11.ConnectionClosed():
                raise h11.RemoteProtocolError("source closed before the end of its body")
            case _ if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
            case _:
                raise h11.RemoteProtocolError(f"unexpected {event!r}")


def add_icecast_routes(
    router: Router,
    manager: StreamManager,
    hub: FanoutHub,
    config: IcecastConfig,
    metrics: Metrics | None = None,
    authorizer: Authorizer | None = None,
    relays: Relays | None = None,
) -> Icecast:
    """``PUT``/``SOURCE /streams/{id}`` for sources; live ``GET /streams/{id}`` (relayed
    from another worker with ``relays``)."""
    icecast = Icecast(manager, hub, config, metrics, authorizer, relays)
    icecast.cors_origins = router.cors_origins
    router.add_takeover("PUT", "/streams/{stream_id}", icecast.ingest)
    router.add_takeover("SOURCE", "/streams/{stream_id}", icecast.ingest)
    router.add_takeover("GET", "/streams/{stream_id}", icecast.listen)
    router.add("OPTIONS", "*", _server_options)
    return icecast


async def _server_options(request: HttpRequest) -> HttpResponse:
    """``OPTIONS *``: libshout in its default TLS mode (ices2, BUTT) asks it first, offering
    an upgrade to TLS, and gives up on anything but 2xx, 400, 401, 405, 426 or 101 ("Login
    failed" at our 404). The methods a source and a listener may use, without the upgrade
    (RFC 2817 lets a server ignore it): libshout goes on in plain HTTP."""
    return HttpResponse(200, [("allow", "GET, HEAD, PUT, SOURCE, OPTIONS")])
