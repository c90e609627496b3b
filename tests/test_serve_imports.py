"""What a server holds in memory at start: optional parts load only when configured or asked for,
and the heap that starting freed goes back to the system.

A worker's baseline RSS decides its ratio to Icecast's at small listener counts
(docs/fanout.md, "Memory per listener"), and every module loaded stays for the process's
life. So a server started with the default config must not have loaded what only a
non-default setting or a first request of some kind needs. The tests of those parts
(tests/server with the trio-websocket transport, tests/media for HLS, tests/scaleout for relays)
show that they still load when used.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from serve_process import modules_after_start

from mmstream.config import CacheConfig, Config, ServerConfig
from mmstream.server import RunningServer, serve

#: Loaded only at the first WebSocket upgrade (the protocol, its sessions and websockets),
#: for ``server.transport = "trio-websocket"``, peers to relay from (or ``ls
#: --nodes``, whose module also gives ``serve`` its options), the first HLS request, the first
#: Icecast status or admin request, a misspelt config key, the first ``/metrics`` scrape, ``serve
#: --workers``; ``html`` (its entity table) for nothing.
OPTIONAL = (
    "mmstream.protocol",
    "mmstream.server._connection",
    "mmstream.server._ws_sansio",
    "websockets",
    "uuid",
    "trio_websocket",
    "wsproto",
    "mmstream.server._ws_trio",
    "mmstream.client",
    "mmstream.server._relay",
    "websockets.trio.client",
    "mmstream.web.hls",
    "mmstream.web.hls_http",
    "mmstream.web.llhls",
    "xml.sax",
    "mmstream.icecast._status",
    "mmstream.icecast._admin",
    "difflib",
    "prometheus_client",
    "mmstream._metrics_export",
    "html",
    "mmstream.scaleout",
)


def test_a_server_on_the_default_config_loads_no_optional_part(tmp_path: Path) -> None:
    assert sorted(modules_after_start(tmp_path).intersection(OPTIONAL)) == []


def test_the_trio_websocket_transport_is_still_public() -> None:
    import mmstream.server
    from mmstream.server._ws_trio import TrioWebsocketTransport

    assert mmstream.server.TrioWebsocketTransport is TrioWebsocketTransport


def test_the_free_heap_can_be_returned_at_any_time() -> None:
    """The call is safe anywhere, twice, and a no-op where there is no such function."""
    from mmstream.server._app import return_free_heap

    return_free_heap()
    return_free_heap()


def test_the_server_returns_the_free_heap_once_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up's freed heap goes back once the server is up, before it is reported
    started: once, not per connection."""
    from mmstream.server import _app

    calls: list[str] = []
    monkeypatch.setattr(_app, "return_free_heap", lambda: calls.append("trim"))
    config = Config(cache=CacheConfig(directory=tmp_path / "cache"), server=ServerConfig(port=0))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server: RunningServer = await nursery.start(serve, config)
            assert calls == ["trim"]
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                assert (await http.get("/healthz")).status_code == 200
            assert calls == ["trim"]
            server.abort()

    trio.run(main)
