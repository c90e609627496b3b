"""What durability and the reservation policy cost: appends through a real StreamManager.

    .venv/bin/python bench/durability.py [--dir .] [--backend mmap] [--appends 2000]

Part 1, sync policy: ``--appends`` appends of 4 KiB and of 64 KiB to one stream under each
``sync_policy`` (``always`` flushes and rewrites the sidecar before every append returns;
``interval`` flushes every second in the background; ``finalize`` never before finalize).
Reports appends per second and MiB/s, and the median append latency.

Part 2, initial reservation: a 256 MiB stream written in 64 KiB appends, starting from a
1 MiB and from a 64 MiB reservation (growth is geometric either way), so the cost of
starting small is a measured figure, not a guess.

Run it on the disk the cache will live on (``--dir``): on tmpfs a sync costs nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from mmstream.cache import KiB, MiB
from mmstream.config import ByteSize, CacheConfig, SyncPolicy
from mmstream.streams import open_stream_manager


async def appends(config: CacheConfig, count: int, chunk: int) -> tuple[float, float]:
    """Seconds for create and ``count`` appends of ``chunk`` bytes, and the median append
    in ms."""
    data = bytes(range(256)) * (chunk // 256)
    latencies = []
    async with open_stream_manager(config) as manager:
        started = time.perf_counter()  # create reserves initial_size: part of the cost
        await manager.create("bench")
        for _ in range(count):
            before = time.perf_counter()
            await manager.append("bench", data)
            latencies.append(time.perf_counter() - before)
        elapsed = time.perf_counter() - started
        await manager.finalize("bench")
    return elapsed, statistics.median(latencies) * 1000


def config_in(root: Path, **changes: Any) -> CacheConfig:
    directory = Path(tempfile.mkdtemp(dir=root, prefix="mmstream-bench-"))
    return CacheConfig(
        directory=directory / "cache", max_cache_size=ByteSize(64 * 1024 * MiB), **changes
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("."))
    parser.add_argument("--backend", default="mmap")
    parser.add_argument("--appends", type=int, default=2000)
    args = parser.parse_args()
    policies: list[SyncPolicy] = ["always", "interval", "finalize"]
    print(f"sync policy, {args.appends} appends, {args.backend} backend, in {args.dir}")
    print("| policy | chunk | appends/s | MiB/s | median append |")
    print("|---|---|---|---|---|")
    for chunk in (4 * KiB, 64 * KiB):
        for policy in policies:
            config = config_in(
                args.dir, backend=args.backend, sync_policy=policy, initial_size=ByteSize(MiB)
            )
            elapsed, median = await appends(config, args.appends, chunk)
            rate = args.appends / elapsed
            print(f"| {policy} | {chunk // KiB} KiB | {rate:,.0f} | "
                  f"{rate * chunk / MiB:,.1f} | {median:.3f} ms |")  # fmt: skip
    print()
    print("initial reservation, 256 MiB in 64 KiB appends, sync_policy = finalize")
    print("| initial_size | seconds | MiB/s |")
    print("|---|---|---|")
    for initial in (1 * MiB, 64 * MiB):
        runs = []
        for _ in range(3):
            config = config_in(
                args.dir, backend=args.backend, sync_policy="finalize",
                initial_size=ByteSize(initial),
            )  # fmt: skip
            runs.append((await appends(config, 256 * MiB // (64 * KiB), 64 * KiB))[0])
        best = statistics.median(runs)
        print(f"| {initial // MiB} MiB | {best:.3f} | {256 / best:,.0f} |")


if __name__ == "__main__":
    trio.run(main)
