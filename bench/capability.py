"""What handing a capability costs an answer to a token (docs/http.md, *Access control*).

    .venv/bin/python bench/capability.py [--hours 1]

A real server with tokens and two finished MP3 streams of ``--hours`` (128 kb/s). Times a
``HEAD /streams/{id}`` with the token: the first of a stream (its capability lasts its
duration more, read from its segment plan, which builds the stream's time index to the
end), then the next (the plan is kept); beside the first ``HEAD ?t=10`` of the other
stream, which builds the same index for the seek. Prints milliseconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import trio

from mmstream.client import connect
from mmstream.config import AuthConfig, CacheConfig, Config, ServerConfig, TokenConfig
from mmstream.server import RunningServer, serve

FRAME = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(413)  # 128 kb/s, 44.1 kHz: 26 ms
FRAME_SECONDS = 1152 / 44100
WRITER, READER = "writer-token-0123456789abcdef", "reader-token-0123456789abcdef"


async def _timed_head(http: httpx.AsyncClient, url: str) -> float:
    start = time.perf_counter()
    answer = await http.head(url, headers={"authorization": f"Bearer {READER}"})
    assert answer.status_code == 200 and "x-mmstream-capability" in answer.headers
    return (time.perf_counter() - start) * 1000


async def main(hours: float) -> None:
    with tempfile.TemporaryDirectory() as directory:
        config = Config(
            cache=CacheConfig(directory=Path(directory), sync_policy="finalize"),
            server=ServerConfig(port=0),
            auth=AuthConfig(
                tokens=(TokenConfig(token=WRITER), TokenConfig(token=READER, scopes=("read",))),
                capability_key="a-capability-key-of-32-characters-or-more",
            ),
        )
        data = FRAME * int(hours * 3600 / FRAME_SECONDS)
        async with trio.open_nursery() as nursery:
            server: RunningServer = await nursery.start(serve, config)
            async with connect(server.url, token=WRITER) as client:
                for name in ("a", "b"):
                    await client.create(name, content_type="audio/mpeg")
                    for at in range(0, len(data), 1 << 20):
                        await client.append(name, data[at : at + (1 << 20)])
                    await client.finalize(name)
            base = f"http://127.0.0.1:{server.port}/streams"
            async with httpx.AsyncClient(timeout=300) as http:
                first = await _timed_head(http, f"{base}/a")
                next_ = await _timed_head(http, f"{base}/a")
                seek = await _timed_head(http, f"{base}/b?t=10")
            print(f"{hours:g} h of MP3 ({len(data) / 1e6:.0f} MB): first token HEAD "
                  f"{first:.0f} ms, next {next_:.1f} ms; first token HEAD ?t=10 of "
                  f"another {seek:.0f} ms")  # fmt: skip
            server.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0)
    trio.run(main, parser.parse_args().hours)
