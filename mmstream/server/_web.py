"""The HTTP routes for people and dashboards: playback, the page, metrics.

:func:`add_web_routes` puts them on the front door's :class:`Router`; the decisions live in
:mod:`mmstream.web` (sans-I/O ranges, the playback response, the page's files) and
:mod:`mmstream.metrics`, so this module only translates between them and the router.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import attrs
import trio

from ..auth import CHALLENGE, Authorizer
from ..capability import RENEW_BY_PLAYLIST, RENEW_BY_TOKEN, Refusal, decorate_playlist
from ..config import HlsConfig
from ..errors import MmstreamError
from ..metrics import CacheSnapshot, Metrics
from ..streams import StreamManager, StreamStatus
from ..web.assets import SECURITY_HEADERS, find_asset
from ..web.clientaddr import host_of
from ..web.playback import PIECE_SIZE, Follow, Response, stream_response
from ._http import HttpRequest, HttpResponse, Router, text_response
from ._read_access import ReadAccess, find_quietly, read_access

if TYPE_CHECKING:
    from ..web.hls_http import SegmentPlans
    from ..web.llhls import BlockingBudget

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


#: The header of an answer to a token (a playlist, a stream's) holding a capability for
#: that stream: what a page passes to a player that cannot send the token
#: (``index.m3u8?<capability>``, ``<audio src="/streams/{id}?<capability>">``).
CAPABILITY_HEADER = "x-mmstream-capability"


def _refusal(refusal: Refusal) -> HttpResponse:
    headers = [("www-authenticate", CHALLENGE)] if refusal.status == 401 else []
    return text_response(refusal.status, refusal.reason, headers)


def _private(http: HttpResponse) -> HttpResponse:
    """An answer to a request authorized by its header alone, for that client only: a shared
    cache may store a "public" answer to a request with Authorization and give it to anyone
    asking for the same URI (RFC 9111 §3.5)."""
    private = [(k, v.replace("public", "private") if k == "cache-control" else v)
               for k, v in http.headers]  # fmt: skip
    return attrs.evolve(http, headers=private)


def add_web_routes(
    router: Router,
    manager: StreamManager,
    metrics: Metrics | None = None,
    *,
    piece_size: int = PIECE_SIZE,
    authorizer: Authorizer | None = None,
    follow: Follow,
    hls: HlsConfig | None = None,
) -> None:
    """``GET``/``HEAD`` ``/streams/{id}``, ``/``, ``/static/{name}`` and, with ``metrics``,
    ``/metrics`` (whose cache figures are then read from ``manager``); a growing stream is
    followed through ``follow`` (the server's hub)."""

    settings = hls or HlsConfig()

    @functools.cache
    def hls_state() -> tuple[SegmentPlans, BlockingBudget]:
        """The playlists' segment plans and the budget of LL-HLS requests held for a part
        (web/llhls.py, bounded by [hls]), made at the first request that needs them: HLS
        and its fMP4 muxing load then, so a server nobody asks for HLS never holds them."""
        from ..web.hls_http import SegmentPlans
        from ..web.llhls import BlockingBudget

        return SegmentPlans(), BlockingBudget(settings.max_blocked, settings.max_blocked_per_ip)

    async def minted(stream_id: str) -> str:
        """A new capability, for an answer to a token (a playlist, the stream): for the
        stream's generation, for ``capability_lifetime``, plus a finished stream's duration
        (its playlist is fetched once and then played through, as an <audio> plays it)."""
        info = await find_quietly(manager, stream_id)
        if authorizer is None or info is None:
            return ""
        lifetime = authorizer.capability_lifetime
        if info.status is StreamStatus.READY:
            from ..web.hls import DEFAULT_TARGET_DURATION

            plans, _ = hls_state()
            with contextlib.suppress(MmstreamError):  # the plan the playlist was made from
                segments = (await plans.get(manager, info, DEFAULT_TARGET_DURATION)).segments
                if segments:
                    lifetime += segments[-1].time + segments[-1].duration
        now = time.time()
        return authorizer.capabilities.mint(stream_id, info.generation, now=now, lifetime=lifetime)

    async def access(
        request: HttpRequest, renew: str = RENEW_BY_TOKEN
    ) -> ReadAccess | HttpResponse:
        """Who may read (tokens in a header, never the URL; or a capability), or the
        one-line refusal (``renew``: what to do about an expired capability here)."""
        allowed = await read_access(request, manager, authorizer, renew=renew)
        return _refusal(allowed) if isinstance(allowed, Refusal) else allowed

    async def stream(request: HttpRequest) -> HttpResponse:
        allowed = await access(request)
        if isinstance(allowed, HttpResponse):
            return allowed
        stream_id = request.params["stream_id"]
        response = await stream_response(
            manager,
            stream_id,
            request.header_fields(),
            piece_size=piece_size,
            metrics=metrics,
            query=request.query,
            follow=follow,
        )
        http = _to_http(response)
        if not allowed.by_header or http.status >= 400:
            return http
        # Every answer to a token hands a capability for the stream, for the page's
        # <audio src> (which cannot send the token): a HEAD is enough to get one.
        private, query = _private(http), await minted(stream_id)
        if not query:
            return private
        return attrs.evolve(private, headers=[*private.headers, (CAPABILITY_HEADER, query)])

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

    async def playlist(request: HttpRequest) -> HttpResponse:
        allowed = await access(request, RENEW_BY_PLAYLIST)
        if isinstance(allowed, HttpResponse):
            return allowed
        from ..web.hls_http import playlist_response

        stream_id = request.params["stream_id"]
        plans, blocked = hls_state()
        response = await playlist_response(
            manager, stream_id, query=request.query, client=host_of(request.remote),
            metrics=metrics, plans=plans, budget=blocked,
        )  # fmt: skip
        http = _to_http(response)
        if http.status != 200 or not isinstance(http.body, bytes):
            return http
        query = await minted(stream_id) if allowed.by_header else allowed.query
        if not query:
            return http
        # Every URI the playlist lists carries the capability; the header says it too, for
        # a page to hand a native player (index.m3u8?<capability>).
        body = decorate_playlist(http.body.decode(), query).encode()
        return attrs.evolve(http, body=body, headers=[*http.headers, (CAPABILITY_HEADER, query)])

    async def segment(request: HttpRequest) -> HttpResponse:
        allowed = await access(request, RENEW_BY_PLAYLIST)
        if isinstance(allowed, HttpResponse):
            return allowed
        from ..web.hls_http import segment_response

        plans, blocked = hls_state()
        response = await segment_response(
            manager, request.params["stream_id"], request.params["segment"],
            request.header_fields(), client=host_of(request.remote), metrics=metrics, plans=plans,
            budget=blocked,
        )  # fmt: skip
        http = _to_http(response)
        return _private(http) if allowed.by_header else http

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
