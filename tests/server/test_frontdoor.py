"""The front door on a real loopback port: plain HTTP and WebSockets on one port, limits,
timeouts, with a small echo handler standing in for the protocol (both transports)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import websockets.exceptions
from server_helpers import TRANSPORTS, http_client, http_get, ws_connect

from mmstream.config import ServerConfig
from mmstream.server._frontdoor import FrontDoor
from mmstream.server._http import HttpRequest, HttpResponse, Router, json_response
from mmstream.server._transports import Connection, ConnectionClosed, make_transport

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)


async def echo(connection: Connection) -> None:
    try:
        while True:
            message = await connection.receive()
            if message == "whoami":
                await connection.send_text(f"{connection.path} {connection.subprotocol}")
            elif isinstance(message, str):
                await connection.send_text(message)
            else:
                await connection.send_bytes(message)
    except ConnectionClosed:
        pass


async def pieces(request: HttpRequest) -> HttpResponse:
    async def body() -> AsyncIterator[bytes]:
        for i in range(int(request.params["n"])):
            yield bytes([65 + i % 26]) * 1000

    return HttpResponse(200, [("content-type", "text/plain")], body())


def make_router() -> Router:
    router = Router()

    @router.route("GET", "/hello")
    async def hello(request: HttpRequest) -> HttpResponse:
        return json_response(200, {"hello": request.query})

    router.add("GET", "/pieces/{n}", pieces)
    return router


@asynccontextmanager
async def front_door(
    transport: str,
    handler: Callable[[Connection], Awaitable[None]] = echo,
    router: Router | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[FrontDoor, int]]:
    config = ServerConfig(transport=transport, **settings)  # type: ignore[arg-type]
    door = FrontDoor(
        config,
        lambda: (make_transport(config), lambda connection, slot: handler(connection)),
        router if router is not None else make_router(),
        websocket_path=lambda p: p.startswith("/v1"),
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                trio.serve_listeners,
                door.handle,
                await trio.open_tcp_listeners(0, host="127.0.0.1"),
            )
        )
        yield door, listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_http_and_websocket_share_the_port(transport: str) -> None:
    async with front_door(transport) as (_, port):
        reply = await http_get(port, "/hello?x=1")
        assert reply.status == 200
        assert reply.json() == {"hello": "x=1"}
        async with ws_connect(f"ws://127.0.0.1:{port}/v1/streams/a") as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"
            await ws.send(b"\x00\x01")
            assert await ws.receive() == b"\x00\x01"
            await ws.send("whoami")
            assert await ws.receive() == "/v1/streams/a None"


async def test_subprotocol_is_chosen_when_offered(transport: str) -> None:
    async with front_door(transport) as (_, port):
        for library in TRANSPORTS:
            url = f"ws://127.0.0.1:{port}/v1"
            async with ws_connect(url, library, subprotocols=["x", "mmstream.v1"]) as ws:
                await ws.send("whoami")
                assert await ws.receive() == "/v1 mmstream.v1"


async def test_http_keep_alive_head_404_405(transport: str) -> None:
    async with front_door(transport) as (_, port), http_client(port) as client:
        first = await client.request("GET", "/hello")
        assert first.status == 200
        head = await client.request("HEAD", "/hello")
        assert head.status == 200
        assert head.body == b""
        assert head.headers["content-length"] == str(len(first.body))
        missing = await client.request("GET", "/nothing")
        assert missing.status == 404
        wrong = await client.request("POST", "/hello")
        assert wrong.status == 405
        assert wrong.headers["allow"] == "GET, HEAD"
        again = await client.request("GET", "/hello?again")
        assert again.json() == {"hello": "again"}
        assert not await client.closed_by_server(wait=0.2)


async def test_streamed_body_arrives_whole(transport: str) -> None:
    async with front_door(transport) as (_, port):
        reply = await http_get(port, "/pieces/300")
        assert reply.status == 200
        assert reply.headers["transfer-encoding"] == "chunked"
        assert len(reply.body) == 300_000
        assert reply.body[:1000] == b"A" * 1000
        assert reply.body[-1000:] == bytes([65 + 299 % 26]) * 1000


async def test_unknown_websocket_path_is_404(transport: str) -> None:
    async with front_door(transport) as (_, port):
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            async with ws_connect(f"ws://127.0.0.1:{port}/elsewhere"):
                pass
        assert info.value.response.status_code == 404


async def test_malformed_request_gets_400(transport: str) -> None:
    async with front_door(transport) as (_, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            reply = await stream.receive_some(4096)
            assert reply.startswith(b"HTTP/1.1 400 ")


async def test_a_head_arriving_in_pieces_is_replayed_whole(transport: str) -> None:
    async with front_door(transport) as (_, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            await trio.sleep(0.05)
            await stream.send_all(
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(4096)
            assert received.startswith(b"HTTP/1.1 101 ")
            assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in received  # RFC 6455's example key
            mask = b"\x01\x02\x03\x04"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"ping"))
            await stream.send_all(b"\x81\x84" + mask + payload)
            received = received.partition(b"\r\n\r\n")[2]
            while len(received) < 6:
                received += await stream.receive_some(4096)
            assert received == b"\x81\x04ping"


async def test_oversized_message_closes_1009_others_unaffected(transport: str) -> None:
    async with front_door(transport, max_message_size=4096) as (_, port):
        url = f"ws://127.0.0.1:{port}/v1"
        async with ws_connect(url) as other, ws_connect(url) as big:
            await big.send(b"x" * 5000)
            assert await big.close_code() == 1009
            await other.send(b"y" * 4096)
            assert await other.receive() == b"y" * 4096


async def test_handshake_timeout_closes_silent_clients(transport: str) -> None:
    async with front_door(transport, handshake_timeout=0.3) as (door, port):
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        async with silent:
            await silent.send_all(b"GET /v1 HTTP/1.1\r\n")  # and never the rest
            with trio.fail_after(5):
                assert await silent.receive_some(100) == b""
        assert (await http_get(port, "/hello")).status == 200
        await connections_settle(door)


async def test_connection_caps_refuse_with_503(transport: str) -> None:
    async with front_door(transport, max_connections=2) as (door, port):
        url = f"ws://127.0.0.1:{port}/v1"
        async with ws_connect(url) as one, ws_connect(url):
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                async with ws_connect(url):
                    pass
            assert info.value.response.status_code == 503
            assert (await http_get_raw_status(port)) == 503
            await one.send("still here")
            assert await one.receive() == "still here"
        await connections_settle(door)
        async with ws_connect(url) as again:
            await again.send("ok")
            assert await again.receive() == "ok"


async def test_per_ip_cap(transport: str) -> None:
    async with front_door(transport, max_connections_per_ip=1) as (_, port):
        url = f"ws://127.0.0.1:{port}/v1"
        async with ws_connect(url):
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                async with ws_connect(url):
                    pass
            assert info.value.response.status_code == 503


async def connections_settle(door: FrontDoor) -> None:
    with trio.fail_after(5):
        while door.active_connections:  # noqa: ASYNC110 - polling is fine in a test
            await trio.sleep(0.01)


async def http_get_raw_status(port: int) -> int:
    return (await http_get(port, "/hello")).status


async def test_shutdown_closes_idle_keep_alive(transport: str) -> None:
    async with front_door(transport) as (door, port), http_client(port) as client:
        assert (await client.request("GET", "/hello")).status == 200
        door.begin_shutdown()
        assert await client.closed_by_server()
        assert (await http_get_raw_status(port)) == 503


async def test_a_failing_handler_ends_only_its_connection(transport: str) -> None:
    async def broken(connection: Connection) -> None:
        if await connection.receive() == "boom":
            raise RuntimeError("a bug in a handler")
        await echo(connection)

    async with front_door(transport, broken) as (_, port):
        url = f"ws://127.0.0.1:{port}/v1"
        async with ws_connect(url) as good, ws_connect(url) as bad:
            await bad.send("boom")
            assert await bad.close_code() == 1011
            await good.send("fine")
            await good.send("fine")
            assert await good.receive() == "fine"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 99\r\n\r\n",
        b"GET /v1 HTTP/1.0\r\nUpgrade: websocket\r\n\r\n",
    ],
)
async def test_broken_handshakes_get_an_http_error_quickly(
    transport: str, head: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with front_door(transport, handshake_timeout=5) as (door, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(head)
            received = b""
            with trio.fail_after(2):
                while chunk := await stream.receive_some(4096):
                    received += chunk
        assert received.startswith(b"HTTP/1.1 4") or received.startswith(b"HTTP/1.1 5")
        await connections_settle(door)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_an_endless_request_head_is_refused(transport: str) -> None:
    async with front_door(transport) as (door, port):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /v1 HTTP/1.1\r\nX-Big: " + b"a" * 40_000)
            received = b""
            with trio.fail_after(2):
                try:
                    while chunk := await stream.receive_some(4096):
                        received += chunk
                except trio.BrokenResourceError:
                    pass  # a reset is fine too: the server does not read it all
        assert received == b"" or received.startswith(b"HTTP/1.1 431 ")
        await connections_settle(door)


async def test_health_checks_log_quietly(transport: str, caplog: pytest.LogCaptureFixture) -> None:
    """A balancer's /healthz probe every second must not flood the INFO log; others still log."""
    caplog.set_level(logging.INFO, logger="mmstream.server")
    router_paths = make_router()

    @router_paths.route("GET", "/healthz")
    async def healthz(request: HttpRequest) -> HttpResponse:
        return json_response(200, {"status": "ok"})

    async with front_door(transport, router=router_paths) as (_door, port):
        assert (await http_get(port, "/healthz")).status == 200
        await trio.sleep(0.05)
        assert not [r for r in caplog.records if r.levelno >= logging.INFO]
        assert (await http_get(port, "/hello")).status == 200
        await trio.sleep(0.05)
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        assert any(m.startswith("connection open") for m in messages)
        assert any(m.startswith("connection close") for m in messages)
