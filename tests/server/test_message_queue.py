"""The session takes the messages a transport holds in batches (``receive_nowait``); what a
raw client writes in one go must still be applied exactly as ``recv()`` would hand it over:
fragmented messages whole, frames before a bad message applied, then the close code."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import struct
from pathlib import Path
from typing import cast

import trio
from server_helpers import make_config

from mmstream.server import RunningServer, serve

TEXT, BINARY, CONT, CLOSE = 0x1, 0x2, 0x0, 0x8


def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 5.2)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def text(obj: object) -> bytes:
    return client_frame(TEXT, json.dumps(obj).encode())


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, port: int, path: str) -> RawClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        client = cls(stream)
        head = await client._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return client

    async def _fill(self) -> None:
        data = await self.stream.receive_some()
        if not data:
            raise EOFError
        self.buffer += data

    async def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            await self._fill()
        end = self.buffer.index(marker) + len(marker)
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        return head

    async def _exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            await self._fill()
        out = bytes(self.buffer[:count])
        del self.buffer[:count]
        return out

    async def frame(self) -> tuple[int, bytes]:
        first, second = await self._exactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self._exactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self._exactly(8))
        return first & 0x0F, await self._exactly(size)

    async def messages_until_close(self) -> tuple[list[dict[str, object]], int | None]:
        """The text messages, then the close code the server sent (None: it just closed)."""
        seen: list[dict[str, object]] = []
        while True:
            try:
                opcode, payload = await self.frame()
            except EOFError:
                return seen, None
            if opcode == CLOSE:
                return seen, struct.unpack("!H", payload[:2])[0]
            if opcode == TEXT:
                seen.append(json.loads(payload))


async def _size(port: int, stream: str) -> int:
    client = await RawClient.connect(port, f"/v1/streams/{stream}")
    await client.stream.send_all(text({"op": "stat", "id": "s"}))
    while True:
        opcode, payload = await client.frame()
        if opcode == TEXT and json.loads(payload).get("re") == "s":
            await client.stream.aclose()
            return int(json.loads(payload)["stat"]["size"])


async def test_frames_before_a_message_that_is_not_utf8_are_applied_then_1007(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    server: RunningServer = await nursery.start(serve, make_config(tmp_path / "c", transport))
    client = await RawClient.connect(server.port, "/v1/streams/u")
    chunks = [os.urandom(1000) for _ in range(20)]
    burst = text({"op": "create", "id": 1}) + text({"op": "append", "id": 2})
    burst += b"".join(client_frame(BINARY, chunk) for chunk in chunks)
    burst += client_frame(TEXT, b'{"op":"stat","id":"\xff\xfe"}')
    burst += text({"op": "stat", "id": 4})  # after the bad message: never applied
    await client.stream.send_all(burst)
    seen, code = await client.messages_until_close()
    # trio-websocket (wsproto) drops the connection without a close frame.
    assert code == (1007 if transport == "websockets" else None)
    assert [m.get("re") for m in seen if "re" in m] == [1, 2]
    assert await _size(server.port, "u") == 20_000


async def test_a_fragmented_message_is_one_upload_frame_amid_whole_ones(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    server: RunningServer = await nursery.start(serve, make_config(tmp_path / "c", transport))
    client = await RawClient.connect(server.port, "/v1/streams/f")
    data = os.urandom(9000)
    burst = text({"op": "create", "id": 1}) + text({"op": "append", "id": 2})
    burst += client_frame(BINARY, data[:1000])
    burst += client_frame(BINARY, data[1000:4000], fin=False)
    burst += client_frame(CONT, data[4000:6000], fin=False)
    burst += client_frame(CONT, data[6000:8000])
    burst += client_frame(BINARY, data[8000:])
    burst += text({"op": "read", "id": 3, "offset": 0})
    await client.stream.send_all(burst)
    while True:
        opcode, payload = await client.frame()
        if opcode == TEXT and json.loads(payload).get("re") == 3:
            assert json.loads(payload)["length"] == len(data)
            break
    got = b""
    while len(got) < len(data):
        opcode, payload = await client.frame()
        if opcode == BINARY:
            got += payload
    assert got == data
    await client.stream.aclose()


async def _reply(client: RawClient, request_id: object) -> dict[str, object]:
    while True:
        opcode, payload = await client.frame()
        if opcode == TEXT and (message := json.loads(payload)).get("re") == request_id:
            return cast(dict[str, object], message)


async def test_frames_written_as_they_arrive_keep_their_place_among_messages(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    """On ``websockets`` a frame that arrives while the session waits, with nothing queued,
    is written by the task that read it (no pass through the queue); frames behind a
    queued message wait their turn. Either way every request sees exactly the frames
    sent before it, and the stream holds every frame in order."""
    server: RunningServer = await nursery.start(serve, make_config(tmp_path / "c", transport))
    client = await RawClient.connect(server.port, "/v1/streams/o")
    await client.stream.send_all(text({"op": "create", "id": 1}) + text({"op": "append", "id": 2}))
    await _reply(client, 2)
    chunks = [os.urandom(1500) for _ in range(60)]
    for chunk in chunks[:20]:  # one at a time, each while the session waits
        await client.stream.send_all(client_frame(BINARY, chunk))
        await trio.sleep(0.002)
    burst = b"".join(client_frame(BINARY, chunk) for chunk in chunks[20:40])
    burst += text({"op": "stat", "id": 3})
    burst += b"".join(client_frame(BINARY, chunk) for chunk in chunks[40:])
    await client.stream.send_all(burst)
    stat = await _reply(client, 3)
    assert cast(dict[str, int], stat["stat"])["size"] == 40 * 1500
    await client.stream.send_all(text({"op": "sync", "id": 4}))
    assert cast(dict[str, int], (await _reply(client, 4))["stat"])["size"] == 60 * 1500
    await client.stream.aclose()
    assert await _size(server.port, "o") == 60 * 1500
    reader = await RawClient.connect(server.port, "/v1/streams/o")
    await reader.stream.send_all(text({"op": "read", "id": 5, "offset": 0}))
    await _reply(reader, 5)
    got = b""
    while len(got) < 60 * 1500:
        opcode, payload = await reader.frame()
        if opcode == BINARY:
            got += payload
    assert got == b"".join(chunks)
    await reader.stream.aclose()


async def test_frames_behind_a_message_that_is_not_utf8_are_never_applied(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    server: RunningServer = await nursery.start(serve, make_config(tmp_path / "c", transport))
    client = await RawClient.connect(server.port, "/v1/streams/b")
    await client.stream.send_all(text({"op": "create", "id": 1}) + text({"op": "append", "id": 2}))
    await _reply(client, 2)
    await client.stream.send_all(client_frame(BINARY, b"a" * 100))
    await trio.sleep(0.01)
    bad = client_frame(TEXT, b"\xff\xfe") + client_frame(BINARY, b"b" * 100)
    with contextlib.suppress(trio.BrokenResourceError):
        await client.stream.send_all(bad)
        await trio.sleep(0.01)
        await client.stream.send_all(client_frame(BINARY, b"c" * 100))
    await client.messages_until_close()
    assert await _size(server.port, "b") == 100
