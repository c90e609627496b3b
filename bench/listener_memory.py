"""Memory per idle HTTP listener: where one worker's RSS goes as listeners connect.

    python bench/listener_memory.py [--counts 1000,2000] [--tracemalloc] [--env K=V ...]

One mmstream worker (``mmstream serve`` run inside a small wrapper that answers ``stats``
requests from a thread, so the figures come from the server process itself), one
128 kbit/s source (bench/fanout.py's), then listener processes (bench/fanout.py's: plain
``GET``, reading everything) bringing it to each count in turn. At 0 listeners (source
playing) and at each count the server reports:

- RSS, anonymous RSS and the heap's share (``/proc/self/status``, ``/proc/self/smaps``),
- glibc's ``mallinfo2``: bytes in use by ``malloc`` vs. free in its arenas (fragmentation),
  and RSS again after ``malloc_trim(0)`` (what glibc could give back),
- ``sys.getallocatedblocks()`` and pymalloc's arenas (``sys._debugmallocstats``),
- live objects by type (``gc.get_objects``), and with ``--tracemalloc`` the bytes Python
  allocated, by file, against the baseline.

Each figure is reported per listener: (figure at N - figure at 0) / N, in KiB. ``--env``
passes environment to the server (``MALLOC_ARENA_MAX=1``, ``PYTHONMALLOC=malloc``, ...).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _procs import free_port  # run as `python bench/listener_memory.py`: bench/ is on sys.path
from fanout import (
    MMSTREAM_TOML,
    NICE,
    STREAM_ID,
    now_ns,
    raise_fd_limit,
    spawn_listeners,
    wait_port,
)

FANOUT = str(Path(__file__).with_name("fanout.py"))


# -- in the server process ---------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _kib(path: str, *keys: str) -> dict[str, int]:
    out = dict.fromkeys(keys, 0)
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        if key in out:
            out[key] += int(value.split()[0])
    return out


def _heap_kib() -> int:
    """RSS of the ``[heap]`` mapping (brk: glibc's main arena)."""
    heap, rss = False, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            heap = line.endswith("[heap]")
        elif heap and line.startswith("Rss:"):
            rss += int(line.split()[1])
    return rss


def _pymalloc() -> dict[str, int]:
    """pymalloc's arenas, from ``sys._debugmallocstats`` (written to fd 2)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    found: dict[str, int] = {}
    for key, pattern in (
        ("arenas", r"# arenas allocated current\s*=\s*([\d,]+)"),
        ("arenas_kib", r"(\d[\d,]*) arenas \* \d+ bytes/arena\s*=\s*([\d,]+)"),
        ("pymalloc_used_kib", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
        ("pymalloc_free_kib", r"# bytes in available blocks\s*=\s*([\d,]+)"),
    ):
        match = re.search(pattern, text)
        if match:
            value = int(match.groups()[-1].replace(",", ""))
            found[key] = value if key == "arenas" else value // 1024
    return found


def _stats(trim: bool) -> dict[str, Any]:
    libc = _libc()
    gc.collect()
    out: dict[str, Any] = {}
    status = _kib("/proc/self/status", "VmRSS", "RssAnon")
    out["rss_kib"], out["anon_kib"] = status["VmRSS"], status["RssAnon"]
    out["heap_kib"] = _heap_kib()
    info = _MallInfo2()
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    out["malloc_used_kib"] = (info.uordblks + info.hblkhd) // 1024
    out["malloc_free_kib"] = info.fordblks // 1024
    out["blocks"] = sys.getallocatedblocks()
    out.update(_pymalloc())
    # The server's thread must not run while the list holds every object: a memoryview of
    # a broadcaster's window kept alive here would stop the window from growing.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        objects = gc.get_objects()
        out["types"] = dict(collections.Counter(type(o).__qualname__ for o in objects))
        del objects
    finally:
        sys.setswitchinterval(interval)
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        out["traced"] = {
            str(stat.traceback[0]): stat.size for stat in snapshot.statistics("lineno")[:4000]
        }
        out["traced_kib"] = tracemalloc.get_traced_memory()[0] // 1024
    if trim:
        libc.malloc_trim(0)
        out["rss_trimmed_kib"] = _kib("/proc/self/status", "VmRSS")["VmRSS"]
    return out


def _answer_stats() -> None:
    """The wrapper's thread: a line on stdin asks for the figures (``trim``: and trims)."""
    for line in sys.stdin:
        reply = _stats(trim=line.strip() == "trim")
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def run_server(config: str) -> None:
    from mmstream.cli import main

    threading.Thread(target=_answer_stats, daemon=True).start()
    sys.exit(main(["serve", "--config", config]))


# -- the driver ----------------------------------------------------------------------------


def _ask(server: subprocess.Popen[str], what: str) -> dict[str, Any]:
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(what + "\n")
    server.stdin.flush()
    return dict(json.loads(server.stdout.readline()))


def _listeners(port: int, count: int, until: int) -> list[subprocess.Popen[bytes]]:
    procs = max(1, min(4, count // 500))
    shares = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
    started = [
        spawn_listeners(port, f"/streams/{STREAM_ID}", share, until, NICE) for share in shares
    ]
    for proc in started:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"a listener process did not get going: {line!r}")
    return started


def per_listener(base: dict[str, Any], at: dict[str, Any], count: int) -> dict[str, float]:
    """KiB (or objects) per listener of each figure."""
    return {
        key: (value - base[key]) / count
        for key, value in at.items()
        if isinstance(value, int) and isinstance(base.get(key), int)
    }


def measure(counts: list[int], env: dict[str, str], settle: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="listener-memory-") as tmp:
        port = free_port()
        config = Path(tmp) / "mmstream.toml"
        config.write_text(MMSTREAM_TOML.format(port=port, dir=tmp, interval=0.05, peers=""))
        server = subprocess.Popen(
            [sys.executable, __file__, "server", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
            preexec_fn=raise_fd_limit,
        )
        until = now_ns() + int((120 + sum(counts) / 100) * 1e9)
        source = None
        listeners: list[subprocess.Popen[bytes]] = []
        rows = []
        try:
            wait_port(port)
            source = subprocess.Popen(
                [
                    sys.executable,
                    FANOUT,
                    "source",
                    str(port),
                    f"/streams/{STREAM_ID}",
                    "",
                    str(until),
                ],
                stdout=subprocess.PIPE,
            )
            assert source.stdout is not None
            if source.stdout.readline().strip() != b"streaming":
                raise RuntimeError("the source could not connect")
            # A first listener warms up every path (imports, caches) before the baseline.
            listeners += _listeners(port, 1, until)
            time.sleep(settle)
            base = _ask(server, "trim")
            have = 1
            for count in counts:
                listeners += _listeners(port, count - have, until)
                have = count
                time.sleep(settle)
                at = _ask(server, "trim")
                row = {
                    "listeners": count,
                    "base": base,
                    "at": at,
                    "per_listener": per_listener(base, at, count - 1),
                }
                rows.append(row)
        finally:
            for proc in [*listeners, *([source] if source else [])]:
                proc.kill()
                proc.wait()
            server.terminate()
            server.wait(20)
    return rows


def report(row: dict[str, Any], top: int = 25) -> str:
    base, at, per = row["base"], row["at"], row["per_listener"]
    count = row["listeners"] - 1
    lines = [f"## {row['listeners']} listeners: per listener (against 1 listener), and at N"]
    for key, value in per.items():
        unit = "KiB" if key.endswith("_kib") else ""
        lines.append(f"{key:>20}: {value:8.2f} {unit:3}  (at N: {at[key]})")
    types = collections.Counter(at["types"])
    types.subtract(base["types"])
    lines.append(
        "objects per listener: "
        + ", ".join(
            f"{name} {n / count:.2f}" for name, n in types.most_common(top) if n / count >= 0.05
        )
    )
    if "traced" in at:
        traced = collections.Counter(at["traced"])
        traced.subtract(base["traced"])
        lines.append("tracemalloc, bytes per listener by line:")
        lines += [
            f"  {size / count:8.0f}  {where}"
            for where, size in traced.most_common(top)
            if size / count >= 8
        ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "server":
        run_server(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="1000,2000")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--tracemalloc", action="store_true", help="trace Python allocations")
    parser.add_argument("--env", action="append", default=[], help="K=V for the server")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    raise_fd_limit()
    env = dict(pair.split("=", 1) for pair in args.env)
    if args.tracemalloc:
        env["PYTHONTRACEMALLOC"] = "1"
    rows = measure([int(c) for c in args.counts.split(",")], env, args.settle)
    for row in rows:
        print(report(row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
