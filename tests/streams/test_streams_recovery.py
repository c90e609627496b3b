"""A new manager on the same directory recovers every stream, including after kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest
from streams_support import run_then_kill_9

from mmstream.cache import KiB, MiB
from mmstream.config import CacheConfig
from mmstream.errors import NotUploadingError, StorageError, StreamNotFoundError
from mmstream.streams import StreamStatus, _checksums, open_stream_manager


def _pattern(size: int) -> bytes:
    return (hashlib.sha256(b"seed").digest() * (size // 32 + 1))[:size]


async def test_ready_streams_come_back_byte_identical(config: CacheConfig) -> None:
    data = _pattern(3 * MiB + 5)  # past several 1 MiB segments
    async with open_stream_manager(config) as manager:
        await manager.create("done", content_type="audio/mpeg", metadata={"k": "v"})
        await manager.append("done", data)
        before = await manager.finalize("done")
    async with open_stream_manager(config) as manager:
        after = manager.stat("done")
        assert after == before
        assert await manager.read("done", 0, len(data)) == data
        assert os.stat(config.directory / "done.data").st_size == len(data)


async def test_uploads_resume_after_a_clean_restart(config: CacheConfig) -> None:
    async with open_stream_manager(config) as manager:
        await manager.create("up")
        await manager.append("up", b"first ")
    async with open_stream_manager(config) as manager:
        info = manager.stat("up")
        assert (info.status, info.size, info.durable_offset) == (StreamStatus.UPLOADING, 6, 6)
        await manager.append("up", b"second", expected_offset=6)
        await manager.finalize("up", sha256=hashlib.sha256(b"first second").hexdigest())
    async with open_stream_manager(config) as manager:
        assert await manager.read("up", 0, 100) == b"first second"


_CRASHING_WRITER = textwrap.dedent(
    """
    import sys, trio
    from pathlib import Path
    from mmstream.config import CacheConfig, MmapConfig
    from mmstream.streams import open_stream_manager

    async def main(directory, backend):
        config = CacheConfig(directory=Path(directory), backend=backend, initial_size=4096,
                             mmap=MmapConfig(segment_size=1 << 20), sync_policy="finalize")
        async with open_stream_manager(config) as manager:
            await manager.create("done")
            await manager.append("done", b"finished " * 1000)
            await manager.finalize("done")
            await manager.create("up")
            await manager.append("up", b"durable " * 1000)
            await manager.flush("up")
            await manager.append("up", b"acknowledged but never flushed " * 1000)
            await manager.create("fresh")
            print("written", flush=True)
            await trio.sleep(60)

    trio.run(main, *sys.argv[1:])
    """
)


async def test_kill_9_keeps_ready_streams_and_every_acknowledged_byte(
    config: CacheConfig, backend: str
) -> None:
    """Regression test (issue 14, item 8): the bytes acknowledged past the durable offset
    survive kill -9, shown intact by their checksum record (on main they were cut)."""
    run_then_kill_9(_CRASHING_WRITER, str(config.directory), backend)
    durable = b"durable " * 1000
    acked = durable + b"acknowledged but never flushed " * 1000
    async with open_stream_manager(config) as manager:
        done = manager.stat("done")
        assert done.status is StreamStatus.READY
        assert done.sha256 == hashlib.sha256(b"finished " * 1000).hexdigest()
        assert await manager.read("done", 0, 10**6) == b"finished " * 1000
        up = manager.stat("up")
        assert (up.status, up.size, up.durable_offset) == (
            StreamStatus.UPLOADING,
            len(acked),
            len(durable),
        )
        assert await manager.read("up", 0, 10**6) == acked
        assert os.stat(config.directory / "up.data").st_size == len(acked)  # reservation cut
        assert manager.stat("fresh").size == 0
        await manager.append("up", b"resumed", expected_offset=len(acked))
        await manager.finalize("up", expected_size=len(acked) + 7)
        assert await manager.read("up", 0, 10**6) == acked + b"resumed"
    assert not (config.directory / "up.sum").exists()


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


_DURABLE = len(b"durable " * 1000)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda d: (d / "up.sum").unlink(), id="checksum-missing"),
        pytest.param(lambda d: _truncate(d / "up.sum", 0), id="checksum-empty"),
        pytest.param(lambda d: _truncate(d / "up.sum", 20), id="checksum-short"),
        pytest.param(lambda d: _flip(d / "up.sum", 9), id="checksum-torn"),
        pytest.param(lambda d: _flip(d / "up.sum", 25), id="checksum-seal-torn"),
        pytest.param(lambda d: _flip(d / "up.data", _DURABLE + 5000), id="data-torn"),
        pytest.param(lambda d: _truncate(d / "up.data", _DURABLE + 100), id="data-short"),
        pytest.param(
            lambda d: (d / "up.data").write_bytes(
                (d / "up.data").read_bytes()[:_DURABLE] + bytes(31_000)
            ),
            id="data-zeros",
        ),
    ],
)
async def test_bytes_past_the_durable_offset_not_proven_intact_are_cut(
    config: CacheConfig, backend: str, tamper: object
) -> None:
    """What a power cut can leave: a missing, short or torn checksum record, or data torn,
    missing or never written (zeros); the upload comes back at its durable offset, never
    with a byte the client did not send."""
    run_then_kill_9(_CRASHING_WRITER, str(config.directory), backend)
    tamper(config.directory)  # type: ignore[operator]
    async with open_stream_manager(config) as manager:
        up = manager.stat("up")
        assert (up.status, up.size, up.durable_offset) == (
            StreamStatus.UPLOADING,
            _DURABLE,
            _DURABLE,
        )
        assert await manager.read("up", 0, 10**6) == b"durable " * 1000
        await manager.append("up", b"resumed", expected_offset=_DURABLE)  # and it goes on
    async with open_stream_manager(config) as manager:
        assert manager.stat("up").size == _DURABLE + 7


async def _make(config: CacheConfig, ready: bool = True) -> None:
    async with open_stream_manager(config) as manager:
        for sid in ("good", "victim"):
            await manager.create(sid)
            await manager.append(sid, f"{sid} bytes".encode())
            if ready:
                await manager.finalize(sid)


def _edit_sidecar(path: Path, **changes: object) -> None:
    record = json.loads(path.read_bytes())
    record.update(changes)
    path.write_text(json.dumps(record))


def _truncate(path: Path, size: int) -> None:
    os.truncate(path, size)


@pytest.mark.parametrize(
    ("ready", "tamper", "reason"),
    [
        (True, lambda d: _truncate(d / "victim.data", 3), "data file is 3 bytes"),
        (
            True,
            lambda d: (d / "victim.data").write_bytes(b"victim bytes!"),
            "data file is 13 bytes",
        ),
        (False, lambda d: _truncate(d / "victim.data", 3), "below the durable offset"),
        (True, lambda d: (d / "victim.data").unlink(), "data file missing"),
        (True, lambda d: (d / "victim.json").write_text("{not json"), "malformed"),
        (True, lambda d: (d / "victim.json").write_bytes(b"\xff\xfe"), "malformed"),
        (True, lambda d: (d / "victim.json").write_text("[" * 100_000), "malformed"),
        (True, lambda d: (d / "victim.json").write_text("x" * 300_000), "larger than"),
        (True, lambda d: _edit_sidecar(d / "victim.json", version=99), "version 99"),
        (True, lambda d: _edit_sidecar(d / "victim.json", version=0), "version 0"),
        (True, lambda d: _edit_sidecar(d / "victim.json", version="2"), "version '2'"),
        (True, lambda d: _edit_sidecar(d / "victim.json", version=True), "version True"),
        (True, lambda d: _edit_sidecar(d / "victim.json", generation="ABC"), "malformed"),
        (True, lambda d: _edit_sidecar(d / "victim.json", generation=7), "malformed"),
        # A version 1 sidecar has no generation: one that has one is not version 1.
        (True, lambda d: _edit_sidecar(d / "victim.json", version=1), "unexpected"),
        (True, lambda d: _edit_sidecar(d / "victim.json", stream_id="good"), "another stream"),
        (True, lambda d: _edit_sidecar(d / "victim.json", durable_offset=-1), "malformed"),
        (True, lambda d: _edit_sidecar(d / "victim.json", durable_offset="12"), "malformed"),
        (True, lambda d: _edit_sidecar(d / "victim.json", status="gone"), "malformed"),
        (True, lambda d: _edit_sidecar(d / "victim.json", metadata={"k": 1}), "malformed"),
        (True, lambda d: _edit_sidecar(d / "victim.json", extra=1), "unexpected"),
        (True, lambda d: _edit_sidecar(d / "victim.json", status="error", error="x"), "x"),
    ],
)
async def test_untrustworthy_streams_are_quarantined(
    config: CacheConfig, ready: bool, tamper: object, reason: str
) -> None:
    await _make(config, ready)
    tamper(config.directory)  # type: ignore[operator]
    async with open_stream_manager(config) as manager:
        good, victim = manager.stat("good"), manager.stat("victim")
        assert await manager.read("good", 0, 100) == b"good bytes"
        assert good.status is (StreamStatus.READY if ready else StreamStatus.UPLOADING)
        assert victim.status is StreamStatus.ERROR
        assert victim.error is not None and reason in victim.error
        with pytest.raises(StorageError, match="quarantined"):
            await manager.read("victim", 0, 1)
        with pytest.raises(NotUploadingError):
            await manager.append("victim", b"x")
    async with open_stream_manager(config) as manager:
        assert manager.stat("victim").status is StreamStatus.ERROR  # the verdict is stable
        await manager.delete("victim")  # and deleting reclaims it
        with pytest.raises(StreamNotFoundError):
            manager.stat("victim")
    kept = ["good.data", "good.json"] + ([] if ready else ["good.sum"])
    assert sorted(os.listdir(config.directory)) == kept


async def test_leftovers_are_removed_or_ignored(config: CacheConfig) -> None:
    await _make(config)
    d = config.directory
    (d / "victim.json").unlink()  # a delete that stopped after its commit point
    (d / "orphan.data").write_bytes(b"never acknowledged")  # a create that never finished
    (d / "good.json.tmp").write_text("{half a record")  # an interrupted sidecar write
    (d / "notes.txt").write_text("someone else's file")
    (d / "..json").write_text("")  # not a stream id
    async with open_stream_manager(config) as manager:
        assert [info.stream_id for info in manager.list()] == ["good"]
    assert sorted(os.listdir(d)) == ["..json", "good.data", "good.json", "notes.txt"]


async def test_planted_symlinks_are_never_followed(config: CacheConfig, tmp_path: Path) -> None:
    await _make(config)
    outside = tmp_path / "outside"
    outside.write_bytes(b"victim bytes")  # same length as the real data
    d = config.directory
    (d / "victim.data").unlink()
    (d / "victim.data").symlink_to(outside)
    (d / "planted.data").symlink_to(outside)
    (d / "planted.json").symlink_to(d / "good.json")
    async with open_stream_manager(config) as manager:
        assert manager.stat("victim").status is StreamStatus.ERROR
        assert "not a regular file" in (manager.stat("victim").error or "")
        assert manager.stat("planted").status is StreamStatus.ERROR
        await manager.delete("victim")
        await manager.delete("planted")
        assert await manager.read("good", 0, 100) == b"good bytes"
    assert outside.read_bytes() == b"victim bytes"
    assert (d / "good.json").exists()


async def test_appends_are_checksummed_by_isa_l_with_zlibs_crc32(
    config: CacheConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every appended frame goes once through ISA-L's CRC-32 (``isal``, many times zlib's
    speed: docs/performance.md), and the record holds zlib's CRC-32 of the bytes, so records
    written before the change still verify. Regression test: on main appends hashed with
    zlib, and ``_checksums`` had no ``crc32`` of its own to count."""
    sizes: list[int] = []
    real = _checksums.crc32

    def counting(data: Any, value: int = 0) -> int:
        sizes.append(memoryview(data).nbytes)
        return real(data, value)

    monkeypatch.setattr(_checksums, "crc32", counting)
    frames = [_pattern(64 * KiB + seed) for seed in range(4)]
    async with open_stream_manager(config) as manager:
        await manager.create("up")
        await manager.append_many("up", frames)
        assert [size for size in sizes if size > 24] == [len(frame) for frame in frames]
        record = _checksums.decode_record((config.directory / "up.sum").read_bytes())
        assert record == (0, sum(map(len, frames)), zlib.crc32(b"".join(frames)))
