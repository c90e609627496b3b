"""Fault injection: a real backend whose flush/finalize/write fails on demand (the wrapper is
a test-only subclass; the bytes still go to real files)."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio

from mmstream.cache import CacheFactory, KiB
from mmstream.config import CacheConfig
from mmstream.errors import NoSpaceError, NotUploadingError, StorageError
from mmstream.registry import BackendRegistry
from mmstream.streams import StreamStatus, open_stream_manager

SERVER_PATH = "/srv/private-layout/s.data"


class Faults:
    """Which backend calls fail next; shared with the worker threads the manager uses."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    def check(self, what: str) -> None:
        if what in self.failing:
            exc_type = NoSpaceError if what == "resize" else StorageError
            code = errno.ENOSPC if what == "resize" else errno.EIO
            # Like os_errors: the whole path for the log, only the failure for clients.
            raise exc_type(
                f"{what} {SERVER_PATH}: injected failure",
                errno=code,
                public=f"{what}: injected failure",
            )


def faulty_registry(backend: str, faults: Faults) -> BackendRegistry:
    base: Any = BackendRegistry().load(backend)

    class FaultyCache(base):  # type: ignore[misc]
        def flush(self) -> None:
            faults.check("flush")
            super().flush()

        def finalize(self, final_size: int) -> None:
            faults.check("finalize")
            super().finalize(final_size)

        def write(self, offset: int, data: Any) -> int:
            faults.check("write")
            return super().write(offset, data)  # type: ignore[no-any-return]

        def resize(self, new_size: int) -> None:
            faults.check("resize")
            super().resize(new_size)

    class OneBackend(BackendRegistry):
        def load(self, name: str) -> CacheFactory:
            return FaultyCache

    return OneBackend()


@pytest.fixture
def faults() -> Faults:
    return Faults()


async def test_failed_flush_is_never_a_success(
    configure: Callable[..., CacheConfig], backend: str, faults: Faults
) -> None:
    config = configure(sync_policy="always")
    registry = faulty_registry(backend, faults)
    async with open_stream_manager(config, registry=registry) as manager:
        await manager.create("s")
        await manager.append("s", b"durable")
        faults.failing.add("flush")
        with pytest.raises(StorageError, match="injected"):
            await manager.append("s", b" lost")
        info = manager.stat("s")
        assert info.status is StreamStatus.ERROR
        assert info.error is not None and "injected" in info.error
        assert info.durable_offset == 7
        faults.failing.clear()  # the disk "recovers": a retry must still not succeed
        with pytest.raises(NotUploadingError, match="error"):
            await manager.append("s", b"x")
        with pytest.raises(StorageError):
            await manager.flush("s")
        with pytest.raises(NotUploadingError):
            await manager.finalize("s")
        with pytest.raises(StorageError, match="quarantined"):
            await manager.read("s", 0, 1)
    # The sidecar still holds the last durable record: the upload resumes there.
    async with open_stream_manager(config, registry=registry) as manager:
        info = manager.stat("s")
        assert (info.status, info.size) == (StreamStatus.UPLOADING, 7)
        assert await manager.read("s", 0, 100) == b"durable"


async def test_failed_background_sync_puts_the_stream_in_error(
    configure: Callable[..., CacheConfig], backend: str, faults: Faults
) -> None:
    config = configure(sync_policy="interval", sync_interval=0.01)
    async with open_stream_manager(config, registry=faulty_registry(backend, faults)) as manager:
        await manager.create("s")
        await manager.create("healthy")
        faults.failing.add("flush")
        await manager.append("s", b"abc")
        with trio.fail_after(10):
            await manager.wait_for_data("s", 3)  # returns once the stream leaves UPLOADING
        assert manager.stat("s").status is StreamStatus.ERROR
        with pytest.raises(NotUploadingError):
            await manager.append("s", b"x")
        faults.failing.clear()
        await manager.append("healthy", b"abc")  # other streams keep working
        assert (await manager.flush("healthy")).durable_offset == 3


async def test_failed_finalize_does_not_go_ready(
    config: CacheConfig, backend: str, faults: Faults
) -> None:
    async with open_stream_manager(config, registry=faulty_registry(backend, faults)) as manager:
        await manager.create("s")
        await manager.append("s", b"abc")
        faults.failing.add("finalize")
        with pytest.raises(StorageError):
            await manager.finalize("s")
        assert manager.stat("s").status is StreamStatus.ERROR
        assert manager.stat("s").sha256 is None


async def test_write_failure_is_an_error_but_no_space_is_retryable(
    configure: Callable[..., CacheConfig], backend: str, faults: Faults
) -> None:
    config = configure(initial_size=4 * KiB)
    async with open_stream_manager(config, registry=faulty_registry(backend, faults)) as manager:
        await manager.create("full")
        await manager.append("full", b"x" * 4 * KiB)
        faults.failing.add("resize")
        with pytest.raises(NoSpaceError):
            await manager.append("full", b"y" * 100)  # needs growth: the disk is "full"
        info = manager.stat("full")
        assert (info.status, info.size) == (StreamStatus.UPLOADING, 4 * KiB)
        faults.failing.clear()
        assert await manager.append("full", b"y" * 100) == 4 * KiB + 100

        await manager.create("broken")
        faults.failing.add("write")
        with pytest.raises(StorageError):
            await manager.append("broken", b"abc")
        assert manager.stat("broken").status is StreamStatus.ERROR
        assert manager.stat("full").status is StreamStatus.UPLOADING


async def test_a_failed_stream_tells_clients_no_server_path(
    configure: Callable[..., CacheConfig],
    backend: str,
    faults: Faults,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``stat`` shows a stream's error to clients, and a refused append quotes it: both say
    what failed, never where the server keeps its files; the log has the path."""
    config = configure(sync_policy="always")
    with caplog.at_level(logging.WARNING, logger="mmstream"):
        async with open_stream_manager(
            config, registry=faulty_registry(backend, faults)
        ) as manager:
            await manager.create("s")
            faults.failing.add("flush")
            with pytest.raises(StorageError):
                await manager.append("s", b"abc")
            error = manager.stat("s").error
            assert error is not None and "flush: injected failure" in error
            assert "private-layout" not in error
            with pytest.raises(NotUploadingError) as refused:
                await manager.append("s", b"x")
            assert "private-layout" not in str(refused.value)
    assert SERVER_PATH in caplog.text
