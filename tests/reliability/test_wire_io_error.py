"""A failed sync over the wire: the client gets ``io-error``, never a false success, and the
stream is in ERROR afterwards (the fsyncgate rule, seen from a client)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import trio
from faulty import FailingOs

from mmstream.client import connect
from mmstream.config import CacheConfig, Config, ServerConfig
from mmstream.errors import NotUploadingError, StorageError
from mmstream.server import RunningServer, serve


@pytest.fixture(params=["file", "mmap"])
async def server(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest
) -> RunningServer:
    """A server on each backend, syncing only when asked (no round meets the failures)."""
    config = Config(
        cache=CacheConfig(
            directory=tmp_path / "cache", backend=request.param, sync_policy="finalize"
        ),
        server=ServerConfig(port=0),
    )
    running: RunningServer = await nursery.start(serve, config)
    return running


async def test_a_failed_sync_is_an_io_error_reply(server: RunningServer) -> None:
    async with connect(server.url) as client:
        await client.create("s")
        await client.append("s", b"x" * 100_000)
        failing = FailingOs(fail_at=1, fail_errno=errno.EIO)
        with failing.installed(), pytest.raises(StorageError) as info:
            await client.sync("s")
        assert info.value.code == "io-error"
        assert failing.failed, "the injected failure did not happen"
        stat = await client.stat("s")
        assert stat.status == "error" and stat.durable_offset == 0
        # Never retried into a success: every later sync, finalize or write is refused and
        # carries the original reason.
        for later in (client.sync("s"), client.finalize("s"), client.append("s", b"more")):
            with pytest.raises((StorageError, NotUploadingError), match="Input/output error"):
                await later


async def test_a_failed_write_of_an_upload_frame_is_reported_for_that_frame(
    server: RunningServer,
) -> None:
    """A frame that arrives while the session waits is written by the task that read it
    off the socket; when that write fails, the client gets the write's own error
    (``io-error``), not the ``not-uploading`` the failed stream answers from then on."""
    async with connect(server.url) as client:
        await client.create("s")
        assert await client.append("s", b"a" * 1000) == 1000
        failing = FailingOs(fail_at=1, fail_errno=errno.EIO, functions=("pwrite", "pwritev"))
        with failing.installed(), pytest.raises(StorageError) as info:
            await client.append("s", b"b" * 1000)
        assert info.value.code == "io-error", info.value
        assert failing.failed, "the injected failure did not happen"
        stat = await client.stat("s")
        assert (stat.status, stat.size) == ("error", 1000)
