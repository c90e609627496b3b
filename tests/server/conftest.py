from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from server_helpers import TRANSPORTS

from mmstream.config import ByteSize, CacheConfig, Config, ServerConfig
from mmstream.server import RunningServer, serve


def make_config(cache_dir: Path, transport: str = "websockets", **server: Any) -> Config:
    return Config(
        cache=CacheConfig(directory=cache_dir, initial_size=ByteSize(1 << 20)),
        server=ServerConfig(port=0, transport=transport, **server),
    )


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def server(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> AsyncIterator[RunningServer]:
    running: RunningServer = await nursery.start(serve, make_config(tmp_path / "cache", transport))
    yield running
