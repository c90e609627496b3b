"""Real radio programs push through HAProxy's source port (``--source-bind``) to a
two-worker cluster, as ``serve --workers 2 --haproxy-sources`` runs it, and their titles
reach the owner's ``/status-json.xsl`` and an ``Icy-MetaData`` listener on the balancer.

Liquidsoap and MPD (libshout) send a title as ``GET /admin/metadata?mount=/streams/{id}``
to the port they push to; ices2 sends it in each file's Ogg comment header. Each stream id
is chosen to hash away from the node ``/admin/metadata``'s own path would hash to, so a
title reaches the owner only if the balancer routes it by its ``mount``."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from icecast_helpers import needs_ffmpeg
from radio_programs import (
    ICES_TITLES,
    MPD_TITLE,
    SECOND,
    needs_ices2,
    needs_liquidsoap,
    needs_mpd,
    run_ices2,
    run_liquidsoap,
    start_mpd,
)
from scaleout_helpers import LocalCluster, needs_haproxy, open_local_cluster, served_by

from mmstream.icecast import split_icy
from mmstream.scaleout import Endpoint

pytestmark = [needs_haproxy, needs_ffmpeg, pytest.mark.slow]

METAINT = 16000


@asynccontextmanager
async def two_workers(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """Two nodes relaying each other's listeners, HAProxy taking sources on its own port."""
    async with open_local_cluster(tmp_path, 2, relays=True, sources=True) as cluster:
        yield cluster


async def stream_id_away_from_admin(cluster: LocalCluster, prefix: str) -> str:
    """An id the ring puts on another node than ``/admin/metadata``'s path segment
    (``metadata``) would: routed by its path, the title would miss the owner."""
    _, admin_node = await served_by(cluster.balancer, "/streams/metadata?owner")
    for i in itertools.count():
        stream_id = f"{prefix}{i}"
        if (await served_by(cluster.balancer, f"/streams/{stream_id}?owner"))[1] != admin_node:
            return stream_id
    raise AssertionError("unreachable")


async def status_json_title(node: Endpoint, stream_id: str) -> str | None:
    """The stream's ``title`` in a node's ``/status-json.xsl`` (None: not listed)."""
    stream = await trio.open_tcp_stream(node.host, node.port)
    async with stream:
        await stream.send_all(
            b"GET /status-json.xsl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = bytearray()
        while piece := await stream.receive_some(65536):
            data += piece
    body = json.loads(bytes(data).partition(b"\r\n\r\n")[2])
    sources = body["icestats"].get("source", [])
    for source in sources if isinstance(sources, list) else [sources]:
        if source["listenurl"].endswith(f"/streams/{stream_id}"):
            return source.get("title")
    return None


async def owner_shows(cluster: LocalCluster, stream_id: str, title: str) -> None:
    """Wait until the node holding the stream lists ``title`` as its current one."""
    while True:
        holders = cluster.holders(stream_id)
        if holders and await status_json_title(cluster.nodes[holders[0]], stream_id) == title:
            return
        await trio.sleep(0.1)


async def icy_listener_hears(cluster: LocalCluster, stream_id: str, title: str) -> None:
    """A listener on the balancer's port asking for titles hears ``title`` in-band."""
    stream = await trio.open_tcp_stream(cluster.balancer.host, cluster.balancer.port)
    async with stream:
        await stream.send_all(
            f"GET /streams/{stream_id} HTTP/1.1\r\nHost: x\r\nIcy-MetaData: 1\r\n\r\n".encode()
        )
        data = bytearray()
        while b"\r\n\r\n" not in data:
            piece = await stream.receive_some(65536)
            assert piece, data
            data += piece
        head, _, rest = bytes(data).partition(b"\r\n\r\n")
        assert head.split()[1] == b"200", head
        assert f"icy-metaint: {METAINT}".encode() in head.lower(), head
        body = bytearray(rest)
        wanted = f"StreamTitle='{title}';".encode()
        while wanted not in split_icy(bytes(body), METAINT)[1]:
            piece = await stream.receive_some(65536)
            assert piece, split_icy(bytes(body), METAINT)[1]
            body += piece


async def titles_arrive(
    tmp_path: Path, title: str, push: Callable[[int, str], Awaitable[object]]
) -> None:
    """Run ``push(source port, stream id)`` (a program pushing to HAProxy's source port)
    until ``title`` is the owner's in ``/status-json.xsl`` and an ICY listener on the
    balancer hears it."""
    async with two_workers(tmp_path) as cluster:
        stream_id = await stream_id_away_from_admin(cluster, "radio")
        source = cluster.options.source_bind
        assert source is not None
        with trio.fail_after(90):  # Liquidsoap and MPD start slowly on a busy machine
            async with trio.open_nursery() as nursery:
                nursery.start_soon(push, source.port, stream_id)
                await owner_shows(cluster, stream_id, title)
                await icy_listener_hears(cluster, stream_id, title)
                nursery.cancel_scope.cancel()


@needs_liquidsoap
async def test_liquidsoap_titles_through_the_source_port(tmp_path: Path) -> None:
    await titles_arrive(tmp_path, SECOND, partial(run_liquidsoap, tmp_path))


@needs_mpd
async def test_mpd_titles_through_the_source_port(tmp_path: Path) -> None:
    async def mpd(port: int, stream_id: str) -> None:
        async with trio.open_nursery() as nursery:
            process = await start_mpd(nursery, tmp_path, port, stream_id)
            try:
                await trio.sleep_forever()
            finally:
                process.terminate()

    await titles_arrive(tmp_path, MPD_TITLE, mpd)


@needs_ices2
async def test_ices2_titles_through_the_source_port(tmp_path: Path) -> None:
    await titles_arrive(tmp_path, ICES_TITLES[1], partial(run_ices2, tmp_path, seconds=(2, 30)))


async def test_admin_metadata_goes_to_the_owner_of_its_mount(tmp_path: Path) -> None:
    """On the HTTP port too (curl, AzuraCast): the mount's id picks the node, with or
    without the mount's leading ``/`` and percent-encoded."""
    async with two_workers(tmp_path) as cluster:
        for i in range(8):
            _, owner = await served_by(cluster.balancer, f"/streams/s{i}?owner")
            for mount in (f"/streams/s{i}", f"streams/s{i}", f"%2Fstreams%2Fs{i}"):
                query = f"mode=updinfo&mount={mount}&song=x"
                assert (await served_by(cluster.balancer, f"/admin/metadata?{query}"))[1] == owner
