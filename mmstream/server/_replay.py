"""A stream that hands back, first, the bytes the front door already read.

The front door must read a request head to decide between plain HTTP and a WebSocket
upgrade; the WebSocket libraries then want to parse that same head themselves. Rather than
reach into their internals, we give them a stream that replays those bytes before reading
the socket again.

It also sets how much a read asks the socket for when the library does not say (websockets
never does): ``server.receive_buffer_size`` rather than Trio's 64 KiB, so that a 64 KiB
upload frame, with its header, does not take two reads.
"""

from __future__ import annotations

import trio

__all__ = ["ReplayStream"]


class ReplayStream(trio.abc.HalfCloseableStream):
    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        prefix: bytes,
        *,
        receive_size: int | None = None,
    ) -> None:
        self.transport_stream = stream
        self._prefix = memoryview(prefix) if prefix else None
        self._receive_size = receive_size

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix is None:
            if max_bytes is None:
                max_bytes = self._receive_size
            return await self.transport_stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(self._prefix) if max_bytes is None else max_bytes
        chunk = bytes(self._prefix[:size])
        rest = self._prefix[size:]
        self._prefix = rest if len(rest) else None
        return chunk

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.transport_stream.send_eof()

    async def aclose(self) -> None:
        self._prefix = None
        await self.transport_stream.aclose()
