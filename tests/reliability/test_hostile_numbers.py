"""Test 7, hostile numbers, and "no data leaks": every numeric argument of the manager takes
{-1, -2**63, 2**63-1, 2**64, end, end+1, 0} and non-integers; only defined errors come back
and no byte past the written end is ever returned, though the file reserves far more.
(Over the wire: tests/reliability/test_wire_hostile.py.)"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from faulty import load_backend, one_backend

from mmstream.cache import KiB, MiB
from mmstream.config import ByteSize, CacheConfig
from mmstream.errors import (
    ChecksumMismatchError,
    InvalidArgumentError,
    MmstreamError,
    OffsetConflictError,
)
from mmstream.streams import StreamManager, StreamStatus, open_stream_manager

END = 1000
VALUES: list[Any] = [-1, -(2**63), 2**63 - 1, 2**64, END, END + 1, 0, 1, END - 1]
NOT_INTS: list[Any] = [None, True, 1.5, "10", b"10", [1]]
#: The errors a hostile number may get: each has a wire code, none is a traceback.
DEFINED = (InvalidArgumentError, OffsetConflictError, ChecksumMismatchError)


def config_for(directory: Path, backend: str) -> CacheConfig:
    return CacheConfig(
        directory=directory, backend=backend, initial_size=ByteSize(1 * MiB),
        sync_policy="finalize", sync_interval=3600.0,
    )  # fmt: skip


async def outcome(
    call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
) -> tuple[str, Any]:
    try:
        return "ok", await call(*args, **kwargs)
    except DEFINED as exc:
        return exc.code, None
    except MmstreamError as exc:  # any other mmstream error is not expected here
        raise AssertionError(f"undefined outcome {exc.code}: {exc}") from exc


async def follow(manager: StreamManager, sid: str, offset: Any) -> Any:
    with trio.move_on_after(0.05):  # a follower past the end waits, as it should
        return await manager.wait_for_data(sid, offset)
    return "waits"


async def hostile_round(manager: StreamManager, sid: str, data: bytes) -> dict[str, int]:
    """Every hostile combination against one stream; returns a count per outcome."""
    counts: dict[str, int] = {}

    def count(code: str) -> None:
        counts[code] = counts.get(code, 0) + 1

    for offset, length in itertools.product(VALUES + NOT_INTS, VALUES + NOT_INTS):
        code, got = await outcome(manager.read, sid, offset, length)
        count(code)
        if code == "ok":
            assert isinstance(offset, int) and isinstance(length, int)
            assert got == data[offset : offset + length], (offset, length)
            assert offset + len(got) <= END
    for value in VALUES + NOT_INTS:
        code, got = await outcome(follow, manager, sid, value)
        code = "waits" if got == "waits" else code
        count(code)
        uploading = manager.stat(sid).status is StreamStatus.UPLOADING
        assert code != "waits" or (uploading and value >= END)
        if manager.stat(sid).status is StreamStatus.UPLOADING:
            code, got = await outcome(manager.append, sid, b"", expected_offset=value)
            count(code)
            assert code == "ok" or manager.stat(sid).size == END
            code, _ = await outcome(manager.finalize, sid, expected_size=value)
            count(code)
            assert code != "ok" or value in (END, None)  # None: no expectation given
            if code == "ok":  # only the true size finalizes: back to a fresh upload
                await manager.delete(sid)
                await manager.create(sid)
                await manager.append(sid, data)
    assert manager.stat(sid).size == END
    return counts


async def test_hostile_numbers_get_defined_errors(
    ram_path: Path, backend: str, figure: Callable[[str, str, str], None]
) -> None:
    data = hashlib.sha256(b"x").digest() * (END // 32 + 1)
    data = data[:END]
    config = config_for(ram_path / "cache", backend)
    total: dict[str, int] = {}
    async with open_stream_manager(config, registry=one_backend(load_backend(backend))) as m:
        await m.create("s")
        await m.append("s", data)
        assert m.stat("s").reserved >= 1 * MiB  # far more reserved than written
        for counts in (await hostile_round(m, "s", data),):
            total.update(counts)
        await m.finalize("s")
        for code, n in (await hostile_round(m, "s", data)).items():
            total[code] = total.get(code, 0) + n
    calls = sum(total.values())
    shown = ", ".join(f"{n} {code}" for code, n in sorted(total.items()))
    figure(
        "7. Hostile numbers",
        f"{backend} backend: {{-1, -2**63, 2**63-1, 2**64, end, end+1, 0, 1, end-1}} and 6 "
        "non-integers for every offset/length/expected size of read, wait_for_data, append "
        f"and finalize on a {END}-byte stream with 1 MiB reserved, uploading and ready",
        f"{calls} calls: {shown}; 0 other outcomes, 0 bytes past the written end",
    )


async def test_no_bytes_of_a_deleted_stream_reappear(
    ram_path: Path, backend: str, figure: Callable[[str, str, str], None]
) -> None:
    secret = b"SECRET-AUDIO-" * (256 * KiB // 13)
    config = config_for(ram_path / "cache", backend)
    registry = one_backend(load_backend(backend))
    checked = 0
    async with open_stream_manager(config, registry=registry) as manager:
        for sid in ("old", "other"):
            await manager.create(sid)
            await manager.append(sid, secret)
            await manager.finalize(sid)
        await manager.delete("old")
        await manager.delete("other")
        for sid in ("old", "new"):  # the same id again, and a new one
            await manager.create(sid)
            await manager.append(sid, b"fresh")
            size = manager.stat(sid).size
            reserved = manager.stat(sid).reserved
            assert size == 5 and reserved >= 256 * KiB
            for offset in range(0, 6):
                got = await manager.read(sid, offset, reserved)
                assert got == b"fresh"[offset:]
                checked += 1
            # On disk too: the reserved tail is zeros, never the old bytes.
            raw = (config.directory / f"{sid}.data").read_bytes()
            assert b"SECRET" not in raw and raw[5:] == bytes(len(raw) - 5)
            checked += 1
    # After a restart (the shutdown flushed them) the uploads serve their 5 bytes only.
    async with open_stream_manager(config, registry=registry) as manager:
        for sid in ("old", "new"):
            assert manager.stat(sid).size == 5
            assert await manager.read(sid, 0, 2 * MiB) == b"fresh"
            assert os.stat(config.directory / f"{sid}.data").st_size == 5  # tail cut
    figure(
        "7. Hostile numbers",
        f"{backend} backend (no data leaks): 2 streams of 256 KiB deleted, the same and a new "
        "id created with 1 MiB reserved and 5 bytes written; reads across the reservation, "
        "the raw files, and a restart",
        f"{checked} reads and file checks: 0 bytes of the deleted streams, 0 bytes past the "
        "written end, before and after a restart",
    )
