"""A real server: in the test's Trio run (``server``), or an ``mmstream serve`` process for
the player and cache tests (``server_process``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from serve_process import serve_process

from mmstream.config import CacheConfig, Config, ServerConfig
from mmstream.server import RunningServer, serve


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> RunningServer:
    config = Config(cache=CacheConfig(directory=tmp_path / "cache"), server=ServerConfig(port=0))
    running: RunningServer = await nursery.start(serve, config)
    return running


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[str]:
    """``mmstream serve`` in a subprocess on a free port; yields its http:// base URL."""
    with serve_process(tmp_path) as base:
        yield base
