"""Acknowledgements on a real server: by time while frames keep arriving, at once when an
upload goes quiet, written straight to the socket or, when the socket is busy, by the
session's task (the rule itself is tested without sockets: tests/protocol/test_session_core_acks.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio
from server_helpers import burst_connect, make_config, v1_connect

from mmstream.protocol import Append, Create, Read, encode_request
from mmstream.server import RunningServer, serve


async def test_slow_uploads_on_many_connections_are_all_acknowledged(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    config = make_config(tmp_path / "cache", transport, ack_interval=0.05)
    server: RunningServer = await nursery.start(serve, config)

    async def upload(name: str) -> None:
        async with v1_connect(f"{server.url}/v1/streams/{name}", transport) as v1:
            await v1.call(Create())
            assert (await v1.call(Append(id=1, offset=0)))["ok"]
            for count in range(1, 6):
                await v1.ws.send(os.urandom(1000))
                await v1.acks_until(count * 1000)  # by time alone: ack_bytes is 1 MiB

    with trio.fail_after(30):
        async with trio.open_nursery() as uploads:
            for index in range(20):
                uploads.start_soon(upload, f"s{index}")


async def test_acks_fall_due_while_a_read_fills_the_socket(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    """The clock cannot write an ack into a socket a read is filling: the session's own
    task sends it after the read, and every frame arrives whole and in order."""
    config = make_config(tmp_path / "cache", transport, ack_interval=0.01)
    server: RunningServer = await nursery.start(serve, config)
    stored = os.urandom(32 << 20)  # more than loopback socket buffers hold
    async with v1_connect(f"{server.url}/v1/streams/big", transport) as v1:
        await v1.call(Create())
        await v1.upload(stored)
    fresh = os.urandom(64 * 1000)
    async with v1_connect(f"{server.url}/v1", transport) as v1:
        assert (await v1.call(Create(id="other", stream="small")))["ok"]
        await v1.send(Append(id="append", stream="small", offset=0))
        for start in range(0, len(fresh), 1000):
            await v1.ws.send(fresh[start : start + 1000])
        await v1.send(Read(id="read", stream="big", offset=0))
        await trio.sleep(0.2)  # acks fall due while the read's frames wait in the socket
        received, acked, replies = bytearray(), 0, []
        while len(received) < len(stored) or acked < len(fresh):
            message = await v1.ws.receive()
            if isinstance(message, bytes):
                received += message
                continue
            event = json.loads(message)
            if event.get("op") == "ack":
                assert event["offset"] > acked
                acked = event["offset"]
            else:
                replies.append(event["re"])
        assert replies == ["append", "read"]
        assert received == stored and acked == len(fresh)


async def test_an_upload_that_goes_quiet_is_acknowledged_without_waiting_for_the_clock(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    """A clip: one frame, then silence. Its ack must not wait for the clock (here a minute
    away): the server acknowledges once no upload frame is left on its way."""
    config = make_config(tmp_path / "cache", transport, ack_interval=60)
    server: RunningServer = await nursery.start(serve, config)
    async with v1_connect(f"{server.url}/v1/streams/clip", transport) as v1:
        await v1.call(Create())
        assert (await v1.call(Append(id=1, offset=0)))["ok"]
        with trio.fail_after(10):
            for count in range(1, 4):  # again after each pause
                await v1.ws.send(os.urandom(16 * 1024))
                await v1.acks_until(count * 16 * 1024)


async def test_frames_that_keep_arriving_share_acks(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    """A burst of frames written at once is acknowledged when the burst is read and applied,
    not frame by frame."""
    config = make_config(tmp_path / "cache", transport, ack_interval=60)
    server: RunningServer = await nursery.start(serve, config)
    frames: list[str | bytes] = [os.urandom(1000) for _ in range(256)]
    async with burst_connect(f"{server.url}/v1/streams/burst") as client:
        await client.send_all_at_once([encode_request(Create()), encode_request(Append(id=1))])
        assert (await client.receive_json())["ok"]
        assert (await client.receive_json())["ok"]
        await client.send_all_at_once(frames)
        acks, last = 0, 0
        with trio.fail_after(10):
            while last < 256 * 1000:
                event = await client.receive_json()
                assert event["op"] == "ack", event
                acks, last = acks + 1, event["offset"]
    assert last == 256 * 1000
    assert acks <= 16, f"{acks} acks for 256 frames"
