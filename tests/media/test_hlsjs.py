"""hls.js (from the npm registry, installed by the test into a gitignored directory, never
committed) in headless Chromium plays a live AAC stream from mmstream's HLS playlist while
an Icecast source uploads it in real time.

Needs ``/usr/bin/chromium``, ``npm`` (one package, once: ``.cache/npm``) and ffmpeg.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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

SECONDS = 40


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
    const hls = new Hls({ liveSyncDurationCount: 1 });
    window.hls = hls;
    window.fatal = [];
    hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) window.fatal.push(data.details); });
    hls.on(Hls.Events.MANIFEST_PARSED, () => { audio.play().then(resolve, reject); });
    hls.loadSource(url);
    hls.attachMedia(audio);
})"""


def test_hls_js_plays_a_live_stream(server_process: str, hls_js: Path) -> None:
    server = server_process
    # Once 8 s of audio (two segments) are listed.
    with live_radio(server, SECONDS, listed=2), playwright.sync_playwright() as p:
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
            first = page.evaluate("document.querySelector('audio').currentTime")
            time.sleep(6)
            state = page.evaluate("""() => ({
                    time: document.querySelector("audio").currentTime,
                    fatal: window.fatal,
                    latency: window.hls.playingDate ? (Date.now() - window.hls.playingDate) / 1000 : null,
                })""")  # fmt: skip
        finally:
            browser.close()
    assert state["fatal"] == []
    assert state["time"] > first + 4  # it plays, in real time
    # Plain HLS with 4 s segments: a segment and a reload behind the source at least; the
    # issue's 3 s needs LL-HLS (partial segments), which is not implemented yet.
    print(f"hls.js live latency: {state['latency']:.1f} s")
    assert state["latency"] is not None and 0 < state["latency"] < 15
