"""In-process storage throughput: ``python -m bench.inproc '<spec json>'`` prints JSON rows.

Writes the same pre-built chunks through every path: a warm memcpy into a pre-touched buffer
(the reference), a memcpy into fresh memory, a plain ``mmap`` (pages touched for the first
time, then again warm), ``os.pwrite``, and the built-in cache backends. The mmap backend's
write path is timed as the server drives it (:func:`bench.storage._paced_run`: bytes
arriving at ``PACE`` in the server's batches, only the ``write`` / ``write_batch`` calls
timed); every backend also flat out (``create`` with the default initial size plus every
``write``, back to back, so growth and page allocation count), and with ``all_cores`` in
the spec only the mmap backend's flat-out write, for a child allowed on every core. Reads:
mmap slice copy, ``os.pread`` and each backend's ``read``. Files live on the disk the cache
would use, never on tmpfs."""

from __future__ import annotations

import json
import mmap
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmstream.cache import DEFAULT_INITIAL_SIZE, CacheOptions, GiB
from mmstream.registry import BackendRegistry

from .storage import SERVER_BATCH_BYTES, _bytearray_copy, _cache_run, _paced_run, closers

Row = dict[str, Any]

#: The backends measured: the built-in ones (test plugins are installed too, but are not ours).
BUILT_IN_BACKENDS = ("mmap", "file")
#: What the flat-out rows of each backend include, in their name.
FLAT_OUT = {"mmap": ", one core, page allocation included", "file": ""}
#: The mmap backend's two write paths (``cache.mmap.write``): pwrite into the page cache
#: (the default, named plainly) and copies into the pre-faulted mapping.
MMAP_WRITE_MODES = (("", CacheOptions()), (" (mapping writes)", CacheOptions(mmap_write="mapping")))
#: The arrival rate of the paced rows: above what the server ingests on one stream (at most
#: ~0.7 GB/s in these runs), below what the prefault worker populates (~5 GiB/s).
PACE = 1 * GiB


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _each(n: int, fn: Callable[[int], object]) -> Callable[[], None]:
    """Call ``fn(i)`` for every chunk index, dropping results (so reads reuse freed memory)."""

    def run() -> None:
        for i in range(n):
            fn(i)

    return run


def memcpy(total: int, chunk: int, data: bytes, row: Callable[[str, str, float], None]) -> None:
    """The reference: chunk-wise copies into a buffer whose pages are already touched."""
    # Median of three, like the paced rows it divides: one slow spell must not set the ratio.
    warm = _bytearray_copy(total, data, warm=True)
    row("write", "memcpy", statistics.median(warm() for _ in range(3)))
    # Fresh memory: an anonymous mapping, so every page is faulted and zeroed on first touch
    # (a bytearray may reuse heap pages an earlier run already touched).
    fresh = mmap.mmap(-1, total)
    view = memoryview(fresh)

    def copy_fresh() -> None:
        for i in range(total // chunk):
            view[i * chunk : (i + 1) * chunk] = data

    row("write", "memcpy, first touch", _timed(copy_fresh))
    view.release()
    fresh.close()
    n = total // chunk
    written = memoryview(data * n)  # pages touched, like a written stream
    row("read", "memcpy", _timed(_each(n, lambda i: bytes(written[i * chunk : (i + 1) * chunk]))))


def measure(directory: Path, total: int, chunk: int) -> list[Row]:
    data = os.urandom(chunk)
    n = total // chunk
    rows: list[Row] = []

    def row(op: str, impl: str, seconds: float) -> None:
        rows.append({"op": op, "impl": impl, "chunk": chunk, "gib_s": total / seconds / 2**30})

    memcpy(total, chunk, data, row)

    path = directory / "plain.mmap"
    with path.open("w+b") as f:
        os.ftruncate(f.fileno(), total)
        mm = mmap.mmap(f.fileno(), total)
        mv = memoryview(mm)

        def write_mm() -> None:
            for i in range(n):
                mv[i * chunk : (i + 1) * chunk] = data

        row("write", "mmap, first touch", _timed(write_mm))
        row("write", "mmap, warm", _timed(write_mm))
        row("read", "mmap slice", _timed(_each(n, lambda i: mm[i * chunk : (i + 1) * chunk])))
        mv.release()
        mm.close()
    path.unlink()

    path = directory / "plain.pwrite"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        row("write", "os.pwrite", _timed(_each(n, lambda i: os.pwrite(fd, data, i * chunk))))
        row("read", "os.pread", _timed(_each(n, lambda i: os.pread(fd, chunk, i * chunk))))
    finally:
        os.close(fd)
        path.unlink()

    installed = BackendRegistry().names()
    if "mmap" in installed:
        for mode, options in MMAP_WRITE_MODES:
            for label, batch in (("write", False), ("write_batch", True)):
                paced = _paced_run("mmap", directory, total, data, options, pace=PACE,
                                   arrival=SERVER_BATCH_BYTES, batch=batch)  # fmt: skip
                # Median of three: a run is only ~32 groups, and one hiccup of a shared
                # machine (or a hand-off that lands the worker's page allocation inside a
                # timed group) would otherwise decide the figure.
                row(
                    "write",
                    f"backend mmap{mode}, {label}, paced",
                    statistics.median(paced() for _ in range(3)),
                )
            write_once, _, _ = _cache_run(
                "mmap", directory, total, data, DEFAULT_INITIAL_SIZE, options
            )
            row("write", f"backend mmap{mode}, flat out{FLAT_OUT['mmap']}", write_once())
    for name in [n for n in BUILT_IN_BACKENDS if n in installed]:
        write_once, read_once, _ = _cache_run(
            name, directory, total, data, DEFAULT_INITIAL_SIZE, CacheOptions()
        )
        seconds = write_once()  # the read below reads what it wrote
        if name != "mmap":  # measured above, in both write modes
            row("write", f"backend {name}, flat out{FLAT_OUT[name]}", seconds)
        row("read", f"backend {name}", read_once())
    for close in closers:
        close()
    closers.clear()
    return rows


def measure_two_cores(directory: Path, total: int, chunk: int) -> list[Row]:
    """The mmap backend's flat-out write again, in a child allowed on every core: its
    prefault worker can run beside the writer instead of taking turns with it."""
    if "mmap" not in BackendRegistry().names():
        return []
    data = os.urandom(chunk)
    write_once, _, _ = _cache_run(
        "mmap", directory, total, data, DEFAULT_INITIAL_SIZE, CacheOptions(mmap_write="mapping")
    )
    seconds = write_once()
    for close in closers:
        close()
    closers.clear()
    gib_s = total / seconds / 2**30
    return [{"op": "write", "impl": "backend mmap (mapping writes), flat out, all cores", "chunk": chunk,
             "gib_s": gib_s}]  # fmt: skip


def main() -> None:
    spec = json.loads(sys.argv[1])
    directory = Path(spec["dir"])
    directory.mkdir(parents=True, exist_ok=True)
    run = measure_two_cores if spec.get("all_cores") else measure
    rows = [row for chunk in spec["chunks"] for row in run(directory, spec["total"], chunk)]
    sys.stdout.write(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
