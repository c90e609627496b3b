"""The public surface of mmstream.server, pinned (other issues build on it)."""

from __future__ import annotations

import mmstream.server


def test_public_names() -> None:
    assert sorted(mmstream.server.__all__) == [
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
    for name in mmstream.server.__all__:
        assert getattr(mmstream.server, name).__module__.startswith("mmstream.server.")


def test_router_matches_segments_and_reports_allowed_methods() -> None:
    router = mmstream.server.Router()

    async def handler(request: mmstream.server.HttpRequest) -> mmstream.server.HttpResponse:
        return mmstream.server.text_response(200, "ok")

    router.add("GET", "/streams/{id}", handler)
    router.add("DELETE", "/streams/{id}", handler)
    assert router.resolve("GET", "/streams/a-1") == (handler, {"id": "a-1"})
    assert router.resolve("HEAD", "/streams/a-1") == (handler, {"id": "a-1"})
    assert router.resolve("POST", "/streams/a-1") == ["DELETE", "GET", "HEAD"]
    assert router.resolve("GET", "/streams/a/b") == []
    assert router.resolve("GET", "/streams/") == []
    assert router.resolve("GET", "/streams.x/a") == []  # the pattern's dot is literal
