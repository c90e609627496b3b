"""Storage throughput in process: writing one fresh stream through each backend.

    .venv/bin/python bench/storage.py [--size-mib 1024] [--chunk-kib 64] [--runs 3] [--dir .]

Times ``create`` plus every ``write`` of ``--chunk-kib`` chunks into a new stream of
``--size-mib`` (flush and finalize are not timed: they are disk speed, not ours), then
reading it all back and overwriting it in the same chunks (pages warm: the backend's own
per-call cost, without first-touch page faults). References: copying the same chunks into a fresh
``bytearray`` (first-touch page faults included, like a fresh mapping) and into the same
bytearray again (warm: the memcpy ceiling). Runs go round-robin over the cases and
report medians; the ratio column is against the warm bytearray copy. Self-contained: only mmstream and its backends.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mmstream.cache import DEFAULT_INITIAL_SIZE, CacheOptions, MemoryMappedCache, MiB
from mmstream.registry import BackendRegistry

KiB = 1024
#: The most upload frames the server applies with one ``append_many`` (and so one
#: ``write_batch``): its batches hold up to 256 frames and 1 MiB.
SERVER_BATCH_OPS = 256
SERVER_BATCH_BYTES = 1 * MiB


#: Closes what the runs left open, before their directory is removed.
closers: list[Callable[[], object]] = []


def _bytearray_copy(size: int, chunk: bytes, warm: bool) -> Callable[[], float]:
    def once() -> float:
        target = bytearray(size)
        if warm:
            target[:] = bytes(size)  # fault every page in first
        view = memoryview(target)
        step = len(chunk)
        started = time.perf_counter()
        for offset in range(0, size, step):
            view[offset : offset + step] = chunk
        return time.perf_counter() - started

    return once


def _cache_run(
    backend: str, directory: Path, size: int, chunk: bytes, initial: int, options: CacheOptions
) -> tuple[Callable[[], float], Callable[[], float], Callable[[], float]]:
    factory = BackendRegistry().load(backend)
    path = directory / f"bench-{backend}.data"
    step = len(chunk)
    kept: list[MemoryMappedCache] = []

    def close_kept() -> None:
        for cache in kept:
            cache.close()

    closers.append(close_kept)

    def write_once() -> float:
        for old in kept:
            old.close()
        path.unlink(missing_ok=True)
        os.sync()  # earlier runs' write-back must not land inside this timing
        cache = factory(path, options)
        started = time.perf_counter()
        cache.create(initial)
        for offset in range(0, size, step):
            cache.write(offset, chunk)
        elapsed = time.perf_counter() - started
        kept[:] = [cache]
        return elapsed

    def read_once() -> float:
        (cache,) = kept
        started = time.perf_counter()
        for offset in range(0, size, step):
            cache.read(offset, step)
        return time.perf_counter() - started

    def rewrite_once() -> float:
        (cache,) = kept
        started = time.perf_counter()
        for offset in range(0, size, step):
            cache.write(offset, chunk)
        return time.perf_counter() - started

    return write_once, read_once, rewrite_once


def _paced_run(
    backend: str,
    directory: Path,
    size: int,
    chunk: bytes,
    options: CacheOptions,
    *,
    pace: float,
    arrival: int,
    batch: bool,
) -> Callable[[], float]:
    """The write path as the server drives it: a fresh stream (``create`` with the default
    initial size, not timed: the server creates in a worker thread, a round trip before the
    first bytes), then its bytes arriving at ``pace`` bytes/s in groups of ``arrival``
    bytes (at most ``SERVER_BATCH_OPS`` chunks: the server's batch of upload frames), each
    group written by ``write`` calls (or one ``write_batch``) that are timed, with the
    gaps between groups not. Growth and any page the pre-fault worker has not reached yet
    count; the worker's own work, done in the gaps or on another core, does not."""
    factory = BackendRegistry().load(backend)
    path = directory / f"bench-{backend}-paced.data"
    step = len(chunk)
    per = max(1, min(SERVER_BATCH_OPS, arrival // step))
    groups = [
        [(offset, chunk) for offset in range(start, min(size, start + per * step), step)]
        for start in range(0, size, per * step)
    ]

    def once() -> float:
        path.unlink(missing_ok=True)
        os.sync()
        cache = factory(path, options)
        cache.create(DEFAULT_INITIAL_SIZE)
        spent = 0.0
        try:
            begun = time.perf_counter()
            for index, group in enumerate(groups):
                wait = begun + index * per * step / pace - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                started = time.perf_counter()
                if batch:
                    cache.write_batch(group)
                else:
                    for offset, data in group:
                        cache.write(offset, data)
                spent += time.perf_counter() - started
        finally:
            cache.close()
            path.unlink(missing_ok=True)
        return spent

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-kib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("."), help="where the files go")
    args = parser.parse_args()
    size = args.size_mib * MiB
    chunk = os.urandom(args.chunk_kib * KiB)
    runs: int = args.runs

    installed = BackendRegistry().names()
    cases = [
        ("mmap", "grow from 64 MiB, prefault", 64 * MiB, CacheOptions()),
        ("mmap", "grow from 64 MiB, no prefault", 64 * MiB, CacheOptions(prefault=False)),
        ("mmap", "pre-sized, prefault", size, CacheOptions()),
        ("mmap", "pre-sized, no prefault", size, CacheOptions(prefault=False)),
        ("file", "grow from 64 MiB", 64 * MiB, CacheOptions()),
    ]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mmstream-bench-") as name:
        writers: dict[str, Callable[[], float]] = {
            "bytearray copy, fresh": _bytearray_copy(size, chunk, warm=False),
            "bytearray copy, warm": _bytearray_copy(size, chunk, warm=True),
        }
        readers: dict[str, Callable[[], float]] = {}
        rewriters: dict[str, Callable[[], float]] = {}
        for backend, label, initial, options in cases:
            if backend in installed:
                write_once, read_once, rewrite_once = _cache_run(
                    backend, Path(name), size, chunk, initial, options
                )
                writers[f"{backend}: {label}"] = write_once
                readers[f"{backend}: {label}"] = read_once
                rewriters[f"{backend}: {label}"] = rewrite_once
        # Round-robin, so drift on a shared machine (write-back, neighbours) hits all alike.
        times: dict[str, list[float]] = {label: [] for label in writers}
        read_times: dict[str, list[float]] = {label: [] for label in readers}
        rewrite_times: dict[str, list[float]] = {label: [] for label in rewriters}
        for _ in range(runs):
            for label, write_once in writers.items():
                times[label].append(write_once())
                if label in readers:
                    read_times[label].append(readers[label]())
                    rewrite_times[label].append(rewriters[label]())
        for close in closers:
            close()
    rows = [(label, statistics.median(seconds)) for label, seconds in times.items()]
    reads = [(label, statistics.median(seconds)) for label, seconds in read_times.items()]
    rewrites = [(label, statistics.median(s)) for label, s in rewrite_times.items()]

    warm = dict(rows)["bytearray copy, warm"]
    gib = size / (1024 * MiB)
    print(f"{args.size_mib} MiB in {args.chunk_kib} KiB chunks, median of {runs} runs\n")
    print(f"| {'write':<38} | {'GiB/s':>6} | {'vs warm copy':>12} |")
    print(f"|{'-' * 40}|{'-' * 8}|{'-' * 14}|")
    for label, seconds in rows:
        print(f"| {label:<38} | {gib / seconds:6.2f} | {warm / seconds:12.2f} |")
    print(f"\n| {'same stream, pages warm':<38} | {'read GiB/s':>10} | {'overwrite GiB/s':>15} |")
    print(f"|{'-' * 40}|{'-' * 12}|{'-' * 17}|")
    for (label, read_seconds), (_, write_seconds) in zip(reads, rewrites, strict=True):
        print(f"| {label:<38} | {gib / read_seconds:10.2f} | {gib / write_seconds:15.2f} |")


if __name__ == "__main__":
    main()
