"""``serve()``: the stream manager, one listening port, every connection, and shutdown.

Trio style: ``await nursery.start(serve, config)`` returns once the port is listening and
gives a :class:`RunningServer` (its ``port``, its URLs, and ``shutdown()``). A graceful
shutdown (``shutdown()``, or SIGINT/SIGTERM when ``handle_signals`` is set) stops
accepting, lets every connection finish what it has queued and closes it with 1001, gives
the stragglers ``server.shutdown_grace`` seconds, and then flushes and closes every stream
as the manager exits. A second signal skips the waiting.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from functools import partial

import attrs
import trio

from .. import __version__
from ..auth import Authorizer, redact_library_logs
from ..config import Config, HlsConfig
from ..metrics import Metrics
from ..streams import StreamManager, open_stream_manager
from ._fanout import FanoutHub, serve_fanout_hub
from ._frontdoor import FrontDoor, SessionHandler
from ._http import HttpRequest, HttpResponse, Router, json_response
from ._icecast import add_icecast_routes
from ._icecast_admin import add_icecast_admin_routes
from ._transports import Transport, make_transport
from ._web import add_web_routes

__all__ = ["RunningServer", "build_router", "serve"]

log = logging.getLogger("mmstream.server")

#: Share of ``shutdown_grace`` given to connections; the rest is for flushing streams.
_CONNECTIONS_SHARE = 0.8


@attrs.define(eq=False)
class RunningServer:
    """What ``nursery.start(serve, config)`` gives back."""

    host: str
    port: int
    manager: StreamManager
    _shutdown: trio.Event
    #: The scope of every connection's task, set by :func:`serve` (``abort`` cancels it).
    connection_scope: trio.CancelScope | None = None
    metrics: Metrics | None = None

    @property
    def url(self) -> str:
        """The WebSocket base URL (``mmstream.client`` appends ``/v1``)."""
        return f"ws://{_url_host(self.host)}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.is_set()

    def shutdown(self) -> None:
        """Begin a graceful shutdown; ``serve`` returns when it is done. Idempotent."""
        self._shutdown.set()

    def abort(self) -> None:
        """Stop waiting for connections: close them now (streams are still flushed)."""
        self._shutdown.set()
        if self.connection_scope is not None:
            self.connection_scope.cancel()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def build_router(
    server: RunningServer,
    authorizer: Authorizer | None,
    cors_origins: Sequence[str],
    hub: FanoutHub,
    hls: HlsConfig | None = None,
) -> Router:
    """The plain-HTTP routes: ``/healthz`` here, playback, the page and ``/metrics`` from
    :func:`add_web_routes` (growing streams followed through ``hub``)."""
    router = Router(cors_origins)
    add_web_routes(
        router,
        server.manager,
        server.metrics,
        authorizer=authorizer,
        follow=hub.follow,
        hls=hls,
    )

    @router.route("GET", "/healthz")
    async def healthz(request: HttpRequest) -> HttpResponse:
        # Load balancers stop routing here as soon as a shutdown begins.
        if server.shutting_down:
            return json_response(503, {"status": "shutting-down", "version": __version__})
        streams = len(server.manager.list())
        return json_response(200, {"status": "ok", "streams": streams, "version": __version__})

    return router


def return_free_heap() -> None:
    """Hand the C heap's free pages back to the system, once the server is up.

    Starting frees much of what it allocates (compiling modules that have no ``.pyc``, as
    under ``PYTHONDONTWRITEBYTECODE``; reading the config; recovering the cache), and glibc
    keeps freed heap pages mapped until told. At idle that is about 1 MiB of a worker's RSS
    without ``.pyc`` files, 0.3 MiB with them (docs/fanout.md, "Memory per listener"). Without
    glibc's ``malloc_trim`` this does nothing."""
    import ctypes  # loaded already with the mmap backend

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


async def serve(
    config: Config,
    *,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until a graceful shutdown completes (or until cancelled).

    ``handle_signals`` turns SIGINT and SIGTERM into a graceful shutdown (the command line
    sets it; it needs the main thread).
    """
    # Listen first: a port in use fails before the cache is recovered, and clients that
    # connect during recovery wait in the backlog instead of being refused.
    listeners = await trio.open_tcp_listeners(config.server.port, host=config.server.host)
    port = listeners[0].socket.getsockname()[1]
    metrics = Metrics()
    try:
        async with (
            open_stream_manager(config.cache, metrics=metrics) as manager,
            trio.open_nursery() as fanout,
        ):
            shutdown = trio.Event()
            server = RunningServer(config.server.host, port, manager, shutdown, metrics=metrics)
            authorizer = Authorizer(config.auth)
            redact_library_logs()
            hub = await fanout.start(serve_fanout_hub, manager, config.icecast, metrics)
            router = build_router(server, authorizer, config.server.cors_origins, hub, config.hls)
            if config.tier.enabled:  # only then is anything of the tier imported
                from ..tier import serve_tier

                await fanout.start(serve_tier, config.tier, manager, metrics)
            relays = None
            if config.cluster.peers:
                from ._relay import Relays  # only a worker with peers relays

                host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(
                    config.server.host, config.server.host
                )
                own = f"ws://{host}:{port}"
                relays = Relays(hub, config.cluster, own_url=own)
            icecast = add_icecast_routes(
                router, manager, hub, config.icecast, metrics, authorizer, relays
            )
            add_icecast_admin_routes(router, manager, hub, icecast, metrics, authorizer)

            def websockets() -> tuple[Transport, SessionHandler]:
                # Imported at the first WebSocket upgrade: the protocol, its sessions and
                # the websockets library are ~1.4 MiB a radio server never uses.
                from ._connection import connection_handler

                handler = connection_handler(
                    manager, config.server, shutdown, hub, metrics, authorizer
                )
                return make_transport(config.server), handler

            door = FrontDoor(
                config.server,
                websockets,
                router,
                websocket_path=_is_v1_path,
                origin_allowed=authorizer.origin_allowed,
            )
            metrics.connections.set_function(lambda: door.active_connections)
            async with trio.open_nursery() as outer:
                if handle_signals:
                    outer.start_soon(_watch_signals, server)
                async with trio.open_nursery() as connections:
                    server.connection_scope = connections.cancel_scope
                    async with trio.open_nursery() as accepting:
                        await accepting.start(
                            partial(
                                trio.serve_listeners,
                                door.handle,
                                listeners,
                                handler_nursery=connections,
                            )
                        )
                        log.info(
                            "listening on %s (transport %s, cache %s)",
                            server.url,
                            config.server.transport,
                            manager.directory,
                        )
                        return_free_heap()
                        task_status.started(server)
                        await shutdown.wait()
                        accepting.cancel_scope.cancel()  # closes the listeners
                    grace = config.server.shutdown_grace
                    log.info(
                        "shutting down: %d connections get %s s of the %s s grace to finish",
                        door.active_connections,
                        f"{grace * _CONNECTIONS_SHARE:g}",
                        f"{grace:g}",
                    )
                    door.begin_shutdown()
                    connections.cancel_scope.deadline = (
                        trio.current_time() + grace * _CONNECTIONS_SHARE
                    )
                if connections.cancel_scope.cancelled_caught:
                    log.warning("shutdown: connections still open at the deadline were closed")
                outer.cancel_scope.cancel()
            fanout.cancel_scope.cancel()
            log.info("flushing and closing %d streams", len(manager.list()))
    finally:
        for listener in listeners:  # already closed unless the manager failed to open
            await trio.aclose_forcefully(listener)
    log.info("stopped")


def _is_v1_path(path: str) -> bool:
    from ..protocol import parse_path  # at the first WebSocket upgrade, as its sessions are

    return parse_path(path) is not None


async def _watch_signals(server: RunningServer) -> None:
    if threading.current_thread() is not threading.main_thread():
        log.warning("not in the main thread: SIGINT/SIGTERM are not handled")
        return
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if server.shutting_down:
                log.warning("%s again: closing connections now", name)
                server.abort()
            else:
                log.info("%s: shutting down gracefully", name)
                server.shutdown()
