"""Group commit and the journal: many flushes or finalizes, one metadata commit."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio

from mmstream.cache import KiB
from mmstream.config import CacheConfig
from mmstream.streams import StreamStatus, _journal, open_stream_manager

CLIP = 16 * KiB


def _clip(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest() * (CLIP // 32)


def _crash_copy(config: CacheConfig, tmp_path: Path) -> CacheConfig:
    """The directory as a kill -9 leaves it (the page cache's view), to recover elsewhere."""
    copy = tmp_path / "after-crash"
    shutil.copytree(config.directory, copy)
    return attrs.evolve(config, directory=copy)


async def test_concurrent_finalizes_share_one_commit(
    configure: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    """Regression test (issue 19, group commit): 16 clips finalized together cost one
    metadata commit (on main, 16 sidecar commits)."""
    config = configure(sync_policy="finalize", initial_size=CLIP)
    count = 16
    async with open_stream_manager(config) as manager:
        for n in range(count):
            await manager.create(f"clip{n}")
            await manager.append(f"clip{n}", _clip(n))
        before = manager.commit_statistics()
        async with trio.open_nursery() as nursery:
            for n in range(count):
                nursery.start_soon(manager.finalize, f"clip{n}")
        after = manager.commit_statistics()
        assert (after.commits - before.commits, after.requests - before.requests) == (1, count)
        crashed = _crash_copy(config, tmp_path)
    for cfg in (crashed, config):  # from the journal alone, and after a clean shutdown
        async with open_stream_manager(cfg) as manager:
            for n in range(count):
                info = manager.stat(f"clip{n}")
                assert info.status is StreamStatus.READY
                assert info.sha256 == hashlib.sha256(_clip(n)).hexdigest()


async def test_finalizes_committed_one_batch_after_another_all_survive_a_crash(
    configure: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    """Clips hashed inline commit first; larger ones, hashed in worker threads, arrive
    while that commit runs and form the next batch, whose journal must still hold the
    first batch's streams as READY (it once took them for uploads: their tasks had not
    resumed yet)."""
    config = configure(sync_policy="finalize", sync_interval=3600.0)
    sizes = {f"s{n}": (CLIP if n % 2 else 300 * KiB) for n in range(16)}
    async with open_stream_manager(config) as manager:
        for sid, size in sizes.items():
            await manager.create(sid)
            await manager.append(sid, bytes(size))
        before = manager.commit_statistics()
        async with trio.open_nursery() as nursery:
            for sid in sizes:
                nursery.start_soon(manager.finalize, sid)
        assert manager.commit_statistics().commits - before.commits >= 2
        crashed = _crash_copy(config, tmp_path)
    async with open_stream_manager(crashed) as manager:
        for sid, size in sizes.items():
            info = manager.stat(sid)
            assert (info.status, info.size) == (StreamStatus.READY, size), sid


async def test_a_durability_round_is_one_commit(
    configure: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    """Regression test (issue 14, item 9): a round with 50 uploads flushes them in one
    group commit (one journal write, no sidecar rewritten); recovery reads the journal."""
    config = configure(sync_policy="interval", sync_interval=3600.0)
    async with open_stream_manager(config) as manager:
        for n in range(50):
            await manager.create(f"up{n}")
            await manager.append(f"up{n}", _clip(n)[: 1000 + n])
        sidecars = {p.name: p.read_bytes() for p in config.directory.glob("*.json")}
        before = manager.commit_statistics()
        await manager.housekeep()
        after = manager.commit_statistics()
        assert (after.commits - before.commits, after.requests - before.requests) == (1, 50)
        assert all(info.durable_offset == info.size for info in manager.list())
        assert {p.name: p.read_bytes() for p in config.directory.glob("*.json")} == sidecars
        journal = json.loads((config.directory / "mmstream.journal").read_bytes())
        assert len(journal["streams"]) == 50
        (config.directory / "up7.sum").unlink()  # so only the journal can say 1007
        crashed = _crash_copy(config, tmp_path)
    async with open_stream_manager(crashed) as manager:
        for n in range(50):
            info = manager.stat(f"up{n}")
            assert (info.status, info.durable_offset, info.size) == (
                StreamStatus.UPLOADING,
                1000 + n,
                1000 + n,
            )
    assert not (crashed.directory / "mmstream.journal").exists()  # all in sidecars now


async def test_a_journal_entry_of_an_earlier_incarnation_is_not_applied(
    configure: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    config = configure(sync_policy="interval", sync_interval=3600.0)
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", b"old incarnation")
        await manager.flush("s")  # the journal says: s durable at 15
        await manager.delete("s")
        await manager.create("s")
        crashed = _crash_copy(config, tmp_path)
    journal = json.loads((crashed.directory / "mmstream.journal").read_bytes())
    assert journal["streams"]["s"]["durable_offset"] == 15
    async with open_stream_manager(crashed) as manager:
        info = manager.stat("s")
        assert (info.status, info.size, info.durable_offset) == (StreamStatus.UPLOADING, 0, 0)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"format": "other"}', b'{"format": "mmstream-journal", "version": 9}',
     b'{"format": "mmstream-journal", "version": 1, "streams": {"s": {"status": "error"}}}'],
)  # fmt: skip
async def test_an_untrustworthy_journal_is_ignored(
    configure: Callable[..., CacheConfig], content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    config = configure()
    async with open_stream_manager(config) as manager:
        await manager.create("s")
        await manager.append("s", b"bytes")
    (config.directory / "mmstream.journal").write_bytes(content)
    async with open_stream_manager(config) as manager:
        assert manager.stat("s").size == 5
    assert "using the sidecars alone" in caplog.text


@pytest.mark.parametrize("one_round", [False, True], ids=["commit-each", "one-round"])
async def test_a_journal_at_its_bound_still_recovers_every_stream(
    configure: Callable[..., CacheConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_round: bool,
) -> None:
    """Regression test (journal bound): with more lagging streams than the journal's bound
    holds (one commit each, half of them finalizes; or one round whose batch alone is too
    many), a commit brings sidecars up to date instead of writing a journal recovery refuses
    (on main the journal grew past it and, after a crash, READY streams came back UPLOADING
    and uploads lost their durable offsets)."""
    bound = 4 * KiB  # about a dozen entries
    monkeypatch.setattr(_journal, "MAX_JOURNAL_BYTES", bound)
    policy = "interval" if one_round else "finalize"
    config = configure(sync_policy=policy, sync_interval=3600.0)
    journal, count = config.directory / "mmstream.journal", 40
    ready = {f"s{n}" for n in range(count) if n % 2 and not one_round}
    async with open_stream_manager(config) as manager:
        for n in range(count):
            await manager.create(f"s{n}")
            await manager.append(f"s{n}", _clip(n)[: 1000 + n])
            if f"s{n}" in ready:
                await manager.finalize(f"s{n}")
            elif not one_round:
                await manager.flush(f"s{n}")
            assert not journal.exists() or journal.stat().st_size <= bound
        if one_round:
            await manager.housekeep()
        for n in range(count):
            (config.directory / f"s{n}.sum").unlink(missing_ok=True)  # only the records say
        assert not journal.exists() or journal.stat().st_size <= bound
        crashed = _crash_copy(config, tmp_path)
    async with open_stream_manager(crashed) as manager:
        for n in range(count):
            info = manager.stat(f"s{n}")
            status = StreamStatus.READY if f"s{n}" in ready else StreamStatus.UPLOADING
            assert (info.status, info.durable_offset, info.size) == (status, 1000 + n, 1000 + n)
