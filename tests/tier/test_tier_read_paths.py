"""Every read path of a stream held only in the bucket: HLS playlist and segments, a time
seek, and the Icecast-style listener route in a cluster (issue 18, "Done when"), against a
real S3 endpoint (moto's server) and real cache files."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import trio
from media.media_files import media, needs_tools
from test_tier_engine import location, put_stream, wait_until
from test_tier_remote import run_node
from tier_moto import free_port

from mmstream.cache import MiB
from mmstream.client import connect
from mmstream.config import ByteSize, CacheConfig, ClusterConfig, Config, ServerConfig, TierConfig
from mmstream.server import RunningServer, serve
from mmstream.streams import StreamManager
from mmstream.web.hls_http import playlist_response, segment_response


async def _hls(manager: StreamManager, stream_id: str) -> list[bytes]:
    """The playlist, then every segment it lists, as a player would fetch them."""
    playlist = await playlist_response(manager, stream_id)
    assert playlist.status == 200, playlist.body
    assert isinstance(playlist.body, bytes)
    names = [line.removeprefix("hls/") for line in playlist.body.decode().splitlines()
             if line.startswith("hls/")]  # fmt: skip
    assert names
    bodies = [playlist.body]
    for name in names:
        segment = await segment_response(manager, stream_id, name, {})
        assert segment.status == 200, segment.body
        assert isinstance(segment.body, bytes)
        bodies.append(segment.body)
    return bodies


def _undated(playlist: bytes) -> list[bytes]:
    return [line for line in playlist.splitlines() if b"PROGRAM-DATE-TIME" not in line]


@needs_tools
async def test_hls_and_time_seeks_of_remote_streams_match_a_local_one(
    nursery: trio.Nursery, tmp_path: Path, tier_config: TierConfig
) -> None:
    mp3 = media("mp3")
    one, _ = await run_node(nursery, tmp_path / "one", tier_config,
                            max_cache_size=ByteSize(3 * MiB),
                            initial_size=ByteSize(64 * 1024))  # fmt: skip
    await one.create("song", content_type="audio/mpeg")
    await one.append("song", mp3)
    await one.finalize("song")
    await wait_until(lambda: location(one, "song") == "local+remote")
    local = await _hls(one, "song")
    local_seek = await one.seek("song", seconds=5.0)

    # Evicted on this node: the filler needs the room.
    await put_stream(one, "filler", os.urandom(3 * MiB - 64 * 1024))
    assert location(one, "song") == "remote"
    await wait_until(lambda: location(one, "filler") == "local+remote")  # room to restore
    assert await one.seek("song", seconds=5.0) == local_seek
    assert await _hls(one, "song") == local

    # A node that never had it: HLS finds it in the bucket, as the playback route does.
    two, _ = await run_node(nursery, tmp_path / "two", tier_config)
    remote = await _hls(two, "song")
    assert remote[1:] == local[1:]  # the segments, byte for byte
    # The playlist too, but for the wall clock: arrival times are not in the bucket, so a
    # node that never had the stream dates it from its creation (docs/tiering.md).
    assert _undated(remote[0]) == _undated(local[0])
    three, _ = await run_node(nursery, tmp_path / "three", tier_config)
    await three.find("song")
    assert location(three, "song") == "remote"
    assert await three.offset_at("song", 5.0) == local_seek.offset


async def test_the_listener_route_of_a_cluster_node_serves_a_stream_from_the_bucket(
    nursery: trio.Nursery, tmp_path: Path, tier_config: TierConfig
) -> None:
    """With peers configured, a stream this node does not hold was relayed from its owner
    (gone after a node loss): a finished stream in the bucket is served from the bucket."""
    data = os.urandom(MiB + 17)
    one, _ = await run_node(nursery, tmp_path / "one", tier_config)
    await one.create("song", content_type="audio/mpeg")
    await one.append("song", data)
    await one.finalize("song")
    await wait_until(lambda: location(one, "song") == "local+remote")
    config = Config(
        cache=CacheConfig(directory=tmp_path / "two", initial_size=ByteSize(1 << 20)),
        server=ServerConfig(port=0),
        cluster=ClusterConfig(peers=(f"127.0.0.1:{free_port()}",), lookup_timeout=0.5),
        tier=tier_config,
    )
    two: RunningServer = await nursery.start(serve, config)
    url = f"{two.http_url}/streams/song"
    reply = await trio.to_thread.run_sync(lambda: httpx.get(url, follow_redirects=False))
    assert reply.status_code == 200
    assert reply.content == data
    async with connect(two.url) as client:
        assert (await client.stat("song")).location in {"remote", "local+remote"}
    two.shutdown()
