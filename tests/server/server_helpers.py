"""Clients for the server tests: a small h11 HTTP client and WebSocket openers for both
client libraries, so each test can speak to a real server on a loopback port."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import h11
import trio
import trio_websocket
import websockets.exceptions
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.trio.client import connect as websockets_connect
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from mmstream.config import ByteSize, CacheConfig, Config, ServerConfig
from mmstream.protocol import Append, Request, encode_request

TRANSPORTS = ("websockets", "trio-websocket")


def make_config(cache_dir: Path, transport: str = "websockets", **server: Any) -> Config:
    """A server on a free loopback port, caching under ``cache_dir``."""
    return Config(
        cache=CacheConfig(directory=cache_dir, initial_size=ByteSize(1 << 20)),
        server=ServerConfig(port=0, transport=transport, **server),  # type: ignore[arg-type]
    )


@attrs.frozen
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None
    ) -> HttpReply:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("host", "localhost"), *(headers or [])]
        await self.stream.send_all(
            self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        )
        await self.stream.send_all(self.conn.send(h11.EndOfMessage()))
        response: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            match event:
                case h11.Response():
                    response = event
                case h11.Data(data=data):
                    body += data
                case h11.EndOfMessage():
                    assert response is not None
                    headers_out = {k.decode(): v.decode() for k, v in response.headers}
                    return HttpReply(response.status_code, headers_out, bytes(body))
                case _:
                    raise AssertionError(f"unexpected {event!r}")

    async def closed_by_server(self, wait: float = 1.0) -> bool:
        """True if the server closes the connection (reads EOF) within ``wait`` seconds."""
        with trio.move_on_after(wait):
            try:
                return await self.stream.receive_some(1) == b""
            except trio.BrokenResourceError:
                return True
        return False


@asynccontextmanager
async def http_client(port: int) -> AsyncIterator[HttpClient]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        yield HttpClient(stream)


async def http_get(port: int, target: str, method: str = "GET") -> HttpReply:
    async with http_client(port) as client:
        return await client.request(method, target)


class WsClient:
    """The two WebSocket client libraries behind one face, like the server's transports."""

    def __init__(self, library: str, ws: Any) -> None:
        self.library = library
        self.ws = ws

    async def send(self, message: str | bytes) -> None:
        if self.library == "websockets":
            await self.ws.send(message)
        else:
            await self.ws.send_message(message)

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.send(json.dumps(obj))

    async def receive(self) -> str | bytes:
        if self.library == "websockets":
            return await self.ws.recv()  # type: ignore[no-any-return]
        return await self.ws.get_message()  # type: ignore[no-any-return]

    async def receive_json(self) -> dict[str, Any]:
        message = await self.receive()
        assert isinstance(message, str), message
        return json.loads(message)  # type: ignore[no-any-return]

    async def close_code(self) -> int | None:
        """Wait for the server to close the connection; its close code."""
        try:
            while True:
                await self.receive()
        except websockets.exceptions.ConnectionClosed as exc:
            frame = exc.rcvd or exc.sent
            return frame.code if frame else None
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason.code if exc.reason else None


@asynccontextmanager
async def ws_connect(
    url: str,
    library: str = "websockets",
    subprotocols: list[str] | None = None,
    max_size: int = 2**26,
) -> AsyncIterator[WsClient]:
    if library == "websockets":
        async with websockets_connect(
            url,
            subprotocols=subprotocols,
            max_size=max_size,
            compression=None,  # type: ignore[arg-type]
        ) as ws:
            yield WsClient(library, ws)
    else:
        async with trio_websocket.open_websocket_url(
            url, subprotocols=subprotocols, max_message_size=max_size
        ) as ws:
            yield WsClient(library, ws)


class V1:
    """Protocol v1 over a :class:`WsClient`, requests encoded with ``mmstream.protocol``."""

    def __init__(self, ws: WsClient) -> None:
        self.ws = ws

    async def send(self, request: Request) -> None:
        await self.ws.send(encode_request(request))

    async def call(self, request: Request) -> dict[str, Any]:
        """Send ``request`` and return the next text message (its reply, if nothing else
        is in flight)."""
        await self.send(request)
        return await self.ws.receive_json()

    async def receive_bytes(self, count: int) -> bytes:
        """Exactly ``count`` bytes of binary frames (text frames in between are an error)."""
        data = bytearray()
        while len(data) < count:
            message = await self.ws.receive()
            assert isinstance(message, bytes), f"expected bytes, got {message!r}"
            data += message
        assert len(data) == count
        return bytes(data)

    async def upload(
        self, data: bytes, *, offset: int = 0, chunk: int = 64 * 1024, request_id: int = 0
    ) -> dict[str, Any]:
        """``append`` at ``offset`` and the data in frames of ``chunk`` bytes without
        waiting; return the append reply once the last byte is acknowledged."""
        await self.send(Append(id=request_id, offset=offset))
        for start in range(0, len(data), chunk):
            await self.ws.send(data[start : start + chunk])
        reply = await self.ws.receive_json()
        assert reply["ok"], reply
        await self.acks_until(offset + len(data))
        return reply

    async def acks_until(self, offset: int) -> None:
        """Read ``ack`` events until one reports ``offset``; offsets must only grow."""
        last = -1
        while last < offset:
            event = await self.ws.receive_json()
            assert event["op"] == "ack", event
            assert event["offset"] > last
            last = event["offset"]
        assert last == offset


@asynccontextmanager
async def v1_connect(url: str, library: str = "websockets") -> AsyncIterator[V1]:
    async with ws_connect(url, library, subprotocols=["mmstream.v1"]) as ws:
        yield V1(ws)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds (10 s at most): a state the server reaches in its own
    time."""
    with trio.fail_after(10):
        while True:
            if await check():
                return
            await trio.sleep(0.02)


class BurstClient:
    """Protocol v1 over websockets' Sans-I/O client on a plain Trio socket, for what the
    client libraries cannot do: write many frames with one system call (a burst that
    arrives together)."""

    def __init__(self, stream: trio.SocketStream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self._texts: list[str] = []

    async def send_all_at_once(self, messages: list[str | bytes]) -> None:
        for message in messages:
            if isinstance(message, str):
                self.protocol.send_text(message.encode())
            else:
                self.protocol.send_binary(message)
        await self.stream.send_all(b"".join(self.protocol.data_to_send()))

    async def receive_json(self) -> dict[str, Any]:
        while not self._texts:
            data = await self.stream.receive_some()
            assert data, "the server closed the connection"
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    self._texts.append(event.data.decode())
        return json.loads(self._texts.pop(0))  # type: ignore[no-any-return]


@asynccontextmanager
async def burst_connect(url: str) -> AsyncIterator[BurstClient]:
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, subprotocols=[Subprotocol("mmstream.v1")])
    stream = await trio.open_tcp_stream(uri.host, uri.port)
    async with stream:
        protocol.send_request(protocol.connect())
        await stream.send_all(b"".join(protocol.data_to_send()))
        while protocol.handshake_exc is None and protocol.state is not websockets.protocol.OPEN:
            data = await stream.receive_some()
            assert data, "the server closed the connection during the handshake"
            protocol.receive_data(data)
            protocol.events_received()  # the handshake response
        assert protocol.handshake_exc is None, protocol.handshake_exc
        yield BurstClient(stream, protocol)
