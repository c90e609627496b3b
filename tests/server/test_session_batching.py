"""The applier takes every upload frame already queued and appends them with one manager
call: the stream and the order of replies must be exactly what
frame-by-frame appending gives, and acks never more than ``ack_bytes`` apart."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import attrs
import trio
from server_helpers import burst_connect, make_config, v1_connect

from mmstream.config import ByteSize, CacheConfig
from mmstream.protocol import Append, Create, Read, Stat, Sync, encode_request
from mmstream.server import RunningServer, serve

FRAME = 1000


async def _until(v1: Any, request_id: str) -> list[dict[str, Any]]:
    """Every text message up to and including the reply to ``request_id``."""
    seen = []
    while True:
        message = await v1.ws.receive_json()
        seen.append(message)
        if message.get("re") == request_id:
            return seen


async def test_pipelined_frames_keep_order_acks_and_bytes(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    config = make_config(tmp_path / "cache", transport, ack_bytes=10 * FRAME, ack_interval=60.0)
    server: RunningServer = await nursery.start(serve, config)
    data = os.urandom(300 * FRAME)
    burst: list[str | bytes] = [encode_request(Append(id="a", offset=0))]
    for index in range(300):
        burst.append(data[index * FRAME : (index + 1) * FRAME])
        if index % 50 == 49:
            burst.append(encode_request(Stat(id=f"stat{index}")))
    burst.append(encode_request(Sync(id="sync")))
    async with burst_connect(f"{server.url}/v1/streams/b") as client:
        await client.send_all_at_once([encode_request(Create())])
        assert (await client.receive_json())["ok"]
        await client.send_all_at_once(burst)  # one write: the server finds batches queued
        messages = []
        while not messages or messages[-1].get("re") != "sync":
            messages.append(await client.receive_json())
    acks = [0] + [m["offset"] for m in messages if m.get("op") == "ack"]
    # Never more than ack_bytes unacknowledged while frames keep coming, batch or no batch;
    # an ack covers whole frames.
    assert all(0 < b - a <= 10 * FRAME for a, b in itertools.pairwise(acks)), acks
    assert all(offset % FRAME == 0 for offset in acks), acks
    stats = {m["re"]: m["stat"]["size"] for m in messages if str(m.get("re")).startswith("stat")}
    assert stats == {f"stat{i}": (i + 1) * FRAME for i in range(49, 300, 50)}
    assert [m for m in messages if m.get("op") == "error"] == []
    # Batches, not frames, reached the manager: one write (one observation) per batch, and
    # a batch ends at each ack (every 10 frames) and at each stat.
    assert server.metrics is not None
    assert 30 <= sum(server.metrics.write_seconds.counts) <= 60
    async with v1_connect(f"{server.url}/v1/streams/b", transport) as v1:
        reply = await v1.call(Read(id="r", offset=0))
        assert reply["length"] == len(data)
        assert await v1.receive_bytes(len(data)) == data


async def test_a_batch_that_meets_the_quota_acks_what_fits_then_reports(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    config = make_config(tmp_path / "cache", transport, ack_interval=60.0)
    config = attrs.evolve(
        config,
        cache=CacheConfig(
            directory=tmp_path / "cache",
            initial_size=ByteSize(16 * 1024),
            max_cache_size=ByteSize(64 * 1024),
            on_full="reject",
        ),
    )
    server: RunningServer = await nursery.start(serve, config)
    frame = 8 * 1024
    data = os.urandom(12 * frame)  # 96 KiB: more than the quota
    async with v1_connect(f"{server.url}/v1/streams/q", transport) as v1:
        await v1.call(Create())
        await v1.send(Append(id="a", offset=0))
        for start in range(0, len(data), frame):
            await v1.ws.send(data[start : start + frame])
        await v1.send(Stat(id="stat"))
        messages = await _until(v1, "stat")
        errors = [m for m in messages if m.get("op") == "error"]
        assert [e["error"]["code"] for e in errors] == ["quota"]  # once; later frames are unbound
        acks = [m["offset"] for m in messages if m.get("op") == "ack"]
        size = messages[-1]["stat"]["size"]
        assert acks and acks[-1] == size  # acknowledged before the error, up to what fits
        assert messages.index(errors[0]) > max(
            i for i, m in enumerate(messages) if m.get("op") == "ack"
        )
        assert 0 < size < len(data) and size % frame == 0
        reply = await v1.call(Read(id="r", offset=0))
        assert reply["length"] == size
        assert await v1.receive_bytes(size) == data[:size]
