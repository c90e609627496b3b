"""End to end in Debian's Chromium: record from a fake microphone in the page, stream it to
a real mmstream server, see it listed, play it live and back.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` package, driving that binary: no browser is downloaded. The server runs as a
real ``mmstream serve`` subprocess on a free loopback port. On failure a screenshot is saved
in the test's tmp dir.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_process import serve_process

CHROMIUM = Path(os.environ.get("MMSTREAM_CHROMIUM", "/usr/bin/chromium"))
FFMPEG = shutil.which("ffmpeg")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} not found: apt-get install chromium (CI installs it via .ci/run)",
    ),
]

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

EBML_MAGIC = bytes.fromhex("1a45dfa3")
LAUNCH_ARGS = [
    "--use-fake-device-for-media-stream",  # a fake microphone
    "--use-fake-ui-for-media-stream",  # accept the permission prompt
    "--autoplay-policy=no-user-gesture-required",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mmstream serve`` in a subprocess; yields its http:// base URL."""
    with serve_process(tmp_path_factory.mktemp("browser")) as base:
        yield base


def _wait_until(page: Any, expression: str, timeout: float = 20.0) -> None:
    """Poll ``expression`` in the page. (Playwright's ``wait_for_function`` evaluates a string
    inside the page, which the page's Content-Security-Policy rightly forbids; ``evaluate``
    goes through the debugging protocol and is not affected. The policy stays on, so the test
    also proves the page works under it.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout}s: {expression}")
        time.sleep(0.05)


_DURATION_JS = """async () => {
    // Chromium reports Infinity for a recorded WebM until it has seen the end: seek far
    // past it and the real duration appears. Polled, not event-driven: a durationchange
    // may come before the one that carries the real value.
    const audio = document.querySelector("#audio");
    const until = async (ready, ms) => {
        const start = performance.now();
        while (!ready() && performance.now() - start < ms) {
            await new Promise((wake) => setTimeout(wake, 50));
        }
    };
    await until(() => audio.readyState >= 1 || audio.error, 10000);
    if (!Number.isFinite(audio.duration)) {
        audio.currentTime = 1e101;
        await until(() => Number.isFinite(audio.duration) || audio.error, 10000);
        audio.currentTime = 0;
    }
    return {duration: audio.duration, error: audio.error && audio.error.code};
}"""


def _launch(p: Any) -> Any:
    return p.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, timeout=30_000, args=LAUNCH_ARGS
    )


@contextlib.contextmanager
def _browser_page(tmp_path: Path, init_script: str | None = None) -> Iterator[Any]:
    """A page in a fresh Chromium (20 s per action); its screenshot is saved if the block
    fails. ``init_script`` runs before the page's own scripts."""
    with playwright.sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            if init_script is not None:
                page.add_init_script(init_script)
            try:
                yield page
            except BaseException:
                page.screenshot(path=str(tmp_path / "failure.png"))
                print(f"screenshot: {tmp_path / 'failure.png'}")
                raise
        finally:
            browser.close()


def test_record_list_and_play_back(server: str, tmp_path: Path) -> None:
    stream_id = f"browser-{os.getpid()}"
    with playwright.sync_playwright() as p:
        browser = _launch(p)
        errors: list[str] = []

        def open_page() -> Any:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            page.set_default_timeout(20_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "console",
                lambda message: (
                    errors.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            page.goto(server + "/")
            page.wait_for_selector("#conn.up")
            return page

        page = listener = None
        audio = "document.querySelector('#audio')"
        item = f'li[data-stream-id="{stream_id}"]'
        try:
            page = open_page()

            # Record 3 s from the fake microphone.
            page.fill("#stream-name", stream_id)
            page.click("#record")
            _wait_until(page, "window.mmstream.recorder.state === 'recording'")
            started = time.monotonic()

            # Meanwhile a second visitor joins late and listens live (MediaSource fed by a
            # WebSocket tail from offset 0, so the WebM header comes first).
            listener = open_page()
            listener.wait_for_selector(f'{item}[data-status="uploading"]')
            listener.click(f"{item} button.play")
            _wait_until(listener, f"{audio}.currentTime > 0.3")
            assert listener.evaluate(f"{audio}.error") is None

            # A title set the Icecast way shows in the list and in the player.
            query = {"mount": f"/streams/{stream_id}", "mode": "updinfo", "song": "Sigur Rós"}
            assert httpx.get(f"{server}/admin/metadata", params=query).status_code == 200
            listener.wait_for_selector(f"{item} .now")
            assert listener.text_content(f"{item} .now") == "♪ Sigur Rós"
            assert listener.text_content("#player-now") == "♪ Sigur Rós"

            page.wait_for_timeout(max(0, 3000 - (time.monotonic() - started) * 1000))
            page.click("#record")
            _wait_until(page, "window.mmstream.recorder.state === 'idle'")
            assert page.evaluate("window.mmstream.error") is None
            page.wait_for_selector(f'{item}[data-status="ready"]')
            # The live listener got the end too: the whole stream, a finite duration.
            _wait_until(listener, f"Number.isFinite({audio}.duration)")
            assert 2.0 < listener.evaluate(f"{audio}.duration") < 4.5

            # The server holds a READY WebM stream.
            head = httpx.get(f"{server}/streams/{stream_id}", headers={"Range": "bytes=0-3"})
            assert head.status_code == 206
            assert head.content == EBML_MAGIC
            assert head.headers["content-type"].startswith("audio/webm")
            whole = httpx.get(f"{server}/streams/{stream_id}")
            assert whole.status_code == 200
            assert 10_000 < len(whole.content) < 200_000  # ~40 KB for 3 s of Opus
            assert int(head.headers["content-range"].rpartition("/")[2]) == len(whole.content)

            # What the page records (WebM Opus from MediaRecorder) is served as HLS in fMP4
            # segments, which ffmpeg's HLS demuxer decodes without a complaint.
            if FFMPEG is not None:
                hls = f"{server}/streams/{stream_id}/index.m3u8"
                assert '#EXT-X-MAP:URI="hls/' in httpx.get(hls).text
                done = subprocess.run([FFMPEG, "-v", "error", "-i", hls, "-f", "null", "-"],
                                      capture_output=True, check=False, timeout=60)  # fmt: skip
                assert (done.returncode, done.stderr) == (0, b"")

            # Played back from the cache through HTTP range requests.
            page.click(f"{item} button.play")
            _wait_until(page, f"{audio}.src.endsWith('/streams/{stream_id}')")
            result = page.evaluate(_DURATION_JS)
            assert result["error"] is None
            assert 2.0 < result["duration"] < 4.5
            page.evaluate(f"{audio}.play()")
            _wait_until(page, f"{audio}.currentTime > 0.2")
            assert errors == []
            page.screenshot(path=str(tmp_path / "page.png"))
        except BaseException:
            for name, shown in (("failure.png", page), ("failure-listener.png", listener)):
                if shown is not None:
                    shown.screenshot(path=str(tmp_path / name))
                    print(f"screenshot: {tmp_path / name}")
            raise
        finally:
            browser.close()


#: One MPEG-1 Layer III frame of silence: 128 kbit/s, 44.1 kHz, mono, all side info zero.
SILENT_MP3_FRAME = b"\xff\xfb\x90\xc4" + bytes(413)


def _mp3_source(server: str, stream_id: str) -> socket.socket:
    """An Icecast-style source (``PUT``, no length) that has sent 10 s of MP3 silence and
    stays connected: a live stream the page plays over HTTP, not MediaSource."""
    host, _, port = server.removeprefix("http://").partition(":")
    source = socket.create_connection((host, int(port)), timeout=10)
    source.sendall(
        f"PUT /streams/{stream_id} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    assert source.recv(1024).startswith(b"HTTP/1.1 100 ")
    source.sendall(SILENT_MP3_FRAME * 383)
    return source


def test_the_player_badge_follows_the_stream_not_the_transport(server: str, tmp_path: Path) -> None:
    """A live stream played over HTTP (MP3, so no MediaSource) is badged "live", and "ready"
    once it is finalized (regression: the badge said how it was played, so "ready" for any
    stream played over HTTP, and never changed after)."""
    stream_id = f"http-live-{os.getpid()}"
    badge = "document.querySelector('#player-badge')"
    source = _mp3_source(server, stream_id)
    with contextlib.closing(source), _browser_page(tmp_path) as page:
        page.goto(server + "/")
        item = f'li[data-stream-id="{stream_id}"]'
        page.wait_for_selector(f'{item}[data-status="uploading"]')
        page.click(f"{item} button.play")
        _wait_until(page, f"document.querySelector('#audio').src.endsWith('{stream_id}')")
        _wait_until(page, f"{badge}.textContent !== ''")
        assert page.evaluate(f"{badge}.textContent") == "live"
        assert page.evaluate(f"{badge}.classList.contains('uploading')")

        source.shutdown(socket.SHUT_WR)  # a clean end: the server finalizes the stream
        assert b" 200 " in source.recv(1024)
        page.wait_for_selector(f'{item}[data-status="ready"]')
        _wait_until(page, f"{badge}.textContent === 'ready'")
        assert page.evaluate(f"{badge}.classList.contains('ready')")


# -- the live timeline, and HLS where MediaSource is missing --------------------------


#: kind → (ffmpeg output options, content type) of the live sources below
_LIVE_KINDS = {
    "mp3": (["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"], "audio/mpeg"),
    "webm": (["-c:a", "libopus", "-cluster_time_limit", "1000", "-f", "webm"], "audio/webm"),
}


@functools.cache
def _two_minutes(kind: str) -> bytes:
    """Two minutes of a 440 Hz tone, made by ffmpeg."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    done = subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=120",
         *_LIVE_KINDS[kind][0], "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    return done.stdout


@contextlib.contextmanager
def _live_source(
    server: str, stream_id: str, kind: str, *, token: str | None = None
) -> Iterator[None]:
    """An Icecast-style source uploading two minutes of ``kind``: the first at once (a
    stream that has been live for a minute), then the rest in real time, until the block
    ends."""
    data = _two_minutes(kind)
    stop = threading.Event()
    per_second = len(data) // 120

    def body() -> Iterator[bytes]:
        yield data[: 60 * per_second]
        for at in range(60 * per_second, len(data), per_second // 4):
            if stop.is_set():
                return
            time.sleep(0.25)
            yield data[at : at + per_second // 4]

    headers = {"content-type": _LIVE_KINDS[kind][1]}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    source = threading.Thread(
        target=lambda: httpx.put(f"{server}/streams/{stream_id}", content=body(),
                                 headers=headers, timeout=180),
        daemon=True,
    )  # fmt: skip
    source.start()
    try:
        yield
    finally:
        stop.set()
        source.join(timeout=30)


def _advancing(page: Any, audio: str) -> None:
    """The element plays: its currentTime moves on."""
    before = page.evaluate(f"{audio}.currentTime")
    _wait_until(page, f"{audio}.currentTime > {before} + 1")
    assert page.evaluate(f"{audio}.error") is None


@pytest.mark.parametrize("kind", ["mp3", "webm"])
def test_the_timeline_rewinds_a_live_stream_and_jumps_back_to_live(
    server: str, tmp_path: Path, kind: str
) -> None:
    """Live: "Live" asks for ``?t=-3`` (just before the edge), the rewind button for
    ``?t=`` half a minute before where the player is, and the audio plays from there;
    "Live" again returns to the edge. The edge is stat's duration, the position where the
    server says the answer starts plus what the element played (a live WebM starts on
    MediaSource, then moves to HTTP; Chromium keeps WebM's own timestamps in currentTime,
    MP3 starts at 0)."""
    stream_id = f"timeline-{kind}-{os.getpid()}"
    audio = "document.querySelector('#audio')"
    player = "window.mmstream.player"
    with _live_source(server, stream_id, kind), _browser_page(tmp_path) as page:
        media: list[str] = []  # the element's own requests (not the page's HEADs)
        page.on("request", lambda r: media.append(r.url) if r.resource_type == "media" else None)
        page.goto(server + "/")
        item = f'li[data-stream-id="{stream_id}"]'
        page.wait_for_selector(f'{item}[data-status="uploading"]')
        page.click(f"{item} button.play")
        page.wait_for_selector("#timeline:not([hidden])")

        page.click("#go-live")
        _wait_until(page, f"{audio}.src.endsWith('/streams/{stream_id}?t=-3')")
        assert page.evaluate(f"{player}.edgeNow()") > 58  # a minute recorded so far
        _advancing(page, audio)
        assert page.evaluate(f"{player}.behind()") < 8
        _wait_until(page, "document.querySelector('#go-live').ariaPressed === 'true'")

        live_at = page.evaluate(f"{player}.position()")
        page.click("#rewind")
        _wait_until(page, f"{audio}.src.includes('/streams/{stream_id}?t=') && "
                          f"!{audio}.src.endsWith('?t=-3')")  # fmt: skip
        asked = float(page.evaluate(f"{audio}.src").rpartition("?t=")[2])
        assert live_at - 32 < asked < live_at - 28
        assert media[-1].endswith(f"/streams/{stream_id}?t={asked:.1f}")
        _advancing(page, audio)
        assert 27 < page.evaluate(f"{player}.behind()") < 36
        assert page.text_content("#timeline-behind").startswith("\u22120:3")  # minus sign
        assert page.evaluate("document.querySelector('#go-live').ariaPressed") == "false"

        page.click("#go-live")
        _wait_until(page, f"{player}.behind() < 8")
        _advancing(page, audio)
        assert page.evaluate(f"{audio}.src").endswith(f"/streams/{stream_id}?t=-3")
        assert page.evaluate("window.mmstream.error") is None
        page.screenshot(path=str(tmp_path / "timeline.png"))


#: Where MediaSource is missing but the browser plays HLS itself (iOS Safari before 17.1):
#: Chromium made to look like it. It cannot really play the playlist, so the tests check
#: the source the page chooses, not playback.
_NO_MEDIA_SOURCE = """
delete window.MediaSource;
delete window.ManagedMediaSource;
window.opusInMp4 = "";  // as Safari before 17
const canPlayType = HTMLMediaElement.prototype.canPlayType;
HTMLMediaElement.prototype.canPlayType = function (type) {
  if (type === 'audio/mp4; codecs="opus"') return window.opusInMp4;
  return type === "application/vnd.apple.mpegurl" ? "maybe" : canPlayType.call(this, type);
};
"""


def test_without_media_source_the_page_plays_hls(server: str, tmp_path: Path) -> None:
    """No MediaSource, native HLS: a live MP3 plays from its ``index.m3u8``; a live WebM,
    whose HLS is Opus in fMP4, plays over plain HTTP where the player cannot play Opus in
    MP4, and from its ``index.m3u8`` where it can. (Chromium has no native HLS:
    ``canPlayType`` is stubbed, so only the source chosen is checked.)"""
    mp3, webm = f"no-mse-mp3-{os.getpid()}", f"no-mse-webm-{os.getpid()}"
    audio = "document.querySelector('#audio')"
    with (
        _live_source(server, mp3, "mp3"),
        _live_source(server, webm, "webm"),
        _browser_page(tmp_path, _NO_MEDIA_SOURCE) as page,
    ):
        page.goto(server + "/")
        assert page.evaluate("window.MediaSource === undefined")
        for stream_id, expected in ((mp3, f"/streams/{mp3}/index.m3u8"),
                                    (webm, f"/streams/{webm}")):  # fmt: skip
            item = f'li[data-stream-id="{stream_id}"]'
            page.wait_for_selector(f'{item}[data-status="uploading"]')
            page.click(f"{item} button.play")
            _wait_until(page, f"{audio}.src.endsWith('{expected}')")
        assert page.evaluate("window.mmstream.player.mode") == "http"
        page.evaluate("window.opusInMp4 = 'probably'")  # as Safari 17
        page.click(f'li[data-stream-id="{webm}"] button.play')
        _wait_until(page, f"{audio}.src.endsWith('/streams/{webm}/index.m3u8')")
        assert page.evaluate("window.mmstream.player.mode") == "hls"


def test_with_auth_the_page_hands_native_hls_a_capability(tmp_path: Path) -> None:
    """With tokens on, the page (opened as ``/#token=…``) fetches the playlist with the
    token and gives the player ``index.m3u8?exp=…&sig=…``, which works with no header: what
    a native player sends (docs/hls.md, *Access control*)."""
    token = "page-token-0123456789abcdef"
    config = tmp_path / "auth.toml"
    config.write_text(f'[auth]\ntokens = [{{token = "{token}", scopes = ["read", "write"]}}]\n')
    stream_id = f"auth-hls-{os.getpid()}"
    audio = "document.querySelector('#audio')"
    with (
        serve_process(tmp_path, config) as base,
        _live_source(base, stream_id, "mp3", token=token),
        _browser_page(tmp_path, _NO_MEDIA_SOURCE) as page,
    ):
        page.goto(f"{base}/#token={token}")
        item = f'li[data-stream-id="{stream_id}"]'
        page.wait_for_selector(f'{item}[data-status="uploading"]')
        page.click(f"{item} button.play")
        _wait_until(page, f"{audio}.src.includes('/index.m3u8?')")
        src = page.evaluate(f"{audio}.src")
        assert re.search(rf"/streams/{stream_id}/index\.m3u8\?exp=\d+&sig=[\w-]{{22}}$", src)
        assert token not in src
        playlist = httpx.get(src)  # no Authorization: as the native player asks
        assert playlist.status_code == 200 and "#EXTINF" in playlist.text
        segment = next(line for line in playlist.text.splitlines() if line.startswith("hls/"))
        assert httpx.get(f"{base}/streams/{stream_id}/{segment}").status_code == 200
        assert httpx.get(f"{base}/streams/{stream_id}/index.m3u8").status_code == 401
        assert token not in (tmp_path / "server.log").read_text()


def test_with_auth_the_page_plays_over_http_by_capability(tmp_path: Path) -> None:
    """With tokens on, everything the page plays by ``<audio src>`` (which cannot send the
    token) carries the capability a HEAD with the token was answered with: a READY stream, a
    live MP3, the timeline's ``?t=`` rewind and **Live** (regression: each was 401). No
    request of the page is refused, and the token is never in a URL nor in the log."""
    token = "page-token-0123456789abcdef"
    config = tmp_path / "auth.toml"
    config.write_text(f'[auth]\ntokens = [{{token = "{token}", scopes = ["read", "write"]}}]\n')
    ready, live = f"auth-ready-{os.getpid()}", f"auth-live-{os.getpid()}"
    audio = "document.querySelector('#audio')"
    capability = r"exp=\d+&sig=[\w-]{22}$"
    with serve_process(tmp_path, config) as base:
        put = httpx.put(f"{base}/streams/{ready}", content=SILENT_MP3_FRAME * 383,
                        headers={"authorization": f"Bearer {token}",
                                 "content-type": "audio/mpeg"})  # fmt: skip
        assert put.status_code in (200, 201)
        with _live_source(base, live, "mp3", token=token), _browser_page(tmp_path) as page:
            answers: list[tuple[str, int]] = []
            page.on("response", lambda r: answers.append((r.url, r.status)))
            page.goto(f"{base}/#token={token}")

            page.wait_for_selector(f'li[data-stream-id="{ready}"][data-status="ready"]')
            page.click(f'li[data-stream-id="{ready}"] button.play')
            _wait_until(page, f"{audio}.src.includes('/streams/{ready}?')")
            assert re.search(rf"/streams/{ready}\?{capability}", page.evaluate(f"{audio}.src"))
            _advancing(page, audio)
            with page.expect_download() as download:  # the plain link: by capability too
                page.click(f'li[data-stream-id="{ready}"] a[download]')
            assert Path(download.value.path()).read_bytes() == SILENT_MP3_FRAME * 383

            item = f'li[data-stream-id="{live}"]'
            page.wait_for_selector(f'{item}[data-status="uploading"]')
            page.click(f"{item} button.play")
            _wait_until(page, f"{audio}.src.includes('/streams/{live}?')")
            assert re.search(rf"/streams/{live}\?{capability}", page.evaluate(f"{audio}.src"))
            _advancing(page, audio)
            page.wait_for_selector("#timeline:not([hidden])")

            page.click("#go-live")  # as the timeline test: its HEAD builds the time index
            _wait_until(page, f"{audio}.src.includes('/streams/{live}?t=-3&')")
            assert re.search(rf"/streams/{live}\?t=-3&{capability}", page.evaluate(f"{audio}.src"))
            _advancing(page, audio)
            _wait_until(page, "window.mmstream.player.behind() < 8")

            page.click("#rewind")
            _wait_until(page, f"{audio}.src.includes('/streams/{live}?t=') && "
                              f"!{audio}.src.includes('?t=-3&')")  # fmt: skip
            assert re.search(rf"/streams/{live}\?t=\d+\.\d&{capability}",
                             page.evaluate(f"{audio}.src"))  # fmt: skip
            _advancing(page, audio)
            assert 27 < page.evaluate("window.mmstream.player.behind()") < 36
            assert page.evaluate("window.mmstream.error") is None

        played = [(url, status) for url, status in answers if "/streams/" in url]
        assert played and all(status < 400 for _, status in played), played
        assert any("?t=-3&exp=" in url for url, _ in played)
        assert all(token not in url for url, _ in answers)
    assert token not in (tmp_path / "server.log").read_text()
