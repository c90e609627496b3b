"""Raw HTTP for the wire tests: a status line is all they need to see."""

from __future__ import annotations

import trio


async def http_status(port: int, target: str, authorization: str | None = None) -> int:
    """The status of ``GET target`` on 127.0.0.1:``port``, with an optional Authorization."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        header = f"Authorization: {authorization}\r\n" if authorization else ""
        request = f"GET {target} HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n"
        await stream.send_all(request.encode())
        with trio.fail_after(5):
            head = await stream.receive_some(100)
    return int(head.split()[1])
