"""Icecast's status and ``/admin/`` endpoints on the front door: thin handlers over
:mod:`mmstream.icecast`, which writes every answer.

- ``GET /admin/metadata?mount=/streams/{id}&mode=updinfo&song=...`` sets a live stream's
  title: recorded by the manager (with the offset and time it began, in ``stat``) and handed
  to the stream's broadcaster, whose listeners with ``Icy-MetaData: 1`` get it in their next
  metadata block. It needs ``write`` on the stream (a source's own token) or ``admin``.
- ``GET /status-json.xsl`` (the live streams the caller may read), and, with ``admin``,
  ``/admin/stats`` (``.xml``), ``/admin/listclients?mount=``, ``/admin/listmounts``,
  ``/admin/killclient?mount=&id=`` and ``/admin/killsource?mount=``.

A mount is a live (UPLOADING) stream, whoever writes it: an Icecast source or a WebSocket
upload. Its listeners are the Icecast-style live listeners of :mod:`._icecast`.
"""

from __future__ import annotations

import logging
import re
import time

from .. import __version__
from .. import icecast as ice  # its status and admin parts load at first use
from ..auth import Authorizer, Grant, token_from_header
from ..errors import InvalidArgumentError, MmstreamError, StreamNotFoundError
from ..metrics import Metrics
from ..streams import StreamInfo, StreamManager, StreamStatus
from ..web.playback import HTTP_STATUS
from ._fanout import FanoutHub
from ._http import HttpRequest, HttpResponse, Router
from ._icecast import Icecast

__all__ = ["add_icecast_admin_routes"]

log = logging.getLogger("mmstream.server")

_XML = ("content-type", "text/xml; charset=utf-8")
_NO_STORE = ("cache-control", "no-store")
_STATUS = {**HTTP_STATUS, "not-uploading": 409}
_CHALLENGE = ("www-authenticate", 'Basic realm="Icecast2 Server"')
#: A Host header fit to be echoed in ``listenurl``; anything else is replaced.
_HOST = re.compile(r"([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(:[0-9]{1,5})?")
_CLIENT_ID = re.compile(r"[0-9]{1,18}")


def _xml(status: int, message: str, *, ok: bool) -> HttpResponse:
    return HttpResponse(status, [_XML, _NO_STORE], ice.iceresponse(message, ok=ok))


class _Admin:
    def __init__(
        self,
        manager: StreamManager,
        hub: FanoutHub,
        icecast: Icecast,
        metrics: Metrics | None,
        authorizer: Authorizer | None,
    ) -> None:
        self.manager = manager
        self.hub = hub
        self.icecast = icecast
        self.metrics = metrics
        self.authorizer = authorizer
        self.started = time.time()

    def _refused(self, exc: MmstreamError) -> HttpResponse:
        if self.metrics is not None:
            self.metrics.errors.labels(exc.code).inc()
        status = _STATUS.get(exc.code, 500)
        headers = [_XML, _NO_STORE, _CHALLENGE] if status == 401 else [_XML, _NO_STORE]
        return HttpResponse(status, headers, ice.iceresponse(exc.message, ok=False))

    def _grant(self, request: HttpRequest) -> Grant | None:
        if self.authorizer is None or not self.authorizer.enabled:
            return None
        return self.authorizer.authenticate(token_from_header(request.header("authorization")))

    def _check(self, request: HttpRequest, operation: str, stream_id: str | None) -> None:
        """``admin`` allows everything here; else ``operation`` on ``stream_id``."""
        if self.authorizer is None or not self.authorizer.enabled:
            return
        grant = self._grant(request)
        if self.authorizer.allows(grant, "admin", None):
            return
        self.authorizer.check(grant, operation, stream_id)

    # -- titles ----------------------------------------------------------------------------

    async def metadata(self, request: HttpRequest) -> HttpResponse:
        try:
            update = ice.parse_metadata_update(request.query)
            self._check(request, "metadata", update.stream_id)
            await self.hub.set_title(update.stream_id, update.song)
        except MmstreamError as exc:
            return self._refused(exc)
        return _xml(200, "Metadata update successful", ok=True)

    # -- status ----------------------------------------------------------------------------

    def _live(self, stream_ids: list[str] | None = None) -> list[StreamInfo]:
        infos = self.manager.list()
        shown = None if stream_ids is None else set(stream_ids)
        return [
            info
            for info in infos
            if info.status is StreamStatus.UPLOADING and (shown is None or info.stream_id in shown)
        ]

    def _source(self, info: StreamInfo, host: str, now: float) -> ice.SourceStats:
        broadcaster = self.hub.running(info.stream_id)
        record = self.icecast.sources.get(info.stream_id)
        start = record.since if record is not None else info.created_at
        return ice.SourceStats(
            mount=f"/streams/{info.stream_id}",
            listenurl=f"http://{host}/streams/{info.stream_id}",
            listeners=len(broadcaster.listeners) if broadcaster is not None else 0,
            listener_peak=broadcaster.listener_peak if broadcaster is not None else 0,
            server_type=info.content_type,
            stream_start=start,
            headers=info.metadata,
            title=info.titles[-1].title if info.titles else None,
            source_ip=record.address if record is not None else None,
            user_agent=record.user_agent if record is not None else None,
            total_bytes_read=info.size,
            total_bytes_sent=broadcaster.bytes_sent if broadcaster is not None else 0,
            connected=max(0, int(now - start)),
            max_listeners=self.icecast.config.mount(info.stream_id).max_listeners or None,
        )

    def _report(
        self, request: HttpRequest, infos: list[StreamInfo]
    ) -> tuple[ice.ServerStats, list[ice.SourceStats]]:
        host = request.header("host") or ""
        host = host if _HOST.fullmatch(host) else "localhost"
        now = time.time()
        sources = [self._source(info, host, now) for info in infos]
        listeners = sum(source.listeners for source in sources)
        server = ice.ServerStats(
            server_start=self.started,
            host=host.rsplit(":", 1)[0] if not host.endswith("]") else host,
            server_id=f"Icecast 2.4.4 (mmstream {__version__})",
            clients=listeners + len(self.icecast.sources),
            listeners=listeners,
            listener_connections=self.icecast.listener_connections,
            source_connections=self.icecast.source_connections,
        )
        return server, sources

    async def status_json(self, request: HttpRequest) -> HttpResponse:
        """Public in Icecast; here the live streams the caller may read (all, auth off)."""
        grant = self._grant(request)
        infos = [
            info
            for info in self._live()
            if self.authorizer is None or self.authorizer.allows(grant, "GET", info.stream_id)
        ]
        server, sources = self._report(request, infos)
        headers = [("content-type", "application/json; charset=utf-8"), _NO_STORE]
        return HttpResponse(200, headers, ice.status_json(server, sources))

    async def stats(self, request: HttpRequest) -> HttpResponse:
        try:
            self._check(request, "admin", None)
        except MmstreamError as exc:
            return self._refused(exc)
        server, sources = self._report(request, self._live())
        return HttpResponse(200, [_XML, _NO_STORE], ice.stats_xml(server, sources))

    async def listmounts(self, request: HttpRequest) -> HttpResponse:
        try:
            self._check(request, "admin", None)
        except MmstreamError as exc:
            return self._refused(exc)
        _, sources = self._report(request, self._live())
        return HttpResponse(200, [_XML, _NO_STORE], ice.listmounts_xml(sources))

    def _mount(self, request: HttpRequest) -> tuple[str, dict[str, str]]:
        """The admin check, then the live stream ``mount`` names, and the query."""
        self._check(request, "admin", None)
        params = ice.parse_query(request.query)
        stream_id = ice.stream_of_mount(params.get("mount"))
        if self.manager.stat(stream_id).status is not StreamStatus.UPLOADING:
            raise StreamNotFoundError(f"source /streams/{stream_id} does not exist (not live)")
        return stream_id, params

    async def listclients(self, request: HttpRequest) -> HttpResponse:
        try:
            stream_id, _ = self._mount(request)
        except MmstreamError as exc:
            return self._refused(exc)
        broadcaster = self.hub.running(stream_id)
        now = time.time()
        rows = [
            ice.ListenerRow(
                client.id, client.address, client.user_agent, max(0, int(now - client.since))
            )
            for listener in (broadcaster.listeners if broadcaster is not None else [])
            if (client := listener.client) is not None
        ]
        return HttpResponse(
            200, [_XML, _NO_STORE], ice.listclients_xml(f"/streams/{stream_id}", rows)
        )

    async def killclient(self, request: HttpRequest) -> HttpResponse:
        try:
            stream_id, params = self._mount(request)
            text = params.get("id")
            if text is None:
                raise InvalidArgumentError("missing parameter: id")
            if not _CLIENT_ID.fullmatch(text):
                raise InvalidArgumentError(f"id must be a listener's number, not {text[:40]!r}")
            broadcaster = self.hub.running(stream_id)
            if broadcaster is None or not broadcaster.drop(int(text)):
                raise StreamNotFoundError(f"Client {text} not found")
        except MmstreamError as exc:
            return self._refused(exc)
        log.info("admin: listener %s of stream %s removed", text, stream_id)
        return _xml(200, f"Client {text} removed", ok=True)

    async def killsource(self, request: HttpRequest) -> HttpResponse:
        try:
            stream_id, _ = self._mount(request)
            record = self.icecast.sources.get(stream_id)
            if record is None:
                raise StreamNotFoundError(f"no Icecast source is connected to /streams/{stream_id}")
        except MmstreamError as exc:
            return self._refused(exc)
        record.scope.cancel()
        log.info("admin: source of stream %s removed (the stream stays uploading)", stream_id)
        return _xml(200, "Source Removed", ok=True)


def add_icecast_admin_routes(
    router: Router,
    manager: StreamManager,
    hub: FanoutHub,
    icecast: Icecast,
    metrics: Metrics | None = None,
    authorizer: Authorizer | None = None,
) -> None:
    """Icecast's status and admin endpoints (docs/icecast.md, *Status and admin API*)."""
    admin = _Admin(manager, hub, icecast, metrics, authorizer)
    router.add("GET", "/admin/metadata", admin.metadata)
    router.add("GET", "/status-json.xsl", admin.status_json)
    router.add("GET", "/admin/stats", admin.stats)
    router.add("GET", "/admin/stats.xml", admin.stats)
    router.add("GET", "/admin/listmounts", admin.listmounts)
    router.add("GET", "/admin/listclients", admin.listclients)
    router.add("GET", "/admin/killclient", admin.killclient)
    router.add("GET", "/admin/killsource", admin.killsource)
