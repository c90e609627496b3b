"""HLS from one ``mmstream serve`` worker: segment and playlist requests per second.

    .venv/bin/python bench/hls.py [--seconds 10] [--clients 16] [--minutes 10]

A ``--minutes`` long 128 kb/s MP3 (made by ffmpeg) is uploaded and finalized; then
``--clients`` keep-alive HTTP clients (httpx, in this process) fetch segments round-robin
for ``--seconds``, then the playlist. Prints requests per second and the server's CPU
seconds per 1,000 segment requests (from /proc): what 1,000 HLS listeners fetching one
segment every 4 s cost the origin without a cache in front. Compare ratios, not absolute
figures, on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from server_ingest import start, stop

from mmstream.client import connect


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _hammer(urls: list[str], clients: int, seconds: float) -> int:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(first: int) -> None:
        nonlocal done
        async with httpx.AsyncClient() as http:
            at = first
            while time.perf_counter() < deadline:
                answer = await http.get(urls[at % len(urls)])
                assert answer.status_code == 200, answer.text
                done += 1
                at += 1

    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(client, i)
    return done


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--minutes", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "a.mp3"
        await trio.run_process(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                        f"sine=frequency=440:duration={args.minutes * 60}", "-c:a",
                        "libmp3lame", "-b:a", "128k", str(audio)], check=True)  # fmt: skip
        command = [sys.executable, "-m", "mmstream", "serve", "--port", "0",
                   "--cache-dir", str(Path(tmp) / "cache"), "--log-level", "INFO"]  # fmt: skip
        process, port = await start(command)
        try:
            async with connect(f"ws://127.0.0.1:{port}") as uploader:
                await uploader.create("show", content_type="audio/mpeg")
                await uploader.append("show", audio.read_bytes())
                await uploader.finalize("show")
            base = f"http://127.0.0.1:{port}/streams/show"
            async with httpx.AsyncClient() as http:
                playlist = (await http.get(f"{base}/index.m3u8")).text
            segments = [f"{base}/{line}" for line in playlist.splitlines() if line[:1] not in "#"]
            for name, urls in (("segment", segments), ("playlist", [f"{base}/index.m3u8"])):
                cpu = _cpu_seconds(process.pid)
                count = await _hammer(urls, args.clients, args.seconds)
                used = _cpu_seconds(process.pid) - cpu
                print(f"{name} requests: {count / args.seconds:,.0f}/s from one worker "
                      f"({len(segments)} segments, {args.clients} clients); server CPU "
                      f"{used / count * 1000:.2f} s per 1,000")  # fmt: skip
        finally:
            await stop(process)


if __name__ == "__main__":
    trio.run(main)
