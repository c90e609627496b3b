"""The writer lease: one writer per stream, decided in the manager whatever the route."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from mmstream.config import CacheConfig
from mmstream.errors import (
    NotUploadingError,
    StreamBusyError,
    StreamChangedError,
    StreamNotFoundError,
)
from mmstream.streams import StreamStatus, open_stream_manager


async def test_the_lease_holder_is_the_only_writer(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        lease = manager.acquire_writer("s", "first")
        assert await manager.append("s", b"abc", writer=lease) == 3
        with pytest.raises(StreamBusyError):
            manager.acquire_writer("s", "second")
        with pytest.raises(StreamBusyError):
            await manager.append("s", b"no lease")
        with pytest.raises(StreamBusyError):
            await manager.append_many("s", [b"no", b"lease"])
        with pytest.raises(StreamBusyError):
            await manager.finalize("s")
        assert await manager.append_many("s", [b"de", b"f"], writer=lease) == 6
        assert manager.stat("s").size == 6
        lease.release()
        lease.release()  # idempotent
        assert not lease.held
        with pytest.raises(StreamBusyError):
            await manager.append("s", b"a released lease", writer=lease)
        second = manager.acquire_writer("s", "second")
        info = await manager.finalize("s", writer=second)
        assert (info.status, info.size) == (StreamStatus.READY, 6)
        assert not second.held  # a finalized stream has no writer
        with pytest.raises(NotUploadingError):
            manager.acquire_writer("s", "late")


async def test_an_idle_lease_is_taken_over_after_writer_timeout(
    configure: Callable[..., CacheConfig],
) -> None:
    async with open_stream_manager(configure(writer_timeout=0.05)) as manager:
        await manager.create("s")
        idle = manager.acquire_writer("s", "idle")
        await manager.append("s", b"a", writer=idle)
        with pytest.raises(StreamBusyError):
            manager.acquire_writer("s", "new")
        await trio.sleep(0.1)
        new = manager.acquire_writer("s", "new")
        assert not idle.held and new.held
        with pytest.raises(StreamBusyError, match="taken over"):
            await manager.append("s", b"late", writer=idle)
        idle.release()  # releases nothing: the new writer keeps the stream
        assert new.held
        assert await manager.append("s", b"b", writer=new) == 2


async def test_a_lease_does_not_outlive_its_stream(config: CacheConfig) -> None:
    """The lease names its stream's generation: once the stream is deleted, every write
    and the finalize with it are refused by the identity check (never ``busy``)."""
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        old = manager.acquire_writer("s", "old")
        await manager.delete("s")
        with pytest.raises(StreamNotFoundError, match="no stream s"):
            await manager.append("s", b"into nothing", writer=old)
        await manager.create("s")  # the same id, a new stream
        with pytest.raises(StreamChangedError):
            await manager.append("s", b"into the new one", writer=old)
        with pytest.raises(StreamChangedError):
            await manager.append_many("s", [b"into", b"the new one"], writer=old)
        with pytest.raises(StreamChangedError):
            await manager.finalize("s", writer=old)
        new = manager.acquire_writer("s", "new")  # the old lease holds nothing
        assert await manager.append("s", b"x", writer=new) == 1
