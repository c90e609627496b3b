"""Token auth for plain HTTP playback on a real server: an answer to a read token carries a
capability for the stream (``X-Mmstream-Capability``), which ``GET``/``HEAD
/streams/{id}?<capability>`` accepts without a header (ranges, ``?t=``, and the Icecast
listener path with or without ``?offset=``): what the page gives ``<audio src>``, which
cannot send the token. The rules are HLS's (docs/hls.md, *Access control*); forged, expired
and misapplied capabilities are refused in one line, and neither the token nor the
signature reaches the log."""

from __future__ import annotations

import io
import time
from urllib.parse import parse_qs

import httpx
from test_hls_auth import (
    KEY,
    READER,
    WRITER,
    server,  # noqa: F401  (the fixture: a real server with tokens)
)

from mmstream.capability import Capabilities
from mmstream.client import connect
from mmstream.server import RunningServer

BEARER = {"authorization": f"Bearer {READER}"}
#: One MPEG-1 Layer III frame of silence (128 kbit/s, 44.1 kHz, mono): 26 ms.
FRAME = b"\xff\xfb\x90\xc4" + bytes(413)
TEN_SECONDS = FRAME * 383
NOT_FOR_IT = (403, "forbidden: the capability is not for this stream\n")


async def _mp3(running: RunningServer, stream_id: str, *, finish: bool = True) -> str:
    """Ten seconds of MP3, READY unless ``finish`` is false (then live); its generation."""
    async with connect(running.url, token=WRITER) as client:
        info = await client.create(stream_id, content_type="audio/mpeg")
        await client.append(stream_id, TEN_SECONDS)
        if finish:
            await client.finalize(stream_id)
    return info.generation or ""


async def _first_bytes(http: httpx.AsyncClient, url: str) -> tuple[int, str, bytes]:
    """Status, Cache-Control and the first bytes of an answer that may never end (live)."""
    async with http.stream("GET", url) as answer:
        async for chunk in answer.aiter_bytes():
            return answer.status_code, answer.headers.get("cache-control", ""), chunk
        return answer.status_code, answer.headers.get("cache-control", ""), b""


async def test_a_token_answer_hands_a_capability_that_plays_without_a_header(
    server: RunningServer,  # noqa: F811
    server_log: io.StringIO,
) -> None:
    await _mp3(server, "show")
    url = f"http://127.0.0.1:{server.port}/streams/show"
    async with httpx.AsyncClient() as http:
        refused = await http.get(url, headers={"range": "bytes=0-"})
        assert (refused.status_code, refused.text) == (401, "unauthorized\n")
        head = await http.head(url, headers=BEARER)
        assert head.status_code == 200
        query = head.headers["x-mmstream-capability"]
        assert READER not in query and "public" not in head.headers["cache-control"]
        # A finished stream's lasts its duration more (an <audio> seeks in it meanwhile).
        assert int(parse_qs(query)["exp"][0]) >= time.time() + 3600 + 9

        whole = await http.get(f"{url}?{query}")  # the Icecast path: no Range
        assert whole.status_code == 200 and whole.content == TEN_SECONDS
        ranged = await http.get(f"{url}?{query}", headers={"range": "bytes=0-3"})
        assert ranged.status_code == 206 and ranged.content == FRAME[:4]
        # Answers by capability keep playback's Cache-Control (never public: a cache in front
        # revalidates each with the origin, which checks the capability), and mint nothing:
        # a capability never renews itself.
        assert ranged.headers["cache-control"] == "no-cache"
        assert "x-mmstream-capability" not in ranged.headers
        seek = await http.get(f"{url}?t=5&{query}")
        assert seek.status_code == 200 and 4.9 < float(seek.headers["x-mmstream-time"]) <= 5.0
        by_head = await http.head(f"{url}?t=5&{query}")
        assert by_head.status_code == 200 and "x-mmstream-capability" not in by_head.headers
        # Every answer to a token carries one: the timeline's HEAD ?t= as well.
        assert "x-mmstream-capability" in (await http.head(f"{url}?t=5", headers=BEARER)).headers
        assert "x-mmstream-capability" in (await http.get(url, headers=BEARER)).headers
        # Not for an answer that is not the stream's.
        missing = await http.head(f"http://127.0.0.1:{server.port}/streams/none", headers=BEARER)
        assert missing.status_code == 404 and "x-mmstream-capability" not in missing.headers

    log = server_log.getvalue()
    assert "/streams/show?t=5&exp=" in log  # the access lines are there
    assert READER not in log and parse_qs(query)["sig"][0] not in log
    assert "sig=[redacted]" in log


async def test_a_live_stream_plays_by_capability_on_the_listener_path(
    server: RunningServer,  # noqa: F811
) -> None:
    await _mp3(server, "live", finish=False)
    url = f"http://127.0.0.1:{server.port}/streams/live"
    async with httpx.AsyncClient() as http:
        query = (await http.head(url, headers=BEARER)).headers["x-mmstream-capability"]
        assert (await _first_bytes(http, url))[::2] == (401, b"unauthorized\n")
        status, cache, first = await _first_bytes(http, f"{url}?{query}")  # a radio listener
        assert status == 200 and first.startswith(b"\xff\xfb") and "public" not in cache
        status, _, first = await _first_bytes(http, f"{url}?offset=0&{query}")
        assert status == 200 and first.startswith(FRAME[:64])
        status, _, first = await _first_bytes(http, f"{url}?t=-3&{query}")
        assert status == 200 and first.startswith(b"\xff\xfb")
        ranged = await http.get(url, headers={"range": "bytes=0-"})
        assert ranged.status_code == 401  # <audio>'s first request, without a capability


async def test_forged_expired_and_misapplied_capabilities_are_refused(
    server: RunningServer,  # noqa: F811
) -> None:
    generation = await _mp3(server, "show")
    await _mp3(server, "other")
    await _mp3(server, "live", finish=False)
    base = f"http://127.0.0.1:{server.port}/streams"
    caps = Capabilities(KEY.encode())
    async with httpx.AsyncClient() as http:
        query = (await http.head(f"{base}/show", headers=BEARER)).headers["x-mmstream-capability"]
        other = (await http.head(f"{base}/other", headers=BEARER)).headers["x-mmstream-capability"]
        exp, sig = parse_qs(query)["exp"][0], parse_qs(query)["sig"][0]
        cases = {
            f"exp={exp}&sig={sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}": NOT_FOR_IT,
            f"exp={int(exp) + 3600}&sig={sig}": NOT_FOR_IT,
            other: NOT_FOR_IT,
            # A stream URL's capability came from X-Mmstream-Capability, not from a playlist.
            caps.mint("show", generation, now=time.time() - 7200, lifetime=60): (
                401, "unauthorized: the capability expired; get a new one with the token "
                     "(X-Mmstream-Capability)\n"),
            f"exp={exp}": (403, "forbidden: a capability needs exp and sig, once each\n"),
            f"exp=soon&sig={sig}": (403, "forbidden: malformed capability\n"),
        }  # fmt: skip
        for bad, refusal in cases.items():
            for target, headers in (
                (f"show?{bad}", {}),  # READY, no Range: the Icecast listener route first
                (f"show?{bad}", {"range": "bytes=0-"}),  # what <audio> sends
                (f"show?t=3&{bad}", {}),
            ):
                answer = await http.get(f"{base}/{target}", headers=headers)
                assert (answer.status_code, answer.text) == refusal, (target, headers)
            head = await http.head(f"{base}/show?{bad}")
            assert head.status_code == refusal[0]
        # A capability of one stream on the listener path of a live one.
        answer = await http.get(f"{base}/live?{query}")
        assert (answer.status_code, answer.text) == NOT_FOR_IT
        assert answer.headers["content-type"].startswith("text/plain")

        # The stream deleted and created again under its id: the old capability is void.
        async with connect(server.url, token=WRITER) as client:
            await client.delete("show")
        assert await _mp3(server, "show") != generation
        answer = await http.get(f"{base}/show?{query}", headers={"range": "bytes=0-"})
        assert (answer.status_code, answer.text) == NOT_FOR_IT
        # A stream that does not exist: the same refusal, nothing said about it.
        assert (await http.get(f"{base}/nothing?{query}")).status_code == 403
