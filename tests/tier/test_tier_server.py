"""The tier inside the real server: started by ``serve`` when ``[tier]`` is on."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from mmstream.client import connect
from mmstream.config import ByteSize, CacheConfig, Config, ServerConfig, TierConfig
from mmstream.server import RunningServer, serve


async def start(nursery: trio.Nursery, directory: Path, tier: TierConfig) -> RunningServer:
    config = Config(
        cache=CacheConfig(directory=directory, initial_size=ByteSize(1 << 20)),
        server=ServerConfig(port=0),
        tier=tier,
    )
    server: RunningServer = await nursery.start(serve, config)
    return server


async def test_stat_shows_where_a_stream_lives(
    nursery: trio.Nursery, tmp_path: Path, tier_config: TierConfig
) -> None:
    server = await start(nursery, tmp_path / "c", tier_config)
    data = os.urandom(300_000)
    async with connect(server.url) as client:
        stat = await client.upload("song", data, content_type="audio/mpeg")
        assert stat.location == "local"
        with trio.fail_after(30):
            for _ in range(10_000):
                if (await client.stat("song")).location == "local+remote":
                    break
                await trio.sleep(0.05)
        assert await client.read("song", 0, len(data)) == data
    server.shutdown()
