"""A real server on a free loopback port, in the test's own Trio nursery, for the client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from client_support import StartServer

from mmstream.config import ByteSize, CacheConfig, Config, ServerConfig
from mmstream.registry import BackendRegistry
from mmstream.server import RunningServer, serve

BACKENDS = [name for name in ("file", "mmap") if name in BackendRegistry().names()]


@pytest.fixture
def start_server(nursery: trio.Nursery, tmp_path: Path) -> StartServer:
    """``await start_server(backend="mmap", max_cache_size=..., **server_keys)``."""
    count = 0

    async def start(*, backend: str = "mmap", **keys: Any) -> RunningServer:
        nonlocal count
        count += 1
        cache_keys = {k: keys.pop(k) for k in ("max_cache_size", "on_full") if k in keys}
        config = Config(
            cache=CacheConfig(
                directory=tmp_path / f"cache{count}",
                backend=backend,
                initial_size=ByteSize(1 << 20),
                **cache_keys,
            ),
            server=ServerConfig(port=0, **keys),
        )
        server: RunningServer = await nursery.start(serve, config)
        return server

    return start


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def server(start_server: StartServer, backend: str) -> RunningServer:
    return await start_server(backend=backend)


@pytest.fixture
async def one_server(start_server: StartServer) -> RunningServer:
    """For tests about the client rather than storage: the default backend only."""
    return await start_server(backend=BACKENDS[-1])
