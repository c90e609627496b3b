from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from server_helpers import TRANSPORTS, make_config

from mmstream.server import RunningServer, serve


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def server(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> AsyncIterator[RunningServer]:
    running: RunningServer = await nursery.start(serve, make_config(tmp_path / "cache", transport))
    yield running
