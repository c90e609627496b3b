"""The Python cost of a fan-out round, per listener: CPU of one ``Broadcaster`` round.

    python bench/fanout_round.py [--listeners 10000] [--rounds 300] [--kind plain]

A broadcaster (not running: no source, no timer) is given ``--listeners`` listeners of one
kind, all writing to one ``/dev/null`` descriptor, so what is measured is the round's
Python work and one system call per listener that does nothing, not TCP. Each round first
appends one ``send_interval``'s worth of a 128 kbit/s stream (800 bytes), as the live edge
moves between two rounds, then gives every listener what is new. Kinds: ``plain`` (the
common case: a plain HTTP body at the live edge), ``icy`` (``Icy-MetaData: 1``, every
listener at the same point of its ``metaint`` cycle) and ``mixed`` (90% plain, 5% ICY, 5%
with a header still pending). Prints the median and the best round, in µs per listener
(``process_time``), and how many garbage collections ran during the rounds. ``--sliced``
writes each round as the server does, in slices with a checkpoint between (what a slice
costs: an event loop pass with nothing else to run).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import trio

from mmstream.config import ByteSize, CacheConfig, IcecastConfig
from mmstream.server._encoders import Icy
from mmstream.server._fanout import Broadcaster, FdWriter, Listener
from mmstream.streams import open_stream_manager

#: One ``send_interval`` (50 ms) of a 128 kbit/s stream.
_STEP = 800


def _listener(kind: str, index: int, fd: int, edge: int) -> Listener:
    if kind == "icy" or (kind == "mixed" and index % 20 == 1):
        return Listener(FdWriter(fd), edge, encoder=Icy(16000))
    if kind == "mixed" and index % 20 == 2:
        return Listener(FdWriter(fd), edge, pending=b"HEADER" * 100)
    return Listener(FdWriter(fd), edge)


async def measure(listeners: int, rounds: int, kind: str, sliced: bool) -> tuple[list[float], int]:
    with tempfile.TemporaryDirectory() as directory:
        config = CacheConfig(directory=Path(directory) / "c", initial_size=ByteSize(1 << 20))
        async with open_stream_manager(config) as manager:
            await manager.create("s")
            broadcaster = Broadcaster(manager, "s", IcecastConfig())
            fd = os.open(os.devnull, os.O_WRONLY)
            try:
                data = os.urandom(_STEP)
                broadcaster._append(data)
                for index in range(listeners):
                    broadcaster.add(_listener(kind, index, fd, broadcaster.edge))
                times: list[float] = []
                collections = _collections()
                for _ in range(rounds):
                    broadcaster._append(data)
                    start = time.process_time_ns()
                    if sliced:
                        await broadcaster._paced_round()
                    else:
                        broadcaster._round([*broadcaster.listeners])
                    times.append((time.process_time_ns() - start) / 1000 / listeners)
                collections = _collections() - collections
                assert all(x.position == broadcaster.edge for x in broadcaster.listeners)
            finally:
                os.close(fd)
    return times, collections


def _collections() -> int:
    return sum(stat["collections"] for stat in gc.get_stats())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--kind", choices=("plain", "icy", "mixed"), default="plain")
    parser.add_argument("--sliced", action="store_true", help="in slices, as the server")
    args = parser.parse_args()
    times, collections = trio.run(measure, args.listeners, args.rounds, args.kind, args.sliced)
    print(
        f"{args.kind}{' sliced' if args.sliced else ''}: {statistics.median(times):.3f} µs a listener a round (median of "
        f"{args.rounds}; best {min(times):.3f}), {args.listeners} listeners on /dev/null, "
        f"{collections} garbage collections during the rounds"
    )


if __name__ == "__main__":
    main()
