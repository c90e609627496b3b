"""The Trio side of mmstream, and the only code that touches sockets.

One listening port (the front door, h11) serves WebSocket upgrades, handed to the
configured transport and spoken as protocol v1, and plain HTTP (``/healthz``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._app import RunningServer as RunningServer
from ._app import build_router as build_router
from ._app import serve as serve
from ._frontdoor import FrontDoor as FrontDoor
from ._http import HttpRequest as HttpRequest
from ._http import HttpResponse as HttpResponse
from ._http import Router as Router
from ._http import json_response as json_response
from ._http import text_response as text_response
from ._transports import Connection as Connection
from ._transports import ConnectionClosed as ConnectionClosed
from ._transports import Transport as Transport
from ._transports import TransportOptions as TransportOptions
from ._transports import make_transport as make_transport

if TYPE_CHECKING:
    from ._connection import Session as Session
    from ._connection import connection_handler as connection_handler
    from ._ws_sansio import WebsocketsTransport as WebsocketsTransport
    from ._ws_trio import TrioWebsocketTransport as TrioWebsocketTransport

__all__ = [
    "Connection",
    "ConnectionClosed",
    "FrontDoor",
    "HttpRequest",
    "HttpResponse",
    "Router",
    "RunningServer",
    "Session",
    "Transport",
    "TransportOptions",
    "TrioWebsocketTransport",
    "WebsocketsTransport",
    "build_router",
    "connection_handler",
    "json_response",
    "make_transport",
    "serve",
    "text_response",
]


def __getattr__(name: str) -> object:
    # The WebSocket side (the protocol's sessions, websockets, trio-websocket and wsproto)
    # loads at the first upgrade, for the transport configured, or when a name is asked for:
    # a server only ever asked for HTTP never holds it.
    if name == "TrioWebsocketTransport":
        from ._ws_trio import TrioWebsocketTransport

        return TrioWebsocketTransport
    if name == "WebsocketsTransport":
        from ._ws_sansio import WebsocketsTransport

        return WebsocketsTransport
    if name in ("Session", "connection_handler"):
        from . import _connection

        return getattr(_connection, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
