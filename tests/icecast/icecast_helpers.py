"""A real server on a free loopback port, and raw-socket sources and listeners for it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from mmstream.config import AuthConfig, ByteSize, CacheConfig, Config, IcecastConfig, ServerConfig
from mmstream.server import RunningServer, serve


def needs(program: str | None, name: str, package: str) -> pytest.MarkDecorator:
    """Skip when a real program a test drives is missing, saying which and its package."""
    return pytest.mark.skipif(
        program is None, reason=f"{name} is not installed (apt-get install {package})"
    )


FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = needs(FFMPEG, "ffmpeg", "ffmpeg")


#: One MPEG-1 layer III frame (128 kbit/s, 44.1 kHz, 417 bytes): a valid MP3 byte stream.
MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(413)


def free_port() -> int:
    """A loopback port nothing listens on now (for programs started by a test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_config(
    cache_dir: Path,
    auth: AuthConfig | None = None,
    server: ServerConfig | None = None,
    **icecast: Any,
) -> Config:
    return Config(
        cache=CacheConfig(directory=cache_dir, initial_size=ByteSize(1 << 20)),
        server=server or ServerConfig(port=0),
        icecast=IcecastConfig(**icecast),
        auth=auth or AuthConfig(),
    )


@asynccontextmanager
async def running_server(
    tmp_path: Path,
    auth: AuthConfig | None = None,
    server_config: ServerConfig | None = None,
    **icecast: Any,
) -> AsyncIterator[RunningServer]:
    async with trio.open_nursery() as nursery:
        config = make_config(tmp_path / "c", auth, server_config, **icecast)
        server: RunningServer = await nursery.start(serve, config)
        yield server
        server.abort()


async def stop_process(process: trio.Process) -> None:
    """End a program a test started: SIGTERM, then SIGKILL if it has not exited in 5 s."""
    process.terminate()
    with trio.move_on_after(5):
        await process.wait()
    process.kill()


def decode_s16(path: Path) -> tuple[bytes, bytes]:
    """Decode with ffmpeg (it must succeed) to 8 kHz mono s16: (samples, its error output)."""
    assert FFMPEG is not None
    done = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "8000", "-"],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


async def connect(server: RunningServer) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", server.port)


async def read_head(
    stream: trio.SocketStream, buffered: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and the bytes read past the head."""
    data = buffered
    while b"\r\n\r\n" not in data:
        piece = await stream.receive_some(65536)
        if not piece:
            raise EOFError(f"closed before a full head: {data!r}")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


async def read_to_end(stream: trio.SocketStream, buffered: bytes = b"") -> bytes:
    data = bytearray(buffered)
    while piece := await stream.receive_some(65536):
        data += piece
    return bytes(data)


async def read_exactly(stream: trio.SocketStream, count: int, buffered: bytes = b"") -> bytes:
    data = bytearray(buffered)
    while len(data) < count:
        piece = await stream.receive_some(65536)
        if not piece:
            raise EOFError(f"closed after {len(data)} of {count} bytes")
        data += piece
    return bytes(data)


async def exchange(
    server: RunningServer, request: str | bytes
) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request on a new connection; the status, headers and the whole body
    (read to the connection's end: ask with ``Connection: close`` or HTTP/1.0)."""
    stream = await connect(server)
    await stream.send_all(request.encode() if isinstance(request, str) else request)
    status, headers, rest = await read_head(stream)
    body = await read_to_end(stream, rest)
    await stream.aclose()
    return status, headers, body


def body_json(rest: bytes) -> Any:
    return json.loads(rest)


async def open_source(
    server: RunningServer,
    stream_id: str,
    *,
    content_type: str = "audio/ogg",
    extra: str = "",
    authorization: str = "Basic c291cmNlOmhhY2ttZQ==",
) -> trio.SocketStream:
    """A source as ffmpeg's icecast output opens it: PUT, Expect: 100-continue, no
    length, no chunking; returns once the server said 100."""
    stream = await connect(server)
    await stream.send_all(
        (
            f"PUT /streams/{stream_id} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Authorization: {authorization}\r\nExpect: 100-continue\r\n"
            f"Ice-Name: a test\r\nIce-Public: 0\r\n{extra}Connection: close\r\n\r\n"
        ).encode()
    )
    status, _, rest = await read_head(stream)
    assert status == 100 and rest == b""
    return stream


async def live_source(
    server: RunningServer, stream_id: str, data: bytes, **kwargs: str
) -> trio.SocketStream:
    """A source (:func:`open_source`) that has sent ``data``, once the server holds it."""
    source = await open_source(server, stream_id, **kwargs)
    await source.send_all(data)
    await wait_until(has_size(server, stream_id, len(data)))
    return source


async def open_listener(
    server: RunningServer, target: str
) -> tuple[trio.SocketStream, dict[str, str], bytes]:
    stream = await connect(server)
    await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, headers, rest = await read_head(stream)
    assert status == 200, (status, headers, rest)
    return stream, headers, rest


async def admin_metadata(server: RunningServer, query: str, auth: str = "") -> tuple[int, bytes]:
    """``GET /admin/metadata?{query}`` as source programs send it: status and body."""
    status, _, body = await exchange(
        server,
        f"GET /admin/metadata?{query} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
    )
    return status, body


async def wait_until(check: Callable[[], bool]) -> None:
    """Poll the server's state (a stream appearing, a size reached, a status changed)."""
    with trio.fail_after(10):
        while True:
            if check():
                return
            await trio.sleep(0.005)


def has_size(server: RunningServer, stream_id: str, size: int) -> Callable[[], bool]:
    def check() -> bool:
        streams = {info.stream_id: info for info in server.manager.list()}
        return stream_id in streams and streams[stream_id].size >= size

    return check
