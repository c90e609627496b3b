"""The tier inside the real server: started by ``serve`` when ``[tier]`` is on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from tier_moto import free_port

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


async def test_an_unreachable_bucket_at_start_is_a_warning_not_a_failure(
    nursery: trio.Nursery, tmp_path: Path, aws_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Degraded mode: the server starts, serves local streams, and says why in one line."""
    tier = TierConfig(enabled=True, endpoint=f"http://127.0.0.1:{free_port()}",
                      bucket="away", request_timeout=0.5)  # fmt: skip
    server = await start(nursery, tmp_path / "c", tier)
    warnings = [r.getMessage() for r in caplog.records if r.name == "mmstream.tier"]
    assert any("cannot be reached" in line for line in warnings), warnings
    assert all("testing-secret" not in line and "\n" not in line for line in warnings)
    data = os.urandom(50_000)
    async with connect(server.url) as client:
        stat = await client.upload("local-only", data)
        assert stat.location == "local"
        assert await client.read("local-only", 0, len(data)) == data
    server.shutdown()
