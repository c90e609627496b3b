"""Bare receive-and-discard servers: the transport limits mmstream is compared with.

``python -m bench.servers KIND --port N [--receive-buffer BYTES]``, KIND one of ``tcp``,
``trio-websocket``, ``websockets``. Each runs until killed.

- ``tcp``: the first byte picks the mode. ``D``: discard until the client half-closes, then
  answer the byte count (8 bytes, big-endian). ``R``: request/response, each request a 4-byte
  big-endian length answered with that many bytes (the raw round-trip baseline).
- WebSocket servers discard binary messages and answer every text message with
  ``{"re": <its id>, "ok": true, "bytes": <binary bytes so far>}``, the same shape as
  mmstream's ``sync`` reply, so the generator drives all servers alike.
"""

from __future__ import annotations

import argparse
import json
import struct
from collections.abc import Sequence
from functools import partial

import trio

MAX_MESSAGE = 4 * 1024 * 1024


def _reply(text: str | bytes, received: int) -> str:
    try:
        request = json.loads(text)
    except ValueError:
        request = {}
    return json.dumps({"re": request.get("id"), "ok": True, "bytes": received})


async def _tcp_handler(stream: trio.SocketStream) -> None:
    mode = await stream.receive_some(1)
    if mode == b"D":
        received = 0
        while data := await stream.receive_some(1 << 20):
            received += len(data)
        await stream.send_all(struct.pack("!Q", received))
    elif mode == b"R":
        reply = bytearray(1 << 20)
        buf = b""
        while True:
            while len(buf) < 4:
                more = await stream.receive_some(65536)
                if not more:
                    return
                buf += more
            (length,) = struct.unpack("!I", buf[:4])
            buf = buf[4:]
            await stream.send_all(memoryview(reply)[:length])
    await stream.aclose()


async def serve_tcp(port: int) -> None:
    await trio.serve_tcp(_tcp_handler, port, host="127.0.0.1")


async def serve_trio_websocket(port: int, receive_buffer: int | None) -> None:
    from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        received = 0
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                return
            if isinstance(message, bytes):
                received += len(message)
            else:
                await ws.send_message(_reply(message, received))

    kwargs: dict[str, object] = {"max_message_size": MAX_MESSAGE}
    if receive_buffer is not None:
        kwargs["receive_buffer_size"] = receive_buffer
    await serve_websocket(handler, "127.0.0.1", port, None, **kwargs)  # type: ignore[arg-type]


async def serve_websockets(port: int) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.trio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        received = 0
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    received += len(message)
                else:
                    await ws.send(_reply(message, received))
        except ConnectionClosed:
            return

    await serve(handler, port, host="127.0.0.1", compression=None, max_size=MAX_MESSAGE)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=["tcp", "trio-websocket", "websockets"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--receive-buffer", type=int, default=None)
    args = parser.parse_args(argv)
    match args.kind:
        case "tcp":
            trio.run(serve_tcp, args.port)
        case "trio-websocket":
            trio.run(partial(serve_trio_websocket, args.port, args.receive_buffer))
        case "websockets":
            trio.run(serve_websockets, args.port)


if __name__ == "__main__":
    main()
