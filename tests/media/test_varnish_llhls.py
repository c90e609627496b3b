"""Varnish 7 in front of mmstream, LL-HLS clients of one live stream: each asks for the next
part with a blocking playlist reload and fetches the preload-hinted part at the same time,
as hls.js does in ``lowLatencyMode``. Every client asks for the same URLs at the same moment
(``index.m3u8?_HLS_msn=M&_HLS_part=P``, ``hls/<gen>-M.P.aac``), so Varnish's request
coalescing sends one of each to the origin, which holds it until the part is final; the
answer (``public, max-age=12``, parts ``immutable``) is given to every client waiting.

150 clients here; ``make soak`` runs 1,000. Needs ``varnishd`` and ffmpeg.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import trio
from hls_rules import check_playlist
from media_files import live_radio
from test_varnish import pytestmark as pytestmark
from test_varnish import varnishd

CLIENTS = 1000 if os.environ.get("MMSTREAM_SOAK") == "1" else 150
SECONDS = 40
#: How long the clients follow the live edge, seconds (~25 parts of 0.4 s).
FOLLOW = 10.0
#: Every client sends its next requests the moment a part is final: a burst of two per
#: client every ~0.4 s, each needing a worker thread to be read (a request waiting for
#: another's fetch then parks without one). Varnish's defaults (100 threads per pool at
#: first, 20 sessions queued for one) drop the rest of such a burst (docs/hls.md).
THREADS = (f"thread_pool_min={max(100, CLIENTS)}", f"thread_queue_limit={2 * CLIENTS}")


_PART = re.compile(r'^#EXT-X-PART:.*URI="([^"]+)"', re.MULTILINE)
_HINT = re.compile(r'^#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', re.MULTILINE)


def _parts(text: str) -> tuple[list[str], str]:
    """A live playlist's part URIs and its hint, read cheaply: one process plays every
    client, and a client that parses slowly falls behind the live edge (the first and last
    playlist of each are checked against the rules)."""
    hint = _HINT.search(text)
    assert hint is not None, text
    return _PART.findall(text), hint.group(1)


def _position(uri: str) -> tuple[int, int]:
    """``hls/<generation>-M.P.aac`` → ``(M, P)``."""
    sequence, index = uri.rpartition("-")[2].split(".")[:2]
    return int(sequence), int(index)


def _kind(url: str) -> str:
    if "index.m3u8" in url:
        return "blocking" if "_HLS_msn=" in url else "playlist"
    return "part" if url.count(".") == 2 else "segment"


async def _ll_clients(base: str) -> tuple[Counter[str], Counter[str]]:
    """``CLIENTS`` LL-HLS clients for ``FOLLOW`` seconds: the requests they made, and the
    distinct URLs they asked for, by kind."""
    made: Counter[str] = Counter()
    asked: set[str] = set()
    stream = f"{base}/streams/radio"
    limits = httpx.Limits(max_connections=2 * CLIENTS, max_keepalive_connections=2 * CLIENTS)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def get(url: str) -> httpx.Response:
            for attempt in range(3):
                try:
                    answer = await http.get(f"{stream}/{url}")
                    break
                except httpx.TransportError:  # a pooled connection closed: as a player, retry
                    if attempt == 2:
                        raise
                    made["retried"] += 1
            assert answer.status_code == 200, (url, answer.status_code, answer.text[:80])
            made[_kind(url)] += 1
            asked.add(url)
            return answer

        async def client(until: float) -> None:
            text = (await get("index.m3u8")).text
            check_playlist(text)
            fetched: set[str] = set()
            while trio.current_time() < until:
                hint = _parts(text)[1]
                msn, part = _position(hint)
                query = f"index.m3u8?_HLS_msn={msn}&_HLS_part={part}"
                async with trio.open_nursery() as both:  # the reload and the hinted part
                    both.start_soon(get, hint)
                    text = (await get(query)).text
                fetched.add(hint)
                for uri in _parts(text)[0]:
                    # Parts the client did not get as a hint (it fell behind): fetch them.
                    if _position(uri) > (msn, part) and uri not in fetched:
                        await get(uri)
                        fetched.add(uri)
            check_playlist(text)

        until = trio.current_time() + FOLLOW
        async with trio.open_nursery() as nursery:
            for _ in range(CLIENTS):
                nursery.start_soon(client, until)
    return made, Counter(_kind(url) for url in asked)


def test_varnish_collapses_blocking_reloads_and_caches_parts(
    server_process: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "varnish"
    with varnishd(server_process, workdir, *THREADS) as base:
        made, distinct, origin = _measure(server_process, base, workdir, tmp_path / "origin.log")
    print(f"{CLIENTS} LL-HLS clients through Varnish made {dict(made)} requests, "
          f"distinct URLs {dict(distinct)}; the origin received {dict(origin)}")  # fmt: skip
    assert made["blocking"] >= CLIENTS * 3 and made["part"] >= CLIENTS * 10
    # Coalesced: each reload URL and part reaches the origin once, whatever the clients
    # (give or take Varnish's own retry of a fetch on a backend connection that closed).
    for kind in ("blocking", "part"):
        assert origin[kind] <= distinct[kind] + 2, kind
    # The origin's share of every request the clients made (the plain playlists too).
    assert sum(origin.values()) <= 0.02 * (made.total() - made["retried"])


def _measure(
    server: str, base: str, workdir: Path, log: Path
) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """The clients' requests and distinct URLs, and the origin's requests, by kind."""
    # Every request Varnish sends the origin, one URL a line.
    ncsa = subprocess.Popen(["varnishncsa", "-n", str(workdir), "-b", "-F", "%U%q", "-w", str(log)])
    try:
        with live_radio(server, SECONDS, listed=1):
            trio.run(trio.sleep, 1)  # varnishncsa attached
            made, distinct = trio.run(_ll_clients, base)
            trio.run(trio.sleep, 1)  # the last lines written
    finally:
        ncsa.terminate()
        ncsa.wait()
    origin = Counter(_kind(line) for line in log.read_text().split() if "/streams/radio" in line)
    return made, distinct, origin
