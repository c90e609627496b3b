"""The HTTP routes for people and dashboards: playback, the page, metrics.

:func:`add_web_routes` puts them on the front door's :class:`Router`; the decisions live in
:mod:`mmstream.web` (sans-I/O ranges, the playback response, the page's files) and
:mod:`mmstream.metrics`, so this module only translates between them and the router.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator

import attrs
import trio

from ..auth import CHALLENGE, Authorizer, token_from_header
from ..capability import Refusal, capability_in_query, decorate_playlist
from ..errors import MmstreamError, UnauthorizedError
from ..metrics import CacheSnapshot, Metrics
from ..streams import StreamInfo, StreamManager, StreamStatus
from ..web.assets import SECURITY_HEADERS, find_asset
from ..web.hls import DEFAULT_TARGET_DURATION
from ..web.hls_http import SegmentPlans, playlist_response, segment_response
from ..web.llhls import BlockingBudget
from ..web.playback import PIECE_SIZE, Follow, Response, stream_response
from ._http import HttpRequest, HttpResponse, Router, text_response

__all__ = ["CAPABILITY_HEADER", "add_web_routes", "cache_snapshot"]

log = logging.getLogger("mmstream.server")


def cache_snapshot(manager: StreamManager) -> CacheSnapshot:
    """What ``/metrics`` reports about the cache, read from the manager at scrape time."""
    streams = manager.list()
    by_status = Counter(info.status.value for info in streams)
    return CacheSnapshot(
        {status.value: by_status[status.value] for status in StreamStatus},
        used_bytes=sum(info.size for info in streams),
        reserved_bytes=manager.reserved,
        max_bytes=manager.config.max_cache_size,
    )


def _to_http(response: Response) -> HttpResponse:
    """The router sets Content-Length itself, from the body or from ``length``."""
    headers = [(k.lower(), v) for k, v in response.headers if k.lower() != "content-length"]
    length = response.header("content-length")
    match response.body:
        case bytes() as body:
            return HttpResponse(response.status, headers, body)
        case None:  # 304: no body, but the length a 200 would have had
            return _bodiless(response.status, headers, int(length or 0))
        case pieces:
            size = int(length) if length is not None else None
            return HttpResponse(response.status, headers, _cut_short_quietly(pieces), size)


async def _cut_short_quietly(
    pieces: AsyncGenerator[bytes, None],
) -> AsyncGenerator[bytes, None]:
    """A body that cannot be finished (the stream was deleted, failed, or the manager is
    closing) must end the connection without the final chunk, so the client knows it is
    incomplete. That is expected, not a server bug: say so in one line, not a traceback,
    and let the front door drop the connection as it does for a broken peer."""
    try:
        async for piece in pieces:
            yield piece
    except MmstreamError as exc:
        log.info("response cut short: %s", exc)
        raise trio.BrokenResourceError(f"response cut short: {exc}") from exc
    finally:
        await pieces.aclose()


async def _nothing() -> AsyncGenerator[bytes, None]:
    return
    yield  # pragma: no cover  (makes this an async generator)


def _bodiless(status: int, headers: list[tuple[str, str]], length: int) -> HttpResponse:
    """A response without a body whose Content-Length states another response's size
    (304 and the like): the router would otherwise count the empty body."""
    return HttpResponse(status, headers, _nothing(), length)


#: The playlist answer's header holding the capability its URIs carry: what a page passes
#: to a player that cannot send the token (``index.m3u8?<capability>``).
CAPABILITY_HEADER = "x-mmstream-capability"


@attrs.frozen
class _HlsAccess:
    """An HLS request allowed: by a token in the header, or by the capability ``query``
    (which its playlist's URIs then carry; "" with access control off)."""

    query: str
    by_header: bool


def _refusal(refusal: Refusal) -> HttpResponse:
    headers = [("www-authenticate", CHALLENGE)] if refusal.status == 401 else []
    return text_response(refusal.status, refusal.reason, headers)


def add_web_routes(
    router: Router,
    manager: StreamManager,
    metrics: Metrics | None = None,
    *,
    piece_size: int = PIECE_SIZE,
    authorizer: Authorizer | None = None,
    follow: Follow | None = None,
) -> None:
    """``GET``/``HEAD`` ``/streams/{id}``, ``/``, ``/static/{name}`` and, with ``metrics``,
    ``/metrics`` (whose cache figures are then read from ``manager``)."""

    def _refused(request: HttpRequest) -> HttpResponse | None:
        """401 unless the request may read the stream (tokens in a header, never the URL)."""
        if authorizer is not None and authorizer.enabled:
            token = token_from_header(request.header("authorization"))
            try:
                authorizer.authorize(token, "GET", request.params["stream_id"])
            except UnauthorizedError:
                return text_response(401, "unauthorized", [("www-authenticate", CHALLENGE)])
        return None

    async def stream(request: HttpRequest) -> HttpResponse:
        refused = _refused(request)
        if refused is not None:
            return refused
        response = await stream_response(
            manager,
            request.params["stream_id"],
            request.header_fields(),
            piece_size=piece_size,
            metrics=metrics,
            query=request.query,
            follow=follow,
        )
        return _to_http(response)

    async def page(request: HttpRequest) -> HttpResponse:
        asset = find_asset(request.path)
        if asset is None:
            return text_response(404, "not found")
        headers = [("content-type", asset.content_type), ("cache-control", "no-cache"),
                   ("etag", asset.etag), *((k.lower(), v) for k, v in SECURITY_HEADERS)]  # fmt: skip
        if request.header("if-none-match") == asset.etag:
            return _bodiless(304, headers, len(asset.body))
        return HttpResponse(200, headers, asset.body)

    router.add("GET", "/streams/{stream_id}", stream)

    plans = SegmentPlans()
    blocked = BlockingBudget()  # LL-HLS requests held for a part (web/llhls.py)

    async def hls_access(request: HttpRequest) -> _HlsAccess | HttpResponse:
        """Who may have an HLS answer (docs/hls.md, *Access control*): with access control
        on, a read token in the header, or a valid capability in the query (a playlist
        hands it on as it is: one never renews itself); else the refusal, in one line."""
        if authorizer is None or not authorizer.enabled:
            return _HlsAccess("", by_header=False)
        stream_id = request.params["stream_id"]
        token = token_from_header(request.header("authorization"))
        if token is not None and authorizer.allows(
            authorizer.authenticate(token), "GET", stream_id
        ):
            return _HlsAccess("", by_header=True)
        presented = capability_in_query(request.query) or Refusal(401, "unauthorized")
        if isinstance(presented, Refusal):
            return _refusal(presented)
        info = await find(stream_id)
        checked = authorizer.capabilities.check(
            presented, stream_id, info.generation if info is not None else None, now=time.time()
        )
        if isinstance(checked, Refusal):
            return _refusal(checked)
        return _HlsAccess(checked, by_header=False)

    async def find(stream_id: str) -> StreamInfo | None:
        try:
            return await manager.find(stream_id)
        except MmstreamError:
            return None  # the handler says why, to those who may know

    async def minted(stream_id: str) -> str:
        """A new capability, for a playlist answered to a token: for the stream's generation,
        for ``capability_lifetime``, plus a finished stream's duration (its playlist is
        fetched once and then played through)."""
        info = await find(stream_id)
        if authorizer is None or info is None:
            return ""
        lifetime = authorizer.capability_lifetime
        if info.status is StreamStatus.READY:
            with contextlib.suppress(MmstreamError):  # the plan the playlist was made from
                segments = (await plans.get(manager, info, DEFAULT_TARGET_DURATION)).segments
                if segments:
                    lifetime += segments[-1].time + segments[-1].duration
        now = time.time()
        return authorizer.capabilities.mint(stream_id, info.generation, now=now, lifetime=lifetime)

    async def playlist(request: HttpRequest) -> HttpResponse:
        access = await hls_access(request)
        if isinstance(access, HttpResponse):
            return access
        stream_id = request.params["stream_id"]
        response = await playlist_response(
            manager, stream_id, query=request.query, client=request.remote,
            metrics=metrics, plans=plans, budget=blocked,
        )  # fmt: skip
        http = _to_http(response)
        if http.status != 200 or not isinstance(http.body, bytes):
            return http
        query = await minted(stream_id) if access.by_header else access.query
        if not query:
            return http
        # Every URI the playlist lists carries the capability; the header says it too, for
        # a page to hand a native player (index.m3u8?<capability>).
        body = decorate_playlist(http.body.decode(), query).encode()
        return attrs.evolve(http, body=body, headers=[*http.headers, (CAPABILITY_HEADER, query)])

    async def segment(request: HttpRequest) -> HttpResponse:
        access = await hls_access(request)
        if isinstance(access, HttpResponse):
            return access
        response = await segment_response(
            manager, request.params["stream_id"], request.params["segment"],
            request.header_fields(), client=request.remote, metrics=metrics, plans=plans,
            budget=blocked,
        )  # fmt: skip
        http = _to_http(response)
        if access.by_header:
            # A shared cache may store a "public" answer to a request with Authorization
            # and give it to anyone asking for the same URI (RFC 9111 §3.5).
            private = [(k, v.replace("public", "private") if k == "cache-control" else v)
                       for k, v in http.headers]  # fmt: skip
            http = attrs.evolve(http, headers=private)
        return http

    router.add("GET", "/streams/{stream_id}/index.m3u8", playlist)
    router.add("GET", "/streams/{stream_id}/hls/{segment}", segment)
    router.add("GET", "/", page)
    router.add("GET", "/index.html", page)
    router.add("GET", "/static/{name}", page)

    if metrics is not None:
        metrics.watch_cache(lambda: cache_snapshot(manager))

        async def scrape(request: HttpRequest) -> HttpResponse:
            body, content_type = metrics.render(request.header("accept"))
            return HttpResponse(200, [("content-type", content_type),
                                      ("cache-control", "no-store")], body)  # fmt: skip

        router.add("GET", "/metrics", scrape)
