"""hls.js (from the npm registry, installed by the test into a gitignored directory, never
committed) in headless Chromium plays a live AAC stream from mmstream's HLS playlist while
an Icecast source uploads it in real time.

Needs ``/usr/bin/chromium``, ``npm`` (one package, once: ``.cache/npm``) and ffmpeg.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mmstream", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _real_time_source(base: str, data: bytes, stop: threading.Event) -> None:
    """An Icecast source sending ``data`` at its own pace (a quarter second at a time)."""
    step = len(data) // (SECONDS * 4)

    def body() -> Iterator[bytes]:
        for at in range(0, len(data), step):
            if stop.is_set():
                return
            yield data[at : at + step]
            time.sleep(0.25)

    httpx.put(f"{base}/streams/radio", content=body(), timeout=SECONDS + 30,
              headers={"content-type": "audio/aac"})  # fmt: skip


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


def test_hls_js_plays_a_live_stream(server: str, hls_js: Path, tmp_path: Path) -> None:
    audio = tmp_path / "tone.aac"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={SECONDS}", "-c:a", "aac", "-f", "adts",
                    str(audio)], check=True)  # fmt: skip
    stop = threading.Event()
    source = threading.Thread(
        target=_real_time_source, args=(server, audio.read_bytes(), stop), daemon=True
    )
    source.start()
    try:
        # Wait for two segments (8 s of audio) to be listed.
        deadline = time.monotonic() + 30
        while httpx.get(f"{server}/streams/radio/index.m3u8").text.count("#EXTINF") < 2:
            assert time.monotonic() < deadline, "the live playlist never listed two segments"
            time.sleep(0.5)
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
                first = page.evaluate("document.querySelector('audio').currentTime")
                time.sleep(6)
                state = page.evaluate("""() => ({
                    time: document.querySelector("audio").currentTime,
                    fatal: window.fatal,
                    latency: window.hls.playingDate ? (Date.now() - window.hls.playingDate) / 1000 : null,
                })""")  # fmt: skip
            finally:
                browser.close()
    finally:
        stop.set()
        source.join(timeout=SECONDS + 30)
    assert state["fatal"] == []
    assert state["time"] > first + 4  # it plays, in real time
    # Plain HLS with 4 s segments: a segment and a reload behind the source at least; the
    # issue's 3 s needs LL-HLS (partial segments), which is not implemented yet.
    print(f"hls.js live latency: {state['latency']:.1f} s")
    assert state["latency"] is not None and 0 < state["latency"] < 15
