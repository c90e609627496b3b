"""What the time index costs the write path: appends with and without it, same process.

    .venv/bin/python bench/time_index.py [--streams 100] [--seconds 30] [--runs 5]

``--streams`` real-time uploads appended in turn through :meth:`StreamManager.append_now`
(the server's hot path), one MP3 frame (417 bytes, 26 ms) and one 64 KiB chunk per append,
with the manager's arrival marks on, then with :meth:`TimeIndexes.appended` replaced by a
no-op. The clock is faked to advance one frame per round, so marks (and their ``.idx``
writes, once per second of audio per stream) happen as often as in a real upload. Prints
nanoseconds per append and the ratio (median of ``--runs``). The media points cost the
write path nothing: they are built on the first seek (also timed: seconds to index an hour
of 128 kb/s MP3).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from mmstream.config import CacheConfig
from mmstream.streams import _timeindex, open_stream_manager

FRAME = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(413)
FRAME_SECONDS = 1152 / 44100


async def _appends(directory: Path, streams: int, rounds: int, chunk: bytes, on: bool) -> float:
    config = CacheConfig(directory=directory, initial_size=len(chunk) * (rounds + 1),
                         sync_policy="finalize", max_cache_size=1 << 40)  # fmt: skip
    clock = [1e9]
    real_time = _timeindex.time.time
    _timeindex.time.time = lambda: clock[0]  # type: ignore[method-assign]
    try:
        async with open_stream_manager(config) as manager:
            if not on:
                manager._times.appended = lambda *args: None  # type: ignore[method-assign]
            ids = [f"s{i}" for i in range(streams)]
            for sid in ids:
                await manager.create(sid, content_type="audio/mpeg")
            sizes = dict.fromkeys(ids, 0)
            started = time.perf_counter_ns()
            for _ in range(rounds):
                clock[0] += FRAME_SECONDS
                for sid in ids:
                    end = manager.append_now(sid, chunk, sizes[sid])
                    assert end is not None
                    sizes[sid] = end
            elapsed = time.perf_counter_ns() - started
            for sid in ids:
                await manager.delete(sid)
    finally:
        _timeindex.time.time = real_time  # type: ignore[method-assign]
    return elapsed / (streams * rounds)


async def _index_an_hour(directory: Path) -> float:
    config = CacheConfig(directory=directory, sync_policy="finalize")
    async with open_stream_manager(config) as manager:
        await manager.create("hour", content_type="audio/mpeg")
        frames = int(3600 / FRAME_SECONDS)
        for at in range(0, frames, 2400):
            await manager.append("hour", FRAME * min(2400, frames - at))
        started = time.perf_counter()
        await manager.seek("hour", seconds=1800.0)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rounds = int(args.seconds / FRAME_SECONDS)
    for name, chunk in (("417 B (one MP3 frame)", FRAME), ("64 KiB", bytes(65536))):
        results: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.runs):
            for on in (False, True):
                with tempfile.TemporaryDirectory() as tmp:
                    ns = trio.run(_appends, Path(tmp), args.streams, rounds, chunk, on)
                    results[on].append(ns)
        off, on_ = statistics.median(results[False]), statistics.median(results[True])
        print(f"append_now of {name}: {off:.0f} ns without marks, {on_:.0f} ns with "
              f"(x{on_ / off:.3f})")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        seconds = trio.run(_index_an_hour, Path(tmp))
    print(f"first seek in an hour of 128 kb/s MP3 (indexing it): {seconds:.2f} s")


if __name__ == "__main__":
    main()
