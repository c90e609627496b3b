"""Token auth for HLS on a real server (the rules without I/O: tests/test_capability.py): a
playlist fetched with a read token lists URIs carrying a signed capability (not the token),
which players that send no header (native HLS, ffmpeg without ``-headers``, hls.js without
``xhrSetup``) present for the segments; forged, expired, malformed or misapplied
capabilities are refused in one line; neither the token nor the capability's signature
reaches the log; a cache in front still stores each segment once per minute of issue."""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio
from media_files import FFMPEG, media, needs_tools
from serve_process import serve_process
from test_hlsjs import _PLAY_JS as PLAY_JS
from test_hlsjs import hls_js  # noqa: F401  (the fixture: hls.js from the npm registry)
from test_varnish import VARNISHD, varnish  # noqa: F401  (the fixture: varnishd in front)

from mmstream.capability import Capabilities
from mmstream.client import connect
from mmstream.config import AuthConfig, CacheConfig, Config, ServerConfig, TokenConfig
from mmstream.server import RunningServer, serve

KEY = "a-capability-key-of-32-characters-or-more"
WRITER = "writer-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
LIVE_READER = "live-reader-0123456789abcdef"  # read, but only live-* streams

# -- a real server --------------------------------------------------------------------


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> RunningServer:
    config = Config(
        cache=CacheConfig(directory=tmp_path / "cache", sync_policy="finalize"),
        server=ServerConfig(port=0),
        auth=AuthConfig(
            tokens=(TokenConfig(token=WRITER), TokenConfig(token=READER, scopes=("read",)),
                    TokenConfig(token=LIVE_READER, scopes=("read",), streams="live-*")),
            capability_key=KEY,
        ),
    )  # fmt: skip
    running: RunningServer = await nursery.start(serve, config)
    return running


def _uris(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and line[0] != "#"]


async def _finished_mp3(server: RunningServer, stream_id: str, times: int = 1) -> str:
    """A READY MP3 stream: the 12 s tone ``times`` over; its generation."""
    async with connect(server.url, token=WRITER) as client:
        info = await client.create(stream_id, content_type="audio/mpeg")
        await client.append(stream_id, media("mp3") * times)
        await client.finalize(stream_id)
    return info.generation or ""


@needs_tools
async def test_a_player_without_headers_plays_by_the_capability_the_playlist_carries(
    server: RunningServer, server_log: io.StringIO
) -> None:
    await _finished_mp3(server, "show", times=6)  # 72 s: more than the expiry's rounding
    base = f"http://127.0.0.1:{server.port}/streams/show"
    bearer = {"authorization": f"Bearer {READER}"}
    async with httpx.AsyncClient() as http:
        refused = await http.get(f"{base}/index.m3u8")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith(
            "Bearer"
        )
        playlist = await http.get(f"{base}/index.m3u8", headers=bearer)
        assert playlist.status_code == 200
        query = playlist.headers["x-mmstream-capability"]
        assert READER not in playlist.text and READER not in query
        uris = _uris(playlist.text)
        assert len(uris) >= 3 and all(uri.endswith(f"?{query}") for uri in uris)
        exp = int(parse_qs(query)["exp"][0])
        # A finished stream's lasts its duration more (known once its index is built:
        # regression, it was not yet when the capability was minted, so 3600 s only).
        assert exp >= time.time() + 3600 + 71

        # The segments, by the capability alone: cacheable by anyone in front.
        segment = await http.get(f"{base}/{uris[1]}")
        assert segment.status_code == 200 and segment.content.startswith(b"ID3")
        assert segment.headers["cache-control"] == "public, max-age=31536000, immutable"
        # By the header alone: a shared cache must not hand that answer to others.
        bare = urlsplit(uris[1]).path
        by_header = await http.get(f"{base}/{bare}", headers=bearer)
        assert by_header.status_code == 200 and by_header.content == segment.content
        assert by_header.headers["cache-control"] == "private, max-age=31536000, immutable"
        assert (await http.get(f"{base}/{bare}")).status_code == 401

        # The playlist by the capability: the same capability again, never a later one.
        again = await http.get(f"{base}/index.m3u8?{query}")
        assert again.status_code == 200 and _uris(again.text) == uris
        # A native player appends its own parameters (LL-HLS): the capability still counts.
        assert (await http.get(f"{base}/index.m3u8?_HLS_msn=1&{query}")).status_code == 200

        # ?token= in a URL is never accepted (and never logged).
        assert (await http.get(f"{base}/index.m3u8?token={READER}")).status_code == 401

    # ffmpeg, given only the capability URL, decodes every segment.
    done = await trio.run_process(
        [str(FFMPEG), "-v", "error", "-i", f"{base}/index.m3u8?{query}", "-f", "null", "-"],
        capture_stderr=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0

    log = server_log.getvalue()
    assert "/index.m3u8" in log and "/hls/" in log  # the access lines are there
    sig = parse_qs(query)["sig"][0]
    assert READER not in log and sig not in log
    assert "sig=[redacted]" in log and "token=[redacted]" in log


@needs_tools
async def test_forged_expired_and_misapplied_capabilities_are_refused(
    server: RunningServer,
) -> None:
    generation = await _finished_mp3(server, "show")
    await _finished_mp3(server, "other")
    base = f"http://127.0.0.1:{server.port}/streams"
    caps = Capabilities(KEY.encode())
    async with httpx.AsyncClient() as http:
        playlist = await http.get(f"{base}/show/index.m3u8",
                                  headers={"authorization": f"Bearer {READER}"})  # fmt: skip
        query = playlist.headers["x-mmstream-capability"]
        segment = urlsplit(_uris(playlist.text)[0]).path
        exp, sig = parse_qs(query)["exp"][0], parse_qs(query)["sig"][0]
        forged = f"exp={exp}&sig={sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}"
        expired = caps.mint("show", generation, now=time.time() - 7200, lifetime=60)
        other = (await http.get(f"{base}/other/index.m3u8",
                                headers={"authorization": f"Bearer {READER}"}))  # fmt: skip
        cases = {
            forged: (403, "forbidden: the capability is not for this stream"),
            f"exp={int(exp) + 3600}&sig={sig}": (403, "forbidden: the capability is not for this stream"),
            other.headers["x-mmstream-capability"]: (403, "forbidden: the capability is not for this stream"),
            expired: (401, "unauthorized: the capability expired; reload the playlist"),
            f"exp={exp}": (403, "forbidden: a capability needs exp and sig, once each"),
            f"exp=soon&sig={sig}": (403, "forbidden: malformed capability"),
            f"{query}&{query}": (403, "forbidden: a capability needs exp and sig, once each"),
        }  # fmt: skip
        for bad, (status, reason) in cases.items():
            for path in ("show/index.m3u8", f"show/{segment}"):
                answer = await http.get(f"{base}/{path}?{bad}")
                assert (answer.status_code, answer.text) == (status, reason + "\n"), (path, bad)

        # The stream deleted and created again under its id: the old capability is void.
        async with connect(server.url, token=WRITER) as client:
            await client.delete("show")
        new_generation = await _finished_mp3(server, "show")
        assert new_generation != generation
        answer = await http.get(f"{base}/show/index.m3u8?{query}")
        assert answer.status_code == 403
        # A stream that does not exist: the same refusal, nothing said about it.
        assert (await http.get(f"{base}/nothing/index.m3u8?{query}")).status_code == 403


@needs_tools
async def test_a_token_that_does_not_cover_the_stream_gets_no_capability(
    server: RunningServer,
) -> None:
    await _finished_mp3(server, "show")
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            f"http://127.0.0.1:{server.port}/streams/show/index.m3u8",
            headers={"authorization": f"Bearer {LIVE_READER}"},
        )
    assert answer.status_code == 401 and "x-mmstream-capability" not in answer.headers
    assert not re.search(r"sig=", answer.text)


# -- hls.js, with and without the header ----------------------------------------------

#: hls.js sends a header only if told to, for every request it makes.
_XHR_SETUP = """(token) => {
    Hls.DefaultConfig.xhrSetup = (xhr) => xhr.setRequestHeader("Authorization", `Bearer ${token}`);
}"""


def _hls_js_requests(
    browser: Any, base: str, script: Path, src: str, token: str | None
) -> list[tuple[str, str | None]]:
    """Play ``src`` in hls.js (sending ``token`` in ``xhrSetup`` if given) for 3 s; check
    that it plays; the requests it made (URL, Authorization)."""
    page = browser.new_page()
    asked: list[tuple[str, str | None]] = []
    page.on("request", lambda r: asked.append((r.url, r.headers.get("authorization"))))
    page.goto(f"{base}/healthz")  # the stream's origin: no CORS needed
    page.set_content("<audio></audio>")
    page.add_script_tag(path=str(script))
    if token is not None:
        page.evaluate(_XHR_SETUP, token)
    page.evaluate(PLAY_JS, src)
    first = page.evaluate("document.querySelector('audio').currentTime")
    time.sleep(3)
    assert page.evaluate("window.fatal") == []
    assert page.evaluate("document.querySelector('audio').currentTime") > first + 1.5
    page.close()
    return asked


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[str]:
    """``mmstream serve`` as tests/media/conftest.py's, with tokens on and the access lines
    (DEBUG) in ``tmp_path/server.log``; the stream ``show`` uploaded (24 s of MP3)."""
    config = tmp_path / "auth.toml"
    config.write_text(f'[logging]\nlevel = "DEBUG"\n\n[auth]\ntokens = [{{token = "{WRITER}"}}]\n')
    with serve_process(tmp_path, config) as base:
        put = httpx.put(f"{base}/streams/show", content=media("mp3") * 2,
                        headers={**BEARER, "content-type": "audio/mpeg"})  # fmt: skip
        assert put.status_code == 200
        yield base


BEARER = {"authorization": f"Bearer {WRITER}"}


@needs_tools
def test_hls_js_plays_by_capability_or_by_header(
    server_process: str,
    tmp_path: Path,
    hls_js: Path,  # noqa: F811
) -> None:
    """hls.js without ``xhrSetup`` (no header: what native players do too) plays from the
    capability URL the page would give it; with ``xhrSetup`` sending the token it plays
    the bare playlist URL, whose URIs then carry a capability as well."""
    chromium = Path(os.environ.get("MMSTREAM_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        pytest.skip(f"{chromium} not found: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    base = server_process
    url = f"{base}/streams/show/index.m3u8"
    query = httpx.get(url, headers=BEARER).headers["x-mmstream-capability"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, timeout=30_000,
            args=["--autoplay-policy=no-user-gesture-required", "--disable-gpu",
                  "--disable-dev-shm-usage"],
        )  # fmt: skip
        try:
            bare = _hls_js_requests(browser, base, hls_js, f"{url}?{query}", None)
            with_header = _hls_js_requests(browser, base, hls_js, url, WRITER)
        finally:
            browser.close()
    for asked in (bare, with_header):
        segments = [u for u, _ in asked if "/hls/" in u]
        assert segments and all("&sig=" in u for u in segments)
    assert all(header is None for _, header in bare)
    assert all(header == f"Bearer {WRITER}" for u, header in with_header if "/streams/" in u)
    assert WRITER not in (tmp_path / "server.log").read_text()


LISTENERS = 200


async def _listeners_with_tokens(front: str) -> int:
    """``LISTENERS`` players, each fetching the playlist with the token (as hls.js with
    ``xhrSetup`` does) and every segment it lists by its URI (with the capability, no
    header: as a native player does); the segment requests made."""
    fetched = 0
    limits = trio.CapacityLimiter(64)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as http:

        async def listen() -> None:
            nonlocal fetched
            async with limits:
                playlist = await http.get(f"{front}/streams/show/index.m3u8", headers=BEARER)
                assert playlist.status_code == 200
                for uri in _uris(playlist.text):
                    assert (await http.get(f"{front}/streams/show/{uri}")).status_code == 200
                    fetched += 1

        async with trio.open_nursery() as nursery:
            for _ in range(LISTENERS):
                nursery.start_soon(listen)
    return fetched


@pytest.mark.skipif(VARNISHD is None, reason="varnishd not found: apt-get install varnish")
@needs_tools
def test_varnish_caches_segments_whose_uris_carry_capabilities(
    server_process: str,
    varnish: tuple[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Capabilities are the same for every listener of the same minute, so a cache in
    front still stores each segment once per minute of issue, not once per listener.
    (The playlists, fetched with the token, all reach the origin: a cache does not store
    an answer to a request with ``Authorization``.)"""
    front, _ = varnish
    requests = trio.run(_listeners_with_tokens, front)
    log = (tmp_path / "server.log").read_text()
    at_origin = log.count("GET /streams/show/hls/")
    minutes = len(set(re.findall(r"/hls/\S+\?exp=(\d+)&", log)))
    playlists = log.count("GET /streams/show/index.m3u8")
    print(f"{requests} segment requests through Varnish, {at_origin} at the origin "
          f"({minutes} capability expiries); playlists at the origin: {playlists}")  # fmt: skip
    segments = requests // LISTENERS
    assert requests == LISTENERS * segments and segments >= 6
    assert minutes in (1, 2) and at_origin <= segments * minutes
