"""mmstream.client against a real server on a loopback port (both cache backends)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest
import trio
from client_support import StartServer
from websockets.trio.client import connect as ws_connect

from mmstream.client import connect
from mmstream.errors import (
    ChecksumMismatchError,
    ConnectionFailedError,
    InvalidStreamIdError,
    MmstreamError,
    NotUploadingError,
    OffsetConflictError,
    OutOfRangeError,
    ProtocolError,
    QuotaExceededError,
    StreamExistsError,
    StreamNotFoundError,
    TooLargeError,
)
from mmstream.server import RunningServer

MiB = 1 << 20


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_upload_then_range_reads(server: RunningServer) -> None:
    data = payload(6 * MiB + 12345)
    async with connect(server.url) as client:
        created = await client.create("s1", content_type="audio/wav", metadata={"k": "v"})
        assert (created.status, created.size, created.metadata) == ("uploading", 0, {"k": "v"})
        size = await client.append("s1", data, chunk_size=64 * 1024)
        assert size == len(data)
        stat = await client.finalize("s1", size=len(data), sha256=hashlib.sha256(data).hexdigest())
        assert (stat.status, stat.size, stat.durable_offset) == ("ready", len(data), len(data))
        assert stat.sha256 == hashlib.sha256(data).hexdigest()
        rng = random.Random(1)
        ranges = [(0, None), (len(data), 10), (len(data) - 1, 10), (0, 0), (5, 2**63 - 1)]
        ranges += [(rng.randrange(len(data)), rng.randrange(3 * MiB)) for _ in range(40)]
        for offset, length in ranges:
            end = len(data) if length is None else offset + length
            assert await client.read("s1", offset, length) == data[offset:end], (offset, length)
        with pytest.raises(OutOfRangeError):
            await client.read("s1", len(data) + 1, 1)


async def test_reads_are_pipelined_in_order(one_server: RunningServer) -> None:
    data = payload(3 * MiB)
    async with connect(one_server.url) as client:
        await client.create("p")
        await client.append("p", data)
        results: dict[int, bytes] = {}

        async def read(i: int) -> None:
            results[i] = await client.read("p", i * 1000, 700_000)

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(read, i)
            nursery.start_soon(client.stat, "p")
        assert all(results[i] == data[i * 1000 : i * 1000 + 700_000] for i in range(30))


async def test_bound_endpoint_needs_no_stream_argument(one_server: RunningServer) -> None:
    async with connect(one_server.url, stream="bound") as client:
        await client.create()
        await client.append(None, [b"abc", b"", b"def"])
        assert (await client.finalize()).size == 6
        assert await client.read(None, 2, 3) == b"cde"
    async with connect(one_server.url, stream="bound") as client:
        with pytest.raises(ProtocolError, match="not the stream this connection is bound to"):
            await client.stat("other")


async def test_follower_started_before_upload_gets_every_byte_then_end(
    server: RunningServer,
) -> None:
    data = payload(3 * MiB + 7, seed=2)
    async with connect(server.url) as uploader, connect(server.url) as player:
        await uploader.create("live")
        follower = await player.tail("live", 0)
        received = bytearray()

        async def follow() -> None:
            async for chunk in follower:
                received.extend(chunk)

        async def pieces() -> object:
            for start in range(0, len(data), 300_000):
                yield data[start : start + 300_000]
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await uploader.append("live", pieces())
            await uploader.finalize("live")
        assert bytes(received) == data
        assert follower.end is not None
        assert (follower.end.status, follower.end.size) == ("ready", len(data))
        assert follower.end.sha256 == hashlib.sha256(data).hexdigest()
        # The connection is free to follow again; a ready stream replays and ends at once.
        again = await player.tail("live", len(data) - 5)
        assert b"".join([chunk async for chunk in again]) == data[-5:]


async def test_tail_from_the_live_edge(one_server: RunningServer) -> None:
    async with connect(one_server.url) as uploader, connect(one_server.url) as player:
        await uploader.create("edge")
        await uploader.append("edge", b"old bytes")
        follower = await player.tail("edge", None)
        assert follower.offset == 9
        await uploader.append("edge", b"new bytes")
        await uploader.finalize("edge")
        assert b"".join([chunk async for chunk in follower]) == b"new bytes"


async def test_deleting_a_followed_stream_ends_the_follower(one_server: RunningServer) -> None:
    async with connect(one_server.url) as owner, connect(one_server.url) as player:
        await owner.create("gone")
        await owner.append("gone", b"x" * 10)
        follower = await player.tail("gone", 0)
        await owner.delete("gone")
        with pytest.raises(StreamNotFoundError):
            async for _ in follower:
                pass


async def test_a_hundred_concurrent_uploads(server: RunningServer) -> None:
    sources = {f"c{i}": payload(100_000 + i * 1000, seed=i) for i in range(100)}

    async def upload(stream: str, data: bytes) -> None:
        async with connect(server.url, stream=stream) as client:
            await client.upload(None, data, chunk_size=16 * 1024)

    async with trio.open_nursery() as nursery:
        for stream, data in sources.items():
            nursery.start_soon(upload, stream, data)
    async with connect(server.url) as client:
        listed = {s.stream: s for s in await client.list()}
        for stream, data in sources.items():
            assert listed[stream].status == "ready"
            assert listed[stream].sha256 == hashlib.sha256(data).hexdigest()
            assert await client.read(stream) == data


async def test_upload_resumes_from_the_servers_offset(
    server: RunningServer, tmp_path: Path
) -> None:
    data = payload(2 * MiB + 3, seed=5)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    async with connect(server.url) as first:
        await first.create("r")
        await first.append("r", data[:777_777])  # then the "connection drops"
    async with connect(server.url) as client:
        with source.open("rb") as file:
            with pytest.raises(StreamExistsError):
                await client.upload("r", file)
            stat = await client.upload("r", file, resume=True)
        assert (stat.status, stat.size) == ("ready", len(data))
        assert stat.sha256 == hashlib.sha256(data).hexdigest()
        # Resuming a complete stream with the same source is a no-op; another source is not.
        assert (await client.upload("r", data, resume=True)).sha256 == stat.sha256
        with pytest.raises(ChecksumMismatchError):
            await client.upload("r", data[:-1] + b"!", resume=True)


async def test_upload_window_waits_for_acks(start_server: StartServer) -> None:
    """With at most one unacknowledged chunk in flight, the upload advances ack by ack."""
    server = await start_server(ack_bytes=16 * 1024)
    data = payload(MiB, seed=9)
    sent: list[int] = []
    in_flight: list[int] = []
    async with connect(server.url, max_in_flight=1) as client:

        def progress(end: int) -> None:
            sent.append(end)
            in_flight.append(end - client._acked)  # white box: the window's invariant

        await client.create("w")
        size = await client.append("w", data, chunk_size=64 * 1024, progress=progress)
        assert size == len(data) and sent == list(range(64 * 1024, MiB + 1, 64 * 1024))
        assert max(in_flight) <= 64 * 1024
        assert await client.read("w") == data


async def test_offset_conflict_carries_the_real_size(one_server: RunningServer) -> None:
    async with connect(one_server.url) as client:
        await client.create("o")
        await client.append("o", b"12345")
        with pytest.raises(OffsetConflictError) as info:
            await client.append("o", b"more", offset=2)
        assert info.value.actual == 5 and info.value.code == "offset-conflict"
        assert await client.append("o", b"678", offset=info.value.actual) == 8


async def test_sync_makes_everything_durable(one_server: RunningServer) -> None:
    async with connect(one_server.url) as client:
        await client.create("d")
        await client.append("d", payload(MiB))
        stat = await client.sync("d")
        assert stat.durable_offset == stat.size == MiB


async def test_hello_reports_the_servers_limits(one_server: RunningServer) -> None:
    async with connect(one_server.url, token="ignored-without-access-control") as client:
        assert client.server_info is not None
        assert client.server_info.protocol == "mmstream.v1"
        assert client.server_info.max_message_size > 0


# -------------------------------------------------------------------- errors


async def test_error_codes_from_the_server(start_server: StartServer) -> None:
    """Each code of docs/protocol.md's table that this build can produce, as its class."""
    server = await start_server()
    seen: set[str] = set()

    async def expect(kind: type[MmstreamError], call: object) -> None:
        with pytest.raises(kind) as info:
            await call  # type: ignore[misc]
        seen.add(info.value.code)

    async with connect(server.url) as client:
        await client.create("e")
        await expect(StreamExistsError, client.create("e"))
        await expect(InvalidStreamIdError, client.stat("../etc/passwd"))
        await expect(InvalidStreamIdError, client.create("a" * 129))
        await expect(StreamNotFoundError, client.stat("missing"))
        await expect(StreamNotFoundError, client.delete("missing"))
        await expect(OffsetConflictError, client.append("e", b"x", offset=1))
        await client.append("e", b"abc")
        await expect(OutOfRangeError, client.read("e", 4, 1))
        await expect(OutOfRangeError, client.tail("e", 4))
        await expect(ChecksumMismatchError, client.finalize("e", size=4))
        await expect(ChecksumMismatchError, client.finalize("e", sha256="0" * 64))
        await client.finalize("e", size=3)
        await expect(NotUploadingError, client.append("e", b"x"))
        await expect(NotUploadingError, client.finalize("e"))
        await expect(ProtocolError, client.stat(None))  # no stream on the /v1 endpoint
        follower = await client.tail("e", 3)
        assert [chunk async for chunk in follower] == []

    async with connect(server.url) as client:
        await expect(TooLargeError, client.create("meta", metadata={"k": "v" * 1025}))
        await expect(TooLargeError, client.create("meta", metadata={str(i): "" for i in range(65)}))

    small = await start_server(max_cache_size=3 * MiB, on_full="reject")
    async with connect(small.url) as client:
        await client.create("q1")
        await expect(QuotaExceededError, client.append("q1", payload(4 * MiB)))
    assert seen >= {
        "exists", "invalid-id", "not-found", "offset-conflict", "out-of-range",
        "checksum-mismatch", "not-uploading", "bad-request", "quota", "too-large",
    }  # fmt: skip


async def test_an_upload_whose_write_fails_is_not_finalized(start_server: StartServer) -> None:
    """``upload`` sends ``finalize`` behind the data without waiting for acks: a write that
    fails on the way must still be the error raised, and leave the stream uploading."""
    server = await start_server(max_cache_size=3 * MiB, on_full="reject")
    async with connect(server.url) as client:
        with pytest.raises(QuotaExceededError):
            await client.upload("big", payload(4 * MiB))
        stat = await client.stat("big")
        assert stat.status == "uploading" and stat.size < 4 * MiB
        await client.delete("big")
        done = await client.upload("clip", payload(20_000))  # the connection still works
        assert (done.status, done.size) == ("ready", 20_000)


#: Codes in the table no test of this build can provoke, and why (see the report).
NOT_PRODUCIBLE_HERE = {
    "conflict": "reserved; nothing raises a bare ConflictError",
    "closed": "only during a shutdown race",
    "internal": "a server bug",
}


def test_every_documented_code_is_tested_or_explained() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    section = doc.split("## 7. Errors", 1)[1].split("## 8.", 1)[0]
    codes = set(re.findall(r"^\| `([a-z-]+)` \|", section, re.M))
    tested = {"exists", "invalid-id", "not-found", "offset-conflict", "out-of-range",
              "checksum-mismatch", "not-uploading", "bad-request", "quota",
              "no-space", "too-large",  # no-space: test_full_disk.py
              "io-error",  # tests/reliability/test_wire_io_error.py
              "unauthorized",  # tests/reliability/test_auth.py
              "busy",  # tests/server/test_one_writer.py
              "stream-changed"}  # fmt: skip  # tests/server/test_stream_identity.py
    assert codes == tested | set(NOT_PRODUCIBLE_HERE)


async def test_bad_frames_get_replies_and_the_connection_survives(
    one_server: RunningServer,
) -> None:
    hostile = [
        "{",
        "[]",
        '{"op":"nope","id":1}',
        '{"op":"read","id":2,"stream":"h","offset":-1}',
        '{"op":"read","id":3,"stream":"h","offset":' + str(2**63) + "}",
        '{"op":"read","id":4,"stream":"h","offset":' + str(2**64) + "}",
        '{"op":"read","id":5,"stream":"h","offset":' + str(-(2**63)) + "}",
        '{"op":"read","id":6,"stream":"h","offset":1.5}',
        '{"op":"read","id":7,"stream":"h","offset":true}',
        '{"op":"append","id":8,"stream":"h","offset":"0"}',
        '{"op":"stat","id":9,"stream":"h","surprise":1}',
    ]
    async with connect(one_server.url) as client:
        await client.create("h")
        await client.append("h", b"0123456789")
    async with ws_connect(one_server.url + "/v1", compression=None) as ws:
        for text in hostile:
            await ws.send(text)
            reply = json.loads(await ws.recv())
            assert reply["ok"] is False and reply["error"]["code"] == "bad-request", (text, reply)
        # Numbers at the edges that are legal: clamped, never a byte past the end.
        await ws.send(
            '{"op":"read","id":10,"stream":"h","offset":10,"length":' + str(2**63 - 1) + "}"
        )
        assert json.loads(await ws.recv())["length"] == 0
        await ws.send(
            '{"op":"read","id":11,"stream":"h","offset":8,"length":' + str(2**63 - 1) + "}"
        )
        assert json.loads(await ws.recv())["length"] == 2
        assert await ws.recv() == b"89"
        await ws.send('{"op":"read","id":12,"stream":"h","offset":11,"length":0}')
        assert json.loads(await ws.recv())["error"]["code"] == "out-of-range"
        await ws.send('{"op":"stat","id":13,"stream":"h"}')
        assert json.loads(await ws.recv())["stat"]["size"] == 10


async def test_connection_refused_is_a_clear_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionFailedError, match="connection refused"):
        async with connect(f"ws://127.0.0.1:{port}"):
            pass


async def test_server_errors_escape_the_context_manager_unwrapped(
    one_server: RunningServer,
) -> None:
    with pytest.raises(StreamNotFoundError):
        async with connect(one_server.url) as client:
            await client.stat("nothing-here")


async def test_a_client_refuses_a_second_tail(one_server: RunningServer) -> None:
    async with connect(one_server.url) as client:
        await client.create("t")
        await client.tail("t", 0)
        with pytest.raises(MmstreamError, match="already follows"):
            await client.tail("t", 0)
