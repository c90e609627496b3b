"""hls.js (from the npm registry, installed by the test into a gitignored directory, never
committed) in headless Chromium plays a live AAC stream from mmstream's LL-HLS playlist
while an Icecast source uploads it in real time, within 3 s of the live edge; it seeks back
60 s and returns to live. It plays live Ogg and WebM Opus streams too (fMP4 segments,
through MediaSource).

Needs ``/usr/bin/chromium``, ``npm`` (one package, once: ``.cache/npm``) and ffmpeg.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from media_files import live_radio

CHROMIUM = Path(os.environ.get("MMSTREAM_CHROMIUM", "/usr/bin/chromium"))
NPM_DIR = Path(__file__).parents[2] / ".cache" / "npm"
HLS_JS = NPM_DIR / "node_modules" / "hls.js" / "dist" / "hls.min.js"
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install chromium"
    ),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed"),
]
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

#: Audio the source sends at once (the past a listener seeks into), then in real time.
BURST, SECONDS = 70, 120
#: The issue's bound on the latency to a player.
LATENCY = 3.0


@pytest.fixture(scope="module")
def hls_js() -> Path:
    if not HLS_JS.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed (apt-get install npm)")
        done = subprocess.run(
            [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(NPM_DIR),
             "hls.js@1"], capture_output=True, check=False, timeout=300,
        )  # fmt: skip
        if done.returncode != 0 or not HLS_JS.exists():
            pytest.skip(f"npm install hls.js failed: {done.stderr.decode()[-300:]}")
    return HLS_JS


_PLAY_JS = """(url) => new Promise((resolve, reject) => {
    const audio = document.querySelector("audio");
    const hls = new Hls({ lowLatencyMode: true });
    window.hls = hls;
    window.fatal = [];
    window.codecs = [];
    hls.on(Hls.Events.BUFFER_CODECS, (_, tracks) => {
        for (const t of Object.values(tracks)) if (t && t.codec) window.codecs.push(`${t.container};${t.codec}`);
    });
    hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) window.fatal.push(data.details); });
    hls.on(Hls.Events.MANIFEST_PARSED, () => { audio.play().then(resolve, reject); });
    hls.loadSource(url);
    hls.attachMedia(audio);
})"""

#: Where the player is: its position, ``hls.latency`` (the live edge minus the position,
#: seconds), the wall-clock latency from EXT-X-PROGRAM-DATE-TIME, its fatal errors, and
#: the codecs it gave MediaSource.
_STATE_JS = """() => ({
    time: document.querySelector("audio").currentTime,
    paused: document.querySelector("audio").paused,
    latency: window.hls.latency,
    wall: window.hls.playingDate ? (Date.now() - window.hls.playingDate) / 1000 : null,
    live: window.hls.liveSyncPosition,
    fatal: window.fatal,
    codecs: window.codecs,
})"""


def _settle(page: playwright.Page, seconds: float) -> dict[str, object]:
    time.sleep(seconds)
    state: dict[str, object] = page.evaluate(_STATE_JS)
    return state


def _started(page: playwright.Page, within: float = 30) -> dict[str, object]:
    """The state once the element has begun playing (``currentTime`` past 0: before,
    JavaScript's 0 arrives as an int)."""
    deadline = time.monotonic() + within
    state = _settle(page, 0)
    while not (isinstance(state["time"], float) and state["time"] > 0):
        assert time.monotonic() < deadline, f"hls.js did not start playing: {state}"
        state = _settle(page, 0.2)
    return state


@contextlib.contextmanager
def _playing(server: str, hls_js: Path) -> Iterator[playwright.Page]:
    """A page of headless Chromium playing the live stream ``radio`` with hls.js."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, timeout=30_000,
                args=["--autoplay-policy=no-user-gesture-required", "--disable-gpu",
                      "--disable-dev-shm-usage", "--disable-quic"],
            )  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(f"{server}/healthz")  # the stream's origin: no CORS needed
            page.set_content("<audio></audio>")
            page.add_script_tag(path=str(hls_js))
            page.evaluate(_PLAY_JS, f"{server}/streams/radio/index.m3u8")
            yield page
        finally:
            browser.close()


def test_hls_js_plays_live_within_3_s_seeks_back_and_returns(
    server_process: str, hls_js: Path
) -> None:
    server = server_process
    # Once the burst is listed (70 s: 17 segments of 4 s).
    with (
        live_radio(server, SECONDS, listed=BURST // 4 - 1, burst=BURST),
        _playing(server, hls_js) as page,
    ):
        live = _settle(page, 8)
        page.evaluate("document.querySelector('audio').currentTime -= 60")
        back = _settle(page, 6)
        page.evaluate("document.querySelector('audio').currentTime = window.hls.liveSyncPosition")
        returned = _settle(page, 8)
    print(f"hls.js LL-HLS: live {live}; 60 s back {back}; back to live {returned}")
    for state in (live, back, returned):
        assert state["fatal"] == [] and state["paused"] is False
    assert isinstance(live["latency"], float) and 0 < live["latency"] <= LATENCY
    assert isinstance(live["time"], float) and isinstance(back["time"], float)
    # 60 s back, and playing from there (6 s later it is ~6 s further).
    assert 55 < live["time"] + 6 - back["time"] < 66
    assert isinstance(back["latency"], float) and back["latency"] > 50
    assert isinstance(returned["latency"], float) and 0 < returned["latency"] <= LATENCY


@pytest.mark.parametrize("kind", ["opus", "webm"])
def test_hls_js_plays_a_live_opus_stream_as_fmp4(
    server_process: str, hls_js: Path, kind: str
) -> None:
    """Ogg pages and WebM clusters of a second are longer than a part: a plain live
    playlist of 4 s fMP4 segments, a segment and a reload behind the source."""
    with (
        live_radio(server_process, 40, listed=2, kind=kind),
        _playing(server_process, hls_js) as page,
    ):
        first = _started(page)
        state = _settle(page, 6)
    print(f"hls.js, live {kind} as fMP4: {state}")
    assert state["fatal"] == [] and state["paused"] is False
    assert state["codecs"] == ["audio/mp4;opus"]  # MediaSource was given the Opus track
    assert isinstance(first["time"], float) and isinstance(state["time"], float)
    assert state["time"] > first["time"] + 4  # it plays, in real time
    assert isinstance(state["wall"], float) and 0 < state["wall"] < 15
