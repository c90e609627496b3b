"""In-process storage throughput: ``python -m bench.storage '<spec json>'`` prints JSON rows.

Writes the same pre-built chunks through every path: a warm memcpy into a pre-touched buffer
(the reference), a plain ``mmap`` (pages touched for the first time, then again warm),
``os.pwrite``, and every installed mmstream cache backend (``create`` with the default initial
size included, so growth and pre-faulting count). Reads: mmap slice copy, ``os.pread`` and each
backend's ``read``. Files live on the disk the cache would use, never on tmpfs.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]


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


def _backends() -> dict[str, Callable[..., Any]]:
    """Installed backends by name (none if mmstream's registry is unavailable)."""
    try:
        from mmstream.registry import BackendRegistry
    except ImportError:
        return {}
    registry = BackendRegistry()
    found: dict[str, Callable[..., Any]] = {}
    for name in registry.names():
        try:
            found[name] = registry.load(name)
        except Exception as exc:
            print(f"backend {name}: not loadable: {exc}", file=sys.stderr)
    return found


def memcpy(total: int, chunk: int, data: bytes, row: Callable[[str, str, float], None]) -> None:
    """The reference: chunk-wise copies into a buffer whose pages are already touched."""
    n = total // chunk
    view = memoryview(bytearray(total))

    def copy_all() -> None:
        for i in range(n):
            view[i * chunk : (i + 1) * chunk] = data

    copy_all()
    row("write", "memcpy", _timed(copy_all))
    row("read", "memcpy", _timed(_each(n, lambda i: bytes(view[i * chunk : (i + 1) * chunk]))))


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

    from mmstream.cache import CacheOptions

    for name, factory in _backends().items():
        path = directory / f"backend-{name}.data"
        cache = factory(path, CacheOptions())

        def write_backend(cache: Any = cache) -> None:
            cache.create(64 * 1024 * 1024)
            for i in range(n):
                cache.write(i * chunk, data)

        row("write", f"backend {name}", _timed(write_backend))
        row(
            "read", f"backend {name}", _timed(_each(n, lambda i, c=cache: c.read(i * chunk, chunk)))
        )
        cache.close()
        path.unlink(missing_ok=True)
        for extra in directory.glob(f"backend-{name}*"):
            extra.unlink()
    return rows


def main() -> None:
    spec = json.loads(sys.argv[1])
    directory = Path(spec["dir"])
    directory.mkdir(parents=True, exist_ok=True)
    rows = [row for chunk in spec["chunks"] for row in measure(directory, spec["total"], chunk)]
    sys.stdout.write(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
