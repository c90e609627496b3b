"""Protocol v1 end to end against a real server on a loopback port, on both transports."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from pathlib import Path

import pytest
import trio
from server_helpers import burst_connect, http_client, make_config, v1_connect, ws_connect

from mmstream.protocol import (
    Append,
    Create,
    Delete,
    Finalize,
    Hello,
    List,
    Read,
    Stat,
    Sync,
    Tail,
    encode_request,
)
from mmstream.server import RunningServer, serve

CHUNK = 64 * 1024


async def test_healthz_on_the_websocket_port_with_keep_alive(server: RunningServer) -> None:
    async with http_client(server.port) as client:
        reply = await client.request("GET", "/healthz")
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/json"
        body = reply.json()
        assert body["status"] == "ok"
        assert body["streams"] == 0
        assert body["version"]
        async with v1_connect(f"{server.url}/v1/streams/s1") as v1:
            assert (await v1.call(Create(id=1)))["ok"]
        again = await client.request("GET", "/healthz")
        assert again.json()["streams"] == 1
        assert (await client.request("GET", "/nothing")).status == 404
        assert (await client.request("DELETE", "/healthz")).status == 405


async def test_upload_read_finalize_list_delete(server: RunningServer) -> None:
    data = os.urandom(3 * CHUNK + 123)
    async with v1_connect(f"{server.url}/v1/streams/show-1") as v1:
        hello = await v1.call(Hello(id="h"))
        assert hello["ok"] and hello["protocol"] == "mmstream.v1"
        created = await v1.call(Create(id=1, content_type="audio/wav", metadata={"t": "x"}))
        assert created == {"re": 1, "ok": True, "stat": created["stat"]}
        assert created["stat"]["status"] == "uploading"
        assert created["stat"]["metadata"] == {"t": "x"}

        reply = await v1.upload(data, request_id=2)
        assert reply == {"re": 2, "ok": True, "stream": "show-1", "offset": 0}

        synced = await v1.call(Sync(id=3))
        assert synced["stat"]["size"] == synced["stat"]["durable_offset"] == len(data)

        read = await v1.call(Read(id=4, offset=1000, length=100_000))
        assert read == {"re": 4, "ok": True, "stream": "show-1", "offset": 1000, "length": 100_000}
        assert await v1.receive_bytes(100_000) == data[1000:101_000]

        digest = hashlib.sha256(data).hexdigest()
        final = await v1.call(Finalize(id=5, size=len(data), sha256=digest))
        assert final["ok"], final
        assert final["stat"]["status"] == "ready"
        assert final["stat"]["sha256"] == digest

        stat = await v1.call(Stat(id=6))
        assert stat["stat"]["size"] == len(data)
        listed = await v1.call(List(id=7))
        assert [s["stream"] for s in listed["streams"]] == ["show-1"]
        assert await v1.call(Delete(id=8)) == {"re": 8, "ok": True}
        gone = await v1.call(Stat(id=9))
        assert gone["error"]["code"] == "not-found"


async def test_create_with_a_size_hint_reserves_that_much(server: RunningServer) -> None:
    async with v1_connect(f"{server.url}/v1") as v1:
        reply = await v1.call(Create(id=1, stream="clip", size_hint=16 * 1024))
        assert reply["stat"]["reserved"] == 16 * 1024
        reply = await v1.call(Create(id=2, stream="show"))
        assert reply["stat"]["reserved"] == 1 << 20  # the configured initial_size
        await v1.ws.send_json({"op": "create", "id": 3, "stream": "bad", "size_hint": -5})
        reply = await v1.ws.receive_json()
        assert reply["error"]["code"] == "bad-request", reply


async def test_large_read_comes_in_frames_of_at_most_max_message_size(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    config = make_config(tmp_path / "cache", transport, max_message_size=CHUNK)
    server: RunningServer = await nursery.start(serve, config)
    data = os.urandom(3 * CHUNK + 5)
    async with v1_connect(f"{server.url}/v1/streams/big") as v1:
        await v1.call(Create())
        await v1.upload(data)
        reply = await v1.call(Read(offset=0))
        assert reply["length"] == len(data)
        frames = [await v1.ws.receive() for _ in range(4)]
        assert [len(f) for f in frames] == [CHUNK, CHUNK, CHUNK, 5]
        assert b"".join(frames) == data  # type: ignore[arg-type]


async def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    data = os.urandom(10_000)
    async with v1_connect(f"{server.url}/v1") as v1:
        await v1.send(Create(id=1, stream="p"))
        await v1.send(Append(id=2, stream="p"))
        await v1.ws.send(data)
        await v1.send(Finalize(id=3, stream="p", size=len(data)))
        await v1.send(Stat(id=4, stream="p"))
        replies = [await v1.ws.receive_json() for _ in range(4)]
        replies = [r for r in replies if "re" in r]
        while len(replies) < 4:
            message = await v1.ws.receive_json()
            if "re" in message:
                replies.append(message)
        assert [r["re"] for r in replies] == [1, 2, 3, 4]
        assert all(r["ok"] for r in replies), replies
        assert replies[3]["stat"]["status"] == "ready"


async def test_follower_receives_live_bytes_then_end(server: RunningServer) -> None:
    url = f"{server.url}/v1/streams/live"
    pieces = [os.urandom(n) for n in (1000, CHUNK, 7, 30_000)]
    data = b"".join(pieces)
    async with v1_connect(url) as uploader, v1_connect(url, "trio-websocket") as follower:
        await uploader.call(Create(id=1))
        assert await follower.call(Tail(id="t", offset=0)) == {
            "re": "t",
            "ok": True,
            "stream": "live",
            "offset": 0,
            "header": 0,
        }
        assert (await uploader.call(Append(id=2, offset=0)))["ok"]
        received = b""
        for piece in pieces:
            await uploader.ws.send(piece)
            received += await follower.receive_bytes(len(piece))
        assert received == data
        digest = hashlib.sha256(data).hexdigest()
        await uploader.send(Finalize(id=3, sha256=digest))
        end = await follower.ws.receive_json()
        assert end == {
            "op": "end",
            "stream": "live",
            "size": len(data),
            "status": "ready",
            "sha256": digest,
        }
        # A new tail from the middle of a ready stream: the rest, then end at once.
        assert (await follower.call(Tail(id=4, offset=len(data) - 7)))["ok"]
        assert await follower.receive_bytes(7) == data[-7:]
        assert (await follower.ws.receive_json())["op"] == "end"


async def test_deleting_a_followed_stream_ends_the_tail(server: RunningServer) -> None:
    async with v1_connect(f"{server.url}/v1") as v1, v1_connect(f"{server.url}/v1") as other:
        await v1.call(Create(stream="d"))
        assert (await v1.call(Tail(stream="d")))["ok"]
        assert (await other.call(Delete(stream="d")))["ok"]
        assert await v1.ws.receive_json() == {
            "op": "end",
            "stream": "d",
            "size": 0,
            "status": "deleted",
            "sha256": None,
        }


async def test_errors_are_replies_and_the_connection_carries_on(server: RunningServer) -> None:
    async with v1_connect(f"{server.url}/v1") as v1:
        await v1.ws.send("{not json")
        reply = await v1.ws.receive_json()
        assert reply["re"] is None and reply["error"]["code"] == "bad-request"
        await v1.ws.send('{"op": "fly", "id": 5}')
        assert (await v1.ws.receive_json())["error"]["code"] == "bad-request"
        await v1.ws.send('{"op": "read", "id": 6, "stream": "a", "offset": -1}')
        assert (await v1.ws.receive_json())["error"]["code"] == "bad-request"
        assert (await v1.call(Stat(id=7)))["error"]["code"] == "bad-request"  # no stream on /v1
        assert (await v1.call(Stat(id=8, stream="../etc")))["error"]["code"] == "invalid-id"
        assert (await v1.call(Stat(id=9, stream="nope")))["error"]["code"] == "not-found"
        await v1.call(Create(stream="e"))
        assert (await v1.call(Create(id=10, stream="e")))["error"]["code"] == "exists"
        conflict = await v1.call(Append(id=11, stream="e", offset=5))
        assert conflict["error"]["code"] == "offset-conflict"
        assert conflict["error"]["offset"] == 0
        assert (await v1.call(Read(id=12, stream="e", offset=1)))["error"]["code"] == "out-of-range"
        mismatch = await v1.call(Finalize(id=13, stream="e", sha256="0" * 64))
        assert mismatch["error"]["code"] == "checksum-mismatch"
        assert (await v1.call(Finalize(id=14, stream="e")))["ok"]
        assert (await v1.call(Finalize(id=15, stream="e")))["error"]["code"] == "not-uploading"
        assert (await v1.call(Append(id=16, stream="e")))["error"]["code"] == "not-uploading"
        second = await v1.call(Tail(id=17, stream="e", offset=0))
        assert second["ok"]
        assert (await v1.ws.receive_json())["op"] == "end"
        stat = await v1.call(Stat(id=18, stream="e"))
        assert stat["ok"] and stat["stat"]["status"] == "ready"


async def test_bound_endpoint_refuses_other_streams(server: RunningServer) -> None:
    async with v1_connect(f"{server.url}/v1/streams/mine") as v1:
        assert (await v1.call(Stat(id=1, stream="theirs")))["error"]["code"] == "bad-request"
        assert (await v1.call(Stat(id=2)))["error"]["code"] == "not-found"


async def test_second_tail_is_a_bad_request(server: RunningServer) -> None:
    async with v1_connect(f"{server.url}/v1/streams/t2") as v1:
        await v1.call(Create())
        assert (await v1.call(Tail(id=1)))["ok"]
        assert (await v1.call(Tail(id=2)))["error"]["code"] == "bad-request"


async def test_binary_frames_without_an_upload_get_one_error(server: RunningServer) -> None:
    async with v1_connect(f"{server.url}/v1/streams/u") as v1:
        await v1.ws.send(b"stray")
        await v1.ws.send(b"stray again")
        event = await v1.ws.receive_json()
        assert event["op"] == "error" and event["error"]["code"] == "bad-request"
        assert (await v1.call(Stat(id=1)))["error"]["code"] == "not-found"  # nothing else came


async def test_oversized_message_closes_1009_others_unaffected(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    config = make_config(tmp_path / "cache", transport, max_message_size=CHUNK)
    server: RunningServer = await nursery.start(serve, config)
    async with (
        v1_connect(f"{server.url}/v1/streams/o") as good,
        ws_connect(f"{server.url}/v1") as bad,
    ):
        await good.call(Create())
        await bad.send(b"x" * (CHUNK + 1))
        assert await bad.close_code() == 1009
        assert (await good.call(Stat(id=1)))["ok"]


async def test_vanished_uploader_leaves_a_resumable_stream(server: RunningServer) -> None:
    data = os.urandom(5 * CHUNK)
    url = f"{server.url}/v1/streams/r"
    async with v1_connect(url) as first:
        await first.call(Create())
        await first.upload(data[: 3 * CHUNK])
        await trio.aclose_forcefully(first.ws.ws.stream)  # the client vanishes, no close frame
    async with v1_connect(url) as second:
        stat = (await second.call(Stat()))["stat"]
        assert stat["status"] == "uploading"
        conflict = await second.call(Append(id=1, offset=0))
        resume = conflict["error"]["offset"]
        assert resume == 3 * CHUNK
        assert (await second.call(Append(id=2, offset=resume)))["ok"]
        await second.ws.send(data[resume:])
        final = await second.call(Finalize(id=3, sha256=hashlib.sha256(data).hexdigest()))
        while "re" not in final:  # an ack may come first
            final = await second.ws.receive_json()
        assert final["ok"], final


async def test_idle_connections_close_but_followers_stay(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    config = make_config(tmp_path / "cache", transport, idle_timeout=0.3)
    server: RunningServer = await nursery.start(serve, config)
    async with (
        v1_connect(f"{server.url}/v1/streams/i") as idle,
        v1_connect(f"{server.url}/v1/streams/i") as follower,
    ):
        await idle.call(Create())
        assert (await follower.call(Tail()))["ok"]
        with trio.fail_after(5):
            assert await idle.ws.close_code() == 1000
        async with v1_connect(f"{server.url}/v1/streams/i") as writer:
            assert (await writer.call(Append(id=1)))["ok"]
            await writer.ws.send(b"late bytes")
            assert await follower.receive_bytes(10) == b"late bytes"


async def test_graceful_shutdown_applies_queued_frames_and_a_restart_finds_them(
    tmp_path: Path, transport: str
) -> None:
    config = make_config(tmp_path / "cache", transport)
    data = os.urandom(4 * CHUNK)
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(serve, config)
        async with v1_connect(f"{server.url}/v1/streams/g") as v1:
            await v1.call(Create())
            await v1.send(Append(offset=0))
            for start in range(0, len(data), CHUNK):
                await v1.ws.send(data[start : start + CHUNK])
            await v1.send(Sync(id="s"))
            while (await v1.ws.receive_json()).get("re") != "s":
                pass
            server.shutdown()
            assert await v1.ws.close_code() == 1001
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, config)
        async with v1_connect(f"{server.url}/v1/streams/g") as v1:
            stat = (await v1.call(Stat()))["stat"]
            assert stat["status"] == "uploading"
            assert stat["size"] == stat["durable_offset"] == len(data)
            assert (await v1.call(Read(offset=0)))["length"] == len(data)
            assert await v1.receive_bytes(len(data)) == data
        nursery.cancel_scope.cancel()


async def test_acks_are_coalesced_every_ack_bytes(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    """While frames keep arriving (here seven written at once), an ack every ``ack_bytes``;
    the rest when the burst is applied, without waiting for the (minute-long) interval."""
    config = make_config(tmp_path / "cache", transport, ack_bytes=2 * CHUNK, ack_interval=60.0)
    server: RunningServer = await nursery.start(serve, config)
    async with v1_connect(f"{server.url}/v1/streams/a") as v1:
        hello = await v1.call(Hello())
        assert hello["ack_bytes"] == 2 * CHUNK and hello["ack_interval"] == 60.0
    async with burst_connect(f"{server.url}/v1/streams/a") as client:
        await client.send_all_at_once([encode_request(Create()), encode_request(Append(id=1))])
        assert (await client.receive_json())["ok"]
        assert (await client.receive_json())["re"] == 1
        await client.send_all_at_once([bytes(CHUNK)] * 7)
        offsets = [0]
        with trio.fail_after(10):
            while offsets[-1] < 7 * CHUNK:
                event = await client.receive_json()
                assert event["op"] == "ack", event
                offsets.append(event["offset"])
        steps = [b - a for a, b in itertools.pairwise(offsets)]
        assert all(0 < step <= 2 * CHUNK for step in steps), offsets
        assert offsets[-1] == 7 * CHUNK


def kernel_socket_buffers() -> int:
    """The most the kernel may hold between a client's send and the server's read on one
    connection: the largest send buffer and the largest receive buffer it autotunes to."""
    return sum(
        int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
        for name in ("tcp_rmem", "tcp_wmem")
    )


async def test_a_blocked_connection_stops_reading_its_client(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    """Backpressure: while the applier is stuck (here sending a read the client does not
    take), the bounded queue fills, the server stops reading and the client's sends stall,
    instead of the server buffering whatever the client sends. What the client gets to send
    is bounded by the server's ``connection_buffer`` plus the kernel's socket buffers (a
    receive buffer autotunes up to ``tcp_rmem``'s maximum, 32 MiB on some machines)."""
    buffer = 1 << 20
    config = make_config(
        tmp_path / "cache", transport, max_message_size=CHUNK, connection_buffer=buffer
    )
    server: RunningServer = await nursery.start(serve, config)
    stored = os.urandom(16 << 20)
    allowed = buffer + kernel_socket_buffers() + 2 * CHUNK
    pushed_data = os.urandom((allowed + (8 << 20)) // CHUNK * CHUNK)
    # trio-websocket as the client: websockets' own reader waits for the send lock after
    # each read, so a websockets client blocked in send could not read its way out.
    async with v1_connect(f"{server.url}/v1/streams/bp", "trio-websocket") as v1:
        await v1.call(Create())
        await v1.upload(stored)
        await v1.send(Read(id="r", offset=0))  # 16 MiB the client will not read for now
        pushed = 0
        stalled = trio.Event()

        async def push() -> None:
            nonlocal pushed
            for start in range(0, len(pushed_data), CHUNK):
                await v1.ws.send(pushed_data[start : start + CHUNK])
                pushed += CHUNK

        async def watch() -> None:
            while True:
                before = pushed
                await trio.sleep(0.3)
                if pushed == before:
                    stalled.set()
                    return

        async with trio.open_nursery() as inner:
            inner.start_soon(push)
            inner.start_soon(watch)
            with trio.fail_after(20):
                await stalled.wait()
            assert pushed <= allowed, f"{pushed >> 20} MiB accepted while blocked"
            # Unblock: take the read, then everything flows again.
            assert (await v1.ws.receive_json())["re"] == "r"
            assert await v1.receive_bytes(len(stored)) == stored
        await v1.acks_until(len(stored) + len(pushed_data))
        read = await v1.call(Read(offset=len(stored)))
        assert read["length"] == len(pushed_data)
        assert await v1.receive_bytes(len(pushed_data)) == pushed_data


async def test_a_closing_connection_logs_no_error(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that says hello and leaves ends its connection quietly on both transports
    (trio-websocket's reader asked the closed socket again and logged a ValueError traceback)."""
    caplog.set_level(logging.WARNING, logger="mmstream")
    for n in range(3):
        async with v1_connect(f"{server.url}/v1/streams/quiet-{n}") as v1:
            assert (await v1.call(Hello(id="h")))["ok"]
    await trio.sleep(0.2)  # the server's side of each close
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
