"""Stream bytes never run as a page: whatever a source declares, every route that sends a
stream's bytes (playback GET/HEAD, ranges, live listeners) sends them inert — nosniff, a
sandboxing CSP, and anything but media as an ``application/octet-stream`` download."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from icecast_helpers import (
    exchange,
    live_source,
    open_listener,
    running_server,
    wait_until,
)

from mmstream.server import RunningServer
from mmstream.streams import StreamStatus

PAGE = b"<html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'


async def _get(server: RunningServer, target: str, method: str = "GET", extra: str = "") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    request = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    return await exchange(server, request)


def assert_inert(headers: dict[str, str], *, download: bool) -> None:
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    if download:
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"] == "attachment"
    else:
        assert "content-disposition" not in headers


@pytest.mark.parametrize(("declared", "data"), [("text/html", PAGE), ("image/svg+xml", SVG)])
async def test_a_page_put_as_a_stream_is_served_as_a_download(
    tmp_path: Path, declared: str, data: bytes
) -> None:
    async with running_server(tmp_path) as server:
        source = await live_source(server, "evil", data, content_type=declared)
        # Live: the Icecast listener route, and playback with a range.
        listener, headers, _ = await open_listener(server, "/streams/evil")
        assert_inert(headers, download=True)
        await listener.aclose()
        status, headers, body = await _get(server, "/streams/evil", extra="Range: bytes=0-9\r\n")
        assert (status, body) == (206, data[:10])
        assert_inert(headers, download=True)
        await source.aclose()  # the end of an unframed body: the server finalizes the stream
        await wait_until(lambda: server.manager.stat("evil").status is StreamStatus.READY)
        for method in ("GET", "HEAD"):
            status, headers, body = await _get(server, "/streams/evil", method)
            assert status == 200
            assert body == (data if method == "GET" else b"")
            assert_inert(headers, download=True)


async def test_media_is_served_as_declared(tmp_path: Path) -> None:
    async with running_server(tmp_path, source_end="keep") as server:
        source = await live_source(server, "song", b"OggS" + bytes(100), content_type="audio/ogg")
        with trio.fail_after(10):
            listener, headers, _ = await open_listener(server, "/streams/song")
        assert headers["content-type"] == "audio/ogg"
        assert_inert(headers, download=False)
        await listener.aclose()
        status, headers, _ = await _get(server, "/streams/song", extra="Range: bytes=0-3\r\n")
        assert status == 206 and headers["content-type"] == "audio/ogg"
        assert_inert(headers, download=False)
        await source.aclose()
