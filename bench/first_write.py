"""The cost of the first write into a page: through a shared mapping or with ``pwrite``.

    .venv/bin/python bench/first_write.py [--files 1000] [--rounds 200] [--dir .]

What decides the mmap backend's default write path (``cache.mmap.write``, docs/backends.md):
``--files`` files of 4 MiB (reserved with fallocate, as the backends do), written in turn
4 KiB at a time, ``--rounds`` pages each (many real-time streams at once), once through a
shared ``mmap`` of each file and once with ``os.pwrite``; then one file written 64 KiB at
a time. Prints microseconds per write. Pinned to one core, as the server is in ``make bench``.
"""

from __future__ import annotations

import argparse
import mmap
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

KiB, MiB = 1024, 1024 * 1024
FILE_SIZE = 4 * MiB


def _files(directory: Path, count: int, size: int) -> list[int]:
    fds = []
    for index in range(count):
        fd = os.open(directory / f"f{index}", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.posix_fallocate(fd, 0, size)
        fds.append(fd)
    return fds


def _remove(directory: Path, fds: list[int]) -> None:
    for index, fd in enumerate(fds):
        os.close(fd)
        (directory / f"f{index}").unlink()


def _per_write(directory: Path, files: int, rounds: int, chunk: int, mapped: bool) -> float:
    """Microseconds per ``chunk``-byte write of fresh pages, files written in turn."""
    size = max(FILE_SIZE, rounds * chunk)
    fds = _files(directory, files, size)
    maps = [mmap.mmap(fd, size) for fd in fds] if mapped else []
    data = os.urandom(chunk)
    write: Callable[[int, int], object]
    if mapped:

        def write(index: int, offset: int) -> object:
            maps[index][offset : offset + chunk] = data
            return None

    else:

        def write(index: int, offset: int) -> object:
            return os.pwrite(fds[index], data, offset)

    started = time.perf_counter()
    for round_ in range(rounds):
        offset = round_ * chunk
        for index in range(files):
            write(index, offset)
    seconds = time.perf_counter() - started
    for m in maps:
        m.close()
    _remove(directory, fds)
    return seconds / (files * rounds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path("."))
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="first-write-") as name:
        directory = Path(name)
        cases = [
            (f"{args.files} files in turn, 4 KiB", args.files, args.rounds, 4 * KiB),
            ("1 file, 64 KiB", 1, 4096, 64 * KiB),
        ]
        print(f"{'case':<32} {'mapping µs':>11} {'pwrite µs':>10} {'ratio':>6}")
        for label, files, rounds, chunk in cases:
            mapped = _per_write(directory, files, rounds, chunk, mapped=True)
            written = _per_write(directory, files, rounds, chunk, mapped=False)
            print(f"{label:<32} {mapped:>11.2f} {written:>10.2f} {mapped / written:>6.1f}")


if __name__ == "__main__":
    main()
