"""Short clips (issue 19): how fast a 16 KiB upload becomes READY, and how many per second.

    .venv/bin/python -m bench.clips '<spec json>'     # what ``make bench`` runs (group "clips")

One process, against one running server (``port``), on the disk of ``dir``:

- ``ws``: through :mod:`mmstream.client`, ``Client.upload`` of the clip's bytes: ``create``
  (with the clip's size as ``size_hint``), ``append``, ``finalize`` with size and sha256,
  until the ``finalize`` reply (READY); one connection, clip after clip, then ``conns``
  connections at once.
- ``put``: the same clips through the Icecast ``PUT`` route with ``Content-Length`` (what
  ``curl -T`` sends), one connection per clip until the reply (READY); one thread, then
  ``conns`` threads.
- ``disk``: the disk's own limit, the work a durable clip cannot do without: write the clip
  to a new file, ``fsync`` it and its directory; one thread, then ``conns`` threads.

Latencies are per clip (milliseconds, from ``create`` sent to the ``finalize`` reply for
``ws``); rates are clips (or fsynced files) per second of wall time; each run also reports
the CPU share the server (``server_pid``) and this process used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import trio

from bench._procs import proc_cpu_seconds
from mmstream.client import Client, connect

HOST = "127.0.0.1"


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


# -- WebSocket, through the Python client ------------------------------------------------


async def _ws_clips(client: Client, names: list[str], data: bytes, latencies: list[float]) -> None:
    digest = hashlib.sha256(data).hexdigest()
    for name in names:
        started = time.perf_counter()
        stat = await client.upload(name, data)  # create, append, finalize with size and sha256
        latencies.append(time.perf_counter() - started)
        if stat.status != "ready" or stat.sha256 != digest:
            raise RuntimeError(f"clip {name} is {stat.status} ({stat.sha256}) after finalize")


async def _ws_run(clients: list[Client], prefix: str, per_conn: int, size: int) -> list[float]:
    """``per_conn`` clips on each of ``clients`` (connections opened beforehand: a
    WebSocket client keeps its connection), all at once."""
    data = os.urandom(size)
    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        for index, client in enumerate(clients):
            names = [f"{prefix}c{index}n{i}" for i in range(per_conn)]
            nursery.start_soon(_ws_clips, client, names, data, latencies)
    return latencies


# -- HTTP PUT, one connection per clip ---------------------------------------------------


def _put_clip(port: int, name: str, data: bytes) -> None:
    head = (
        f"PUT /streams/{name} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: audio/ogg\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection((HOST, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head + data)
        reply = _http_reply(sock)
    if not reply.startswith(b"HTTP/1.1 200") or b'"ready"' not in reply:
        raise RuntimeError(f"PUT of {name}: {reply[:200]!r}")


def _http_reply(sock: socket.socket) -> bytes:
    """A whole response: its head and ``content-length`` bytes of body (as curl waits)."""
    reply = b""
    while True:
        head, found, body = reply.partition(b"\r\n\r\n")
        if found:
            length = next((int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                           if line.startswith(b"content-length:")), 0)  # fmt: skip
            if len(body) >= length:
                return reply
        piece = sock.recv(65536)
        if not piece:
            return reply
        reply += piece


def _threads(count: int, work: Callable[[int], list[float]]) -> tuple[list[float], float]:
    """Run ``work(index)`` in ``count`` threads at once; every latency and the wall time."""
    results: list[list[float]] = [[] for _ in range(count)]
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise failures[0]
    return [latency for latencies in results for latency in latencies], wall


def _put_run(port: int, prefix: str, threads: int, per_thread: int, size: int) -> list[float]:
    data = os.urandom(size)

    def work(index: int) -> list[float]:
        latencies = []
        for i in range(per_thread):
            started = time.perf_counter()
            _put_clip(port, f"{prefix}t{index}n{i}", data)
            latencies.append(time.perf_counter() - started)
        return latencies

    return _threads(threads, work)[0]


# -- the disk alone ------------------------------------------------------------------------


def _durable_file(directory: Path, dir_fd: int, name: str, data: bytes) -> None:
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.fsync(dir_fd)


def _disk_run(directory: Path, prefix: str, threads: int, seconds: float, size: int) -> list[float]:
    data = os.urandom(size)
    directory.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:

        def work(index: int) -> list[float]:
            latencies = []
            deadline = time.perf_counter() + seconds
            i = 0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                _durable_file(directory, dir_fd, f"{prefix}t{index}n{i}", data)
                latencies.append(time.perf_counter() - started)
                i += 1
            return latencies

        return _threads(threads, work)[0]
    finally:
        os.close(dir_fd)
        for entry in directory.iterdir():
            entry.unlink()


@attrs.define
class _Tally:
    """One kind of run, measured in slices: every latency, and the wall and CPU seconds."""

    latencies: list[float] = attrs.Factory(list)
    wall: float = 0.0
    server_cpu: float = 0.0
    own_cpu: float = 0.0

    async def measure(self, server_pid: int, run: Callable[[], Awaitable[list[float]]]) -> None:
        server0, own0, wall0 = (
            proc_cpu_seconds(server_pid),
            time.process_time(),
            time.perf_counter(),
        )
        self.latencies += await run()
        self.wall += time.perf_counter() - wall0
        self.server_cpu += proc_cpu_seconds(server_pid) - server0
        self.own_cpu += time.process_time() - own0

    def figures(self, rate: str) -> dict[str, Any]:
        """Rates per second of wall time; CPU shares as fractions of a core (1.0: a core
        busy all along) for the server and this process."""
        return {rate: len(self.latencies) / self.wall, "count": len(self.latencies),
                **_percentiles(self.latencies), "srv_cpu": self.server_cpu / self.wall,
                "gen_cpu": self.own_cpu / self.wall}  # fmt: skip


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """The WebSocket and ``PUT`` runs take turns in ``slices`` slices (which goes first
    alternates), so a disk that other work slows down at times slows both alike. The
    WebSocket connections stay open throughout; each ``PUT`` opens its own, as curl does."""
    port, size, conns, prefix = spec["port"], spec["size"], spec["conns"], spec["prefix"]
    slices, pid = spec["slices"], spec["server_pid"]
    sequential = max(1, spec["sequential"] // slices)
    per_conn = max(1, spec["per_conn"] // slices)
    async with AsyncExitStack() as stack:
        url = f"ws://{HOST}:{port}"
        clients = [await stack.enter_async_context(connect(url)) for _ in range(conns)]
        clips: dict[str, Callable[[str], Awaitable[list[float]]]] = {
            "ws_seq": lambda at: _ws_run(clients[:1], at, sequential, size),
            "put_seq": lambda at: trio.to_thread.run_sync(_put_run, port, at, 1, sequential, size),
            "ws_conc": lambda at: _ws_run(clients, at, per_conn, size),
            "put_conc": lambda at: trio.to_thread.run_sync(_put_run, port, at, conns, per_conn, size),
        }  # fmt: skip
        tallies = {name: _Tally() for name in clips}
        for pair in (("ws_seq", "put_seq"), ("ws_conc", "put_conc")):
            for index in range(slices):
                for name in pair if index % 2 == 0 else pair[::-1]:
                    at = f"{prefix}{name.replace('_', '')}{index}"
                    await tallies[name].measure(pid, functools.partial(clips[name], at))
    out = {name: tally.figures("clips_s") for name, tally in tallies.items()}
    disk, seconds = Path(spec["dir"]), spec["disk_seconds"]
    for name, threads in (("disk_seq", 1), ("disk_conc", conns)):
        tally = _Tally()
        loop = functools.partial(_disk_run, disk, name, threads, seconds, size)
        await tally.measure(pid, functools.partial(trio.to_thread.run_sync, loop))
        out[name] = tally.figures("files_s")
    return out


def main() -> None:
    sys.stdout.write(json.dumps(trio.run(run, json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
