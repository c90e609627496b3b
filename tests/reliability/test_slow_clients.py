"""Test 9, slow and idle clients: hundreds of sockets that open and say nothing, trickle a
request head byte by byte (slowloris), or upgrade and then fall silent, are all closed at
their deadline while a normal client connects and works; at the per-address cap the
address's longest-idle connection makes room; an oversized message is closed with 1009."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from soak import rounds
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import connect as ws_connect

from mmstream.client import connect
from mmstream.config import ByteSize, CacheConfig, Config, ServerConfig
from mmstream.server import RunningServer, serve

DEADLINE = 1.0


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> RunningServer:
    config = Config(
        cache=CacheConfig(directory=tmp_path / "cache", initial_size=ByteSize(64 * 1024)),
        server=ServerConfig(
            port=0, handshake_timeout=DEADLINE, idle_timeout=DEADLINE,
            max_connections=2000, max_connections_per_ip=60, max_message_size=ByteSize(64 * 1024),
        ),
    )  # fmt: skip
    running: RunningServer = await nursery.start(serve, config)
    return running


async def open_from(address: str, port: int) -> trio.SocketStream:
    """A TCP connection from the loopback address ``address`` (127.0.0.x): one IP each."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((address, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def wait_closed(stream: trio.SocketStream, opened: float, closed_at: list[float]) -> None:
    """Read (and drop) until the server closes; record when, relative to ``opened``."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass
    closed_at.append(trio.current_time() - opened)
    await stream.aclose()


async def test_idle_and_slowloris_sockets_are_closed_at_the_deadline(
    server: RunningServer, figure: Callable[[str, str, str], None]
) -> None:
    count = rounds(500, 2000)
    port = server.port
    closed_at: list[float] = []
    latencies: list[float] = []
    kinds = {"silent": 0, "slowloris": 0, "idle websocket": 0}

    async def silent(stream: trio.SocketStream, opened: float) -> None:
        await wait_closed(stream, opened, closed_at)

    async def slowloris(stream: trio.SocketStream, opened: float) -> None:
        async def trickle() -> None:
            head = b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Pad: "
            try:
                await stream.send_all(head)
                while True:
                    await trio.sleep(0.1)
                    await stream.send_all(b"a")  # a byte at a time, never the blank line
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            await wait_closed(stream, opened, closed_at)
            nursery.cancel_scope.cancel()

    async def idle_websocket(address: str) -> None:
        opened = trio.current_time()
        stream = await open_from(address, port)
        url = f"ws://127.0.0.1:{port}/v1"
        async with ws_connect(url, stream=stream, compression=None, ping_interval=None) as ws:
            await ws.send(json.dumps({"op": "hello", "id": 1}))
            await ws.recv()
            with pytest.raises(ConnectionClosed):  # then silent: closed at the idle timeout
                await ws.recv()
        closed_at.append(trio.current_time() - opened)

    async def normal_client() -> None:
        started = trio.current_time()
        async with connect(server.url) as client:
            await client.create(f"normal-{len(latencies)}")
            latencies.append(trio.current_time() - started)
            await client.append(f"normal-{len(latencies) - 1}", b"still served")

    async with trio.open_nursery() as nursery:
        for n in range(count):
            address = f"127.0.{1 + n // 50}.{1 + n % 50}"  # 50 addresses per /24, under the cap
            kind = ("silent", "slowloris", "idle websocket")[n % 3]
            kinds[kind] += 1
            if kind == "idle websocket":
                nursery.start_soon(idle_websocket, address)
                continue
            opened = trio.current_time()
            stream = await open_from(address, port)
            nursery.start_soon(silent if kind == "silent" else slowloris, stream, opened)
        await trio.sleep(0.2)  # every socket is open and waiting
        for _ in range(5):
            await normal_client()
    assert len(closed_at) == count
    # Closed at the deadline (and not long after); the normal client never waited long.
    assert min(closed_at) >= DEADLINE * 0.9
    assert max(closed_at) < DEADLINE + 5
    assert max(latencies) < 5  # a sanity bound; the figure below is what was measured
    shown = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    figure(
        "9. Slow clients",
        f"{count} sockets at once ({shown}; 1 s handshake and idle deadlines), then a "
        "normal client connecting, creating and appending, 5 times",
        f"all {count} closed by the server {min(closed_at):.2f}-{max(closed_at):.2f} s after "
        f"opening; normal client connected and created in {max(latencies) * 1000:.0f} ms "
        "at worst",
    )


async def test_caps_and_oversized_messages(
    server: RunningServer, figure: Callable[[str, str, str], None]
) -> None:
    port = server.port
    url = f"ws://127.0.0.1:{port}/v1"
    held = [await open_from("127.0.99.1", port) for _ in range(60)]
    try:
        extra = await open_from("127.0.99.1", port)  # a 61st from the same address
        async with ws_connect(url, stream=extra, compression=None) as ws:
            await ws.send(json.dumps({"op": "hello", "id": 1}))
            await ws.recv()
        with trio.fail_after(5):  # the address's longest-idle socket made room for it
            assert await held[0].receive_some(100) == b""
        async with connect(server.url) as client:  # another address gets in as ever
            await client.create("other-address")
    finally:
        for stream in held:
            await stream.aclose()
    async with ws_connect(url, compression=None, max_size=None) as ws:
        await ws.send(b"x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1009
    figure(
        "9. Slow clients",
        "per-address cap 60: 60 silent sockets from one address, then a 61st (and a "
        "WebSocket from another address); a 64 KiB + 1 message with max_message_size 64 KiB",
        "the 61st served, the address's longest-idle socket closed to make room; the other "
        "address served; the oversized message closed with 1009",
    )
