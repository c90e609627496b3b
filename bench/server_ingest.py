"""Upload throughput through a real ``mmstream serve`` subprocess, per transport.

    .venv/bin/python bench/server_ingest.py [--mib 256] [--chunk-kib 64] [--runs 3]

The client (``websockets.trio``, in this process) keeps an 8 MiB window of unacknowledged
bytes, as ``mmstream.client`` does; the server runs in its own process with the mmap backend
on a temporary cache directory. Also runs a bare ``websockets.trio`` receive-and-discard
server with the same client, the ceiling for this machine at this moment: compare ratios,
not absolute figures, on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from websockets.trio.client import connect

WINDOW = 8 << 20
BARE_SERVER = """
import sys, trio
from websockets.trio.server import serve
async def handler(ws):
    async for message in ws:
        if isinstance(message, str):
            await ws.send('{"op":"ack","offset":-1}')
async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve(handler, 0, host="127.0.0.1",
            compression=None, max_size=2**26, task_status=task_status))
        port = server.listeners[0].socket.getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}", file=sys.stderr, flush=True)
trio.run(main)
"""


async def start(command: list[str]) -> tuple[trio.Process, int]:
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    assert process.stderr is not None
    log = b""
    while (found := re.search(rb"listening on ws://127\.0\.0\.1:(\d+)", log)) is None:
        chunk = await process.stderr.receive_some(4096)
        if not chunk:
            raise RuntimeError(f"server did not start:\n{log.decode()}")
        log += chunk
    return process, int(found.group(1))


async def stop(process: trio.Process) -> None:
    """SIGINT (a graceful shutdown), then SIGKILL after 10 s."""
    process.send_signal(2)
    with trio.move_on_after(10):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


async def upload(url: str, total: int, chunk: bytes, *, protocol: bool) -> float:
    async with connect(url, compression=None, max_size=2**26) as ws:
        if protocol:
            await ws.send(json.dumps({"op": "create", "id": 1}))
            await ws.recv()
            await ws.send(json.dumps({"op": "append", "id": 2, "offset": 0}))
        acked, sent = 0, 0
        moved = trio.Event()

        async def read_acks() -> None:
            nonlocal acked, moved
            while acked < total:
                message = json.loads(await ws.recv())
                if message.get("op") == "ack":
                    acked = message["offset"]
                    moved.set()
                    moved = trio.Event()

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            if protocol:
                nursery.start_soon(read_acks)
            while sent < total:
                while protocol and sent - acked > WINDOW:
                    await moved.wait()
                await ws.send(chunk)
                sent += len(chunk)
            if not protocol:
                await ws.send("done")
                await ws.recv()
        return total / (time.perf_counter() - started) / 1e6


async def run_once(transport: str, total: int, chunk: bytes) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mmstream.toml"
        config.write_text(
            f'[server]\ntransport = "{transport}"\n[cache]\ninitial_size = "{total}"\n'
        )
        if transport == "bare":
            process, port = await start([sys.executable, "-c", BARE_SERVER])
            url = f"ws://127.0.0.1:{port}/"
        else:
            command = [sys.executable, "-m", "mmstream", "serve", "--config", str(config),
                       "--port", "0", "--cache-dir", str(Path(tmp) / "cache"),
                       "--log-level", "INFO"]  # fmt: skip
            process, port = await start(command)
            url = f"ws://127.0.0.1:{port}/v1/streams/bench"
        try:
            return await upload(url, total, chunk, protocol=transport != "bare")
        finally:
            await stop(process)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--chunk-kib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    total, chunk = args.mib << 20, os.urandom(args.chunk_kib << 10)
    for transport in ("websockets", "trio-websocket", "bare"):
        rates = [await run_once(transport, total, chunk) for _ in range(args.runs)]
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(f"{transport:15} median {statistics.median(rates):5.0f} MB/s  (runs: {runs})")


if __name__ == "__main__":
    trio.run(main)
