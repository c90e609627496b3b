"""An Icecast source through real HAProxy: ffmpeg's icecast output sends ``PUT`` with
``Expect: 100-continue`` and neither a length nor chunking, then streams the body until it
closes. HTTP mode reads such a request as bodiless, so the generated config routes sources
through a TCP frontend (``source_bind``) that hashes the id onto the same ring."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from scaleout_helpers import needs_haproxy, open_local_cluster, served_by

from mmstream.client import Client, connect
from mmstream.protocol.messages import StreamStat
from mmstream.scaleout import Endpoint

FFMPEG = shutil.which("ffmpeg")
pytestmark = [
    needs_haproxy,
    pytest.mark.slow,
    pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed: apt-get install ffmpeg"),
]


def push_command(port: int, stream_id: str, seconds: float) -> list[str]:
    """ffmpeg's icecast output, in real time (``-re``), as docs/icecast.md shows it."""
    assert FFMPEG is not None
    return [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-re", "-f", "lavfi",
            "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "libmp3lame",
            "-b:a", "128k", "-f", "mp3", "-content_type", "audio/mpeg",
            f"icecast://source:hackme@127.0.0.1:{port}/streams/{stream_id}"]  # fmt: skip


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` (a process, HAProxy and a node between us: nothing to wait on)."""
    for _ in itertools.count():
        if await check():
            return
        await trio.sleep(0.05)


async def ready(client: Client, stream_id: str) -> StreamStat:
    """The stream's stat once it is READY: the source's close finalizes it."""
    await until(lambda: is_ready(client, stream_id))
    return await client.stat(stream_id)


async def is_ready(client: Client, stream_id: str) -> bool:
    return (await client.stat(stream_id)).status == "ready"


async def exists(address: Endpoint, path: str) -> bool:
    return (await served_by(address, path))[0] == 200


async def read_response(stream: trio.SocketStream) -> tuple[str, bytes]:
    """A ``Connection: close`` response read to its end: (status line, body)."""
    data = bytearray()
    while piece := await stream.receive_some(65536):
        data += piece
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


async def test_ffmpeg_pushes_through_haproxy_and_a_listener_there_hears_it(
    tmp_path: Path,
) -> None:
    async with open_local_cluster(tmp_path, 3, sources=True) as cluster:
        source = cluster.options.source_bind
        assert source is not None
        body = b""
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.run_process, push_command(source.port, "tone", 3))
                # A listener through the balancer joins while ffmpeg is still pushing.
                await until(lambda: exists(cluster.balancer, "/streams/tone"))
                listener = await trio.open_tcp_stream(cluster.balancer.host, cluster.balancer.port)
                async with listener:
                    await listener.send_all(
                        b"GET /streams/tone HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )
                    status, body = await read_response(listener)
        assert status.split()[1] == "200", status
        async with connect(cluster.url, stream="tone") as client:
            with trio.fail_after(20):
                info = await ready(client, "tone")
        # 3 s of 128 kbit/s MP3: about 48 kB, all of it on the node the id hashes to.
        assert info.size > 40_000
        (holder,) = cluster.holders("tone")
        assert (await served_by(cluster.balancer, "/streams/tone"))[1] == f"node-{holder}"
        # The live listener heard the stream to its end: its body is the stream's tail.
        assert 0 < len(body) <= info.size
        async with connect(cluster.url, stream="tone") as client:
            whole = await client.read("tone", 0, info.size)
        assert whole.endswith(body)


async def test_a_legacy_source_through_haproxy_reaches_the_owner(tmp_path: Path) -> None:
    """Pre-2.4 clients: ``SOURCE``, HTTP/1.0, no length, the body after ``200 OK``."""
    sent = bytes(range(256)) * 64
    async with open_local_cluster(tmp_path, 3, sources=True) as cluster:
        source = cluster.options.source_bind
        assert source is not None
        with trio.fail_after(20):
            stream = await trio.open_tcp_stream(source.host, source.port)
            async with stream:
                await stream.send_all(
                    b"SOURCE /streams/legacy HTTP/1.0\r\nAuthorization: Basic c291cmNlOmhhY2ttZQ==\r\n"
                    b"Content-Type: audio/mpeg\r\n\r\n"
                )
                head = b""
                while b"\r\n\r\n" not in head:
                    piece = await stream.receive_some(65536)
                    assert piece, head
                    head += piece
                assert head.split()[1] == b"200", head
                for i in range(0, len(sent), 4096):
                    await stream.send_all(sent[i : i + 4096])
            async with connect(cluster.url, stream="legacy") as client:
                info = await ready(client, "legacy")
                assert await client.read("legacy", 0, info.size) == sent
        (holder,) = cluster.holders("legacy")
        assert (await served_by(cluster.balancer, "/streams/legacy"))[1] == f"node-{holder}"
