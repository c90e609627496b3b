"""Client addresses behind trusted proxies: X-Forwarded-For and PROXY protocol v1 (from a
raw socket and from a real HAProxy), in listclients, hooks and the per-address cap."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from icecast_helpers import (
    MP3_FRAME,
    connect,
    exchange,
    free_port,
    live_source,
    needs,
    read_head,
    read_to_end,
    running_server,
    stop_process,
)

from mmstream.config import ServerConfig
from mmstream.server import RunningServer

HAPROXY = shutil.which("haproxy")


async def listener_ips(server: RunningServer) -> list[str]:
    status, _, body = await exchange(
        server, b"GET /admin/listclients?mount=/streams/live HTTP/1.0\r\n\r\n"
    )
    assert status == 200, body
    return sorted(ip.text or "" for ip in ET.fromstring(body).iter("IP"))


@asynccontextmanager
async def live(tmp_path: Path, **server: object) -> AsyncIterator[RunningServer]:
    config = ServerConfig(port=0, **server)  # type: ignore[arg-type]
    async with running_server(tmp_path, server_config=config) as running:
        source = await live_source(running, "live", MP3_FRAME * 4, content_type="audio/mpeg")
        yield running
        await source.aclose()


async def listen(
    server: RunningServer, prefix: bytes = b"", headers: str = ""
) -> tuple[int, trio.SocketStream]:
    stream = await connect(server)
    await stream.send_all(
        prefix + f"GET /streams/live HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
    )
    status, _, _ = await read_head(stream)
    return status, stream


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    forwarded = "X-Forwarded-For: 203.0.113.9, 198.51.100.7\r\n"
    async with live(tmp_path, trusted_proxies=("127.0.0.1",)) as server:
        status, held = await listen(server, headers=forwarded)
        assert status == 200
        assert await listener_ips(server) == ["198.51.100.7"]
        await held.aclose()
    async with live(tmp_path / "2") as server:  # nobody trusted: the header is ignored
        status, held = await listen(server, headers=forwarded)
        assert status == 200
        assert await listener_ips(server) == ["127.0.0.1"]
        await held.aclose()


async def test_the_per_address_cap_counts_the_forwarded_client(tmp_path: Path) -> None:
    async with live(tmp_path, trusted_proxies=("127.0.0.1",), max_connections_per_ip=2) as server:
        held = []
        for client in ("198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.3"):
            status, stream = await listen(server, headers=f"X-Forwarded-For: {client}\r\n")
            assert status == 200, client  # four through one proxy: its address is not capped
            held.append(stream)
        status, stream = await listen(server, headers="X-Forwarded-For: 198.51.100.1\r\n")
        assert status == 503  # that client's third
        held.append(stream)
        for stream in held:
            await stream.aclose()


async def test_proxy_protocol_names_the_client_and_the_per_address_cap_counts_it(
    tmp_path: Path,
) -> None:
    async with live(tmp_path, trusted_proxies=("127.0.0.0/8",), max_connections_per_ip=2) as server:
        held = []
        for n in (1, 2, 3):  # three clients through one proxy: the proxy is not capped
            line = f"PROXY TCP4 198.51.100.{n} 127.0.0.1 4000{n} 80\r\n".encode()
            status, stream = await listen(server, line)
            assert status == 200
            held.append(stream)
        assert await listener_ips(server) == ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        line = b"PROXY TCP4 198.51.100.1 127.0.0.1 40009 80\r\n"
        status, stream = await listen(server, line)  # the same client a second time: fine
        assert status == 200
        held.append(stream)
        status, stream = await listen(server, line)  # a third: over its cap of 2
        assert status == 503
        held.append(stream)
        # A malformed line from the proxy closes the connection; PROXY UNKNOWN is the proxy.
        bad = await connect(server)
        await bad.send_all(b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n")
        with contextlib.suppress(trio.BrokenResourceError):  # reset: its request is unread
            assert await read_to_end(bad) == b""
        status, stream = await listen(server, b"PROXY UNKNOWN\r\n")
        assert status == 200
        held.append(stream)
        for stream in held:
            await stream.aclose()


async def test_a_proxy_line_from_an_untrusted_peer_is_just_a_bad_request(tmp_path: Path) -> None:
    async with live(tmp_path) as server:
        stream = await connect(server)
        await stream.send_all(b"PROXY TCP4 198.51.100.1 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n")
        status, _, _ = await read_head(stream)
        assert status == 400
        await stream.aclose()


def _haproxy_config(backend: int) -> tuple[Path, int, int]:
    workdir = Path(tempfile.mkdtemp(prefix="mmstream-haproxy-"))
    proxy_port, http_port = free_port(), free_port()
    (workdir / "haproxy.cfg").write_text(
        f"""global
  log stderr format raw local0 err
defaults
  timeout connect 5s
  timeout client 30s
  timeout server 30s
listen tcp_proxy
  mode tcp
  bind 127.0.0.1:{proxy_port}
  server mm 127.0.0.1:{backend} send-proxy
listen http_proxy
  mode http
  option forwardfor
  bind 127.0.0.1:{http_port}
  server mm 127.0.0.1:{backend}
"""
    )
    return workdir, proxy_port, http_port


@needs(HAPROXY, "haproxy", "haproxy")
async def test_behind_a_real_haproxy(tmp_path: Path) -> None:
    async with live(tmp_path, trusted_proxies=("127.0.0.1",)) as server:
        workdir, proxy_port, http_port = _haproxy_config(server.port)
        process = await trio.lowlevel.open_process(
            [HAPROXY or "haproxy", "-f", str(workdir / "haproxy.cfg"), "-db"]
        )
        try:
            held = []
            for port in (proxy_port, http_port):
                with trio.fail_after(10):
                    while True:
                        try:
                            stream = await trio.open_tcp_stream(
                                "127.0.0.1", port, local_address="127.0.0.2"
                            )
                            break
                        except OSError:
                            await trio.sleep(0.05)
                await stream.send_all(b"GET /streams/live HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _, _ = await read_head(stream)
                assert status == 200
                held.append(stream)
            # Both came through HAProxy (127.0.0.1, trusted) from 127.0.0.2: the client is
            # named by the PROXY line in one case, by X-Forwarded-For in the other.
            assert await listener_ips(server) == ["127.0.0.2", "127.0.0.2"]
            for stream in held:
                await stream.aclose()
        finally:
            await stop_process(process)
            shutil.rmtree(workdir, ignore_errors=True)
