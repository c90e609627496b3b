"""What durability and the reservation policy cost: appends through a real StreamManager.

    .venv/bin/python bench/durability.py [--dir .] [--backend mmap] [--appends 2000]

Part 1, sync policy: ``--appends`` appends of 4 KiB and of 64 KiB to one stream under each
``sync_policy`` (``always`` flushes and rewrites the sidecar before every append returns;
``interval`` flushes every second in the background; ``finalize`` never before finalize).
Reports appends per second and MiB/s, and the median append latency.

Part 2, initial reservation: a 256 MiB stream written in 64 KiB appends, starting from a
1 MiB and from a 64 MiB reservation (growth is geometric either way), so the cost of
starting small is a measured figure, not a guess.

Part 3, durability rounds (``--streams``, default 1,000): that many live uploads, each
written 4 KiB every 250 ms on the event loop, under ``sync_policy = "interval"``; every
second one round (``StreamManager.housekeep``) flushes them all. Reports each round's length
and how late a 1 ms timer on the event loop fires while a round runs (p50, p99, max): the
stall every connection's writes see. ``--part 3`` runs only this part.

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
from mmstream.streams import StreamManager, open_stream_manager


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


async def rounds(
    config: CacheConfig, streams: int, count: int
) -> tuple[list[float], list[float], list[float]]:
    """Lengths of ``count`` rounds (s) with ``streams`` live uploads, and the event loop's
    timer lateness (ms) during them and between them."""
    chunk = bytes(range(256)) * 16
    ids = [f"s{n}" for n in range(streams)]
    durations: list[float] = []
    stalls: list[float] = []
    calm: list[float] = []  # between rounds: what the machine itself costs
    in_round = [False]

    async def write(manager: StreamManager) -> None:
        while True:  # every stream once per 250 ms, in 20 slices
            for n, sid in enumerate(ids):
                await manager.append(sid, chunk)
                if n % max(1, streams // 20) == 0:
                    await trio.sleep(0.25 / 20)

    async def probe() -> None:
        while True:
            before = time.perf_counter()
            await trio.sleep(0.001)
            late = (time.perf_counter() - before - 0.001) * 1000
            (stalls if in_round[0] else calm).append(late)

    async with open_stream_manager(config) as manager:
        for sid in ids:
            await manager.create(sid)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, manager)
            nursery.start_soon(probe)
            for _ in range(count):
                await trio.sleep(1.0)
                in_round[0] = True
                started = time.perf_counter()
                await manager.housekeep()
                durations.append(time.perf_counter() - started)
                in_round[0] = False
            nursery.cancel_scope.cancel()
    return durations, stalls, calm


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


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
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part", type=int, choices=(1, 2, 3))
    args = parser.parse_args()
    if args.part in (None, 3):
        config = config_in(
            args.dir, backend=args.backend, sync_policy="interval", sync_interval=3600.0,
            initial_size=ByteSize(MiB),
        )  # fmt: skip
        durations, stalls, calm = await rounds(config, args.streams, args.rounds)
        print(f"durability rounds, {args.streams} live uploads, {args.backend} backend")
        print("| round length (s): median, max | loop timer late (ms), p50 / p99 / max: "
              "during rounds | between rounds |")  # fmt: skip
        print("|---|---|---|")
        print(f"| {statistics.median(durations):.2f}, {max(durations):.2f} | "
              f"{_percentile(stalls, 0.5):.1f} / {_percentile(stalls, 0.99):.1f} / "
              f"{max(stalls, default=0.0):.1f} | {_percentile(calm, 0.5):.1f} / "
              f"{_percentile(calm, 0.99):.1f} / {max(calm, default=0.0):.1f} |")  # fmt: skip
        print()
    if args.part in (None, 1):
        await part_policies(args)
    if args.part in (None, 2):
        await part_reservation(args)


async def part_policies(args: argparse.Namespace) -> None:
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


async def part_reservation(args: argparse.Namespace) -> None:
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
