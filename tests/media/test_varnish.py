"""Varnish 7 (Debian's ``varnish``) in front of mmstream: 1,000 HLS clients of one live
stream, and the origin sees at most 2 % of their segment requests (every segment is
immutable, so the cache answers all but the first request for each).

Needs ``varnishd`` (``apt-get install varnish``) and ffmpeg.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from media_files import live_radio
from serve_process import stop_process

VARNISHD = shutil.which("varnishd")
pytestmark = [
    pytest.mark.skipif(VARNISHD is None, reason="varnishd not found: apt-get install varnish"),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed"),
]
CLIENTS = 1000
SECONDS = 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def varnishd(backend: str, workdir: Path, *params: str) -> Iterator[str]:
    """varnishd in the foreground with the default VCL in front of ``backend`` (an http://
    URL), its state in ``workdir``, with more ``-p`` parameters; yields its base URL."""
    port = _free_port()
    workdir.mkdir()
    process = subprocess.Popen(
        [str(VARNISHD), "-F", "-n", str(workdir), "-a", f"127.0.0.1:{port}",
         "-b", backend.removeprefix("http://"), "-s", "malloc,64m", "-p", "default_ttl=1",
         *(arg for param in params for arg in ("-p", param))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "varnishd did not start"
            trio.run(trio.sleep, 0.1)
        yield base
    finally:
        stop_process(process)


@pytest.fixture
def varnish(server_process: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """varnishd with the default VCL in front of ``server``."""
    with varnishd(server_process, tmp_path / "varnish") as base:
        yield base, tmp_path / "varnish"


def _backend_requests(workdir: Path) -> int:
    out = subprocess.run(["varnishstat", "-n", str(workdir), "-1", "-f", "MAIN.backend_req"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(out.split()[1])


async def _listeners(base: str, rounds: int) -> int:
    """``CLIENTS`` listeners, each fetching the live playlist and then every segment it
    lists that it has not fetched yet, ``rounds`` times 4 s apart; the segment requests
    made."""
    fetched = 0
    seen: list[set[str]] = [set() for _ in range(CLIENTS)]
    limits = trio.CapacityLimiter(64)  # sockets in flight from this one process
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as http:

        async def listen(n: int) -> None:
            nonlocal fetched
            async with limits:
                playlist = await http.get(f"{base}/streams/radio/index.m3u8")
                assert playlist.status_code == 200
                for line in playlist.text.splitlines():
                    if line and line[0] != "#" and line not in seen[n]:
                        segment = await http.get(f"{base}/streams/radio/{line}")
                        assert segment.status_code == 200
                        seen[n].add(line)
                        fetched += 1

        for _ in range(rounds):
            async with trio.open_nursery() as nursery:
                for n in range(CLIENTS):
                    nursery.start_soon(listen, n)
            await trio.sleep(4)
    return fetched


def test_varnish_absorbs_a_thousand_hls_listeners(
    server_process: str,
    varnish: tuple[str, Path],
) -> None:
    base, workdir = varnish
    with live_radio(server_process, SECONDS, listed=1):
        before = _backend_requests(workdir)
        segments = trio.run(_listeners, base, 3)
        origin = _backend_requests(workdir) - before
    print(f"{segments} segment requests through Varnish; origin requests (all kinds): {origin}")
    assert segments >= CLIENTS * 2
    # Every origin request, playlists included, counts against the segments: still <= 2 %.
    assert origin <= 0.02 * segments
