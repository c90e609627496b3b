"""What the object-storage tier costs and gives, through a real StreamManager and Tier
against a real S3 endpoint (moto's server mode, started here on a free loopback port).

    .venv/bin/python bench/tier.py [--size-mib 64] [--reads 200] [--rounds 3]

Needs the test extra (moto[server], obstore). Reports, as medians over ``--rounds``:

1. Tiering throughput: MB/s to copy one READY stream of ``--size-mib`` to the bucket
   (read through the manager, hashed, multipart upload, manifest), against the local read
   throughput of the same stream through ``StreamManager.read`` (4 MiB pieces).
2. First-byte latency of a remote range read: ``--reads`` reads of 64 KiB at spread
   offsets of an evicted (``remote``) stream through ``StreamManager.read``, against direct
   ``get_range`` calls of the same object with the same client (obstore), p50 and p99.
3. Re-cache of a hot stream: MB/s to bring it back (``StreamManager.restore``: reserve,
   fetch, verify sha256, finalize, sidecar).

moto is a Python server that reads the whole object for every range: its own cost
dominates every wall-clock figure here, so compare the columns (what mmstream adds on top
of the same client against the same endpoint), not the absolute times. Figures:
docs/performance.md and docs/scaling.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tier_moto import TEST_CREDENTIALS, MotoServer, free_port

from mmstream.cache import KiB, MiB
from mmstream.config import CacheConfig, TierConfig
from mmstream.streams import StreamManager, open_stream_manager
from mmstream.tier import Tier, data_key, open_object_store

RANGE = 64 * KiB
PIECE = 4 * MiB


async def wait_location(manager: StreamManager, stream: str, wanted: str) -> None:
    for _ in range(10_000_000):
        if manager.stat(stream).location == wanted:
            return
        await trio.sleep(0.005)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def one_round(config: TierConfig, directory: Path, size: int, reads: int) -> dict[str, float]:
    data = os.urandom(size)
    result: dict[str, float] = {}
    one = CacheConfig(directory=directory / "one", max_cache_size=2 * size + MiB)  # type: ignore[arg-type]
    # Node two holds nothing and has no room to bring the stream back: every read is remote.
    two = CacheConfig(directory=directory / "two", max_cache_size=4096)  # type: ignore[arg-type]
    tier_one = Tier(open_object_store(config), config)
    tier_two = Tier(open_object_store(config), config)
    async with (
        open_stream_manager(one) as manager,
        open_stream_manager(two) as other,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(tier_one.run, manager)
        await nursery.start(tier_two.run, other)
        await manager.create("bench")
        for offset in range(0, size, PIECE):
            await manager.append("bench", data[offset : offset + PIECE])
        started = time.perf_counter()
        info = await manager.finalize("bench", sha256=hashlib.sha256(data).hexdigest())
        await wait_location(manager, "bench", "local+remote")
        result["tier_mb_s"] = size / (time.perf_counter() - started) / 1e6

        started = time.perf_counter()
        for offset in range(0, size, PIECE):
            await manager.read("bench", offset, PIECE)
        result["local_mb_s"] = size / (time.perf_counter() - started) / 1e6

        await other.find("bench")
        store, key = tier_two.store, data_key("bench", info.generation)
        through, direct = [], []
        for i in range(reads):
            offset = (i * 7919 * 4096) % (size - RANGE)
            started = time.perf_counter()
            await other.read("bench", offset, RANGE)
            through.append(time.perf_counter() - started)
            started = time.perf_counter()
            await trio.to_thread.run_sync(store.get_range, key, offset, RANGE)
            direct.append(time.perf_counter() - started)
        assert other.stat("bench").location == "remote"
        result["remote_p50_ms"] = percentile(through, 0.5) * 1e3
        result["remote_p99_ms"] = percentile(through, 0.99) * 1e3
        result["direct_p50_ms"] = percentile(direct, 0.5) * 1e3
        result["direct_p99_ms"] = percentile(direct, 0.99) * 1e3

        # Evict it on node one (a second stream of the same size needs the room), then
        # bring it back as a hot stream would be.
        await manager.create("fill")
        for offset in range(0, size, PIECE):
            await manager.append("fill", data[offset : offset + PIECE])
        await manager.finalize("fill")
        await manager.create("fill-2")
        await manager.append("fill-2", data[: size // 2])
        assert manager.stat("bench").location == "remote", manager.stat("bench")
        await manager.delete("fill-2")
        started = time.perf_counter()
        await manager.restore("bench", generation=info.generation)
        result["recache_mb_s"] = size / (time.perf_counter() - started) / 1e6
        assert await manager.read("bench", 0, size) == data
        nursery.cancel_scope.cancel()
    return result


async def main(args: argparse.Namespace) -> None:
    os.environ.update(TEST_CREDENTIALS)
    moto = MotoServer(free_port())
    moto.start()
    rounds: list[dict[str, float]] = []
    try:
        for index in range(args.rounds):
            bucket = f"bench-tier-{index}"
            moto.create_bucket(bucket)
            config = TierConfig(enabled=True, endpoint=moto.endpoint, bucket=bucket)
            with tempfile.TemporaryDirectory(dir=args.dir) as directory:
                rounds.append(await one_round(config, Path(directory) / "cache",
                                              args.size_mib * MiB, args.reads))  # fmt: skip
    finally:
        moto.stop()
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"stream of {args.size_mib} MiB, {args.rounds} rounds (medians), moto on loopback")
    print("| figure | value |")
    print("|---|---|")
    print(f"| tiering (finalize → copied, hashed, multipart) | {median['tier_mb_s']:.0f} MB/s |")
    print(f"| local read of the same stream | {median['local_mb_s']:.0f} MB/s |")
    print(f"| remote 64 KiB range read through the tier, p50 / p99 | "
          f"{median['remote_p50_ms']:.1f} / {median['remote_p99_ms']:.1f} ms |")  # fmt: skip
    print(f"| direct get_range of the same object, same client, p50 / p99 | "
          f"{median['direct_p50_ms']:.1f} / {median['direct_p99_ms']:.1f} ms |")  # fmt: skip
    print(f"| re-cache of the hot stream (fetch, verify, finalize) | "
          f"{median['recache_mb_s']:.0f} MB/s |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the cache directory goes")
    trio.run(main, parser.parse_args())
