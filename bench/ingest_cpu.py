"""Where an ingest's server CPU goes, per GB: user (Python, the parser, copies) and system
(socket reads, page-cache writes, syncs), mmstream beside the bare ``websockets`` server.

    .venv/bin/python -m bench.ingest_cpu [--chunk 65536] [--seconds 2] [--reps 3]
        [--server websockets] [--server 'websockets:receive_buffer_size = "1 MiB"'] ...

A ``--server`` is ``bare`` (``python -m bench.servers websockets``), ``bare-trio``
(trio-websocket, 256 KiB reads) or an mmstream transport, optionally followed by ``@TREE``,
another source tree to run mmstream and its backends from (``git archive main mmstream
backends | tar -x -C /tmp/main``, then ``websockets@/tmp/main``: a before/after in one run),
and by ``:`` and extra ``[server]`` lines (``;`` between lines). The
servers are pinned and take turns as in ``python -m bench``; the CPU is read from
``/proc/PID/stat`` around each run. The bare servers write nothing: what mmstream's system
time adds is mostly the page cache taking the stream (docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._procs import Cores, ServerProcess, free_port, python_module
from .run import RESULTS, Bench, Plan

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def start(
    bench: Bench, stack: contextlib.ExitStack, spec: str, index: int
) -> tuple[ServerProcess, dict[str, Any]]:
    kind, _, extra = spec.partition(":")
    if kind in ("bare", "bare-trio"):
        port = free_port()
        args = (
            ["websockets"] if kind == "bare" else ["trio-websocket", "--receive-buffer", "262144"]
        )
        argv = python_module("bench.servers", *args, "--port", str(port))
        proc = stack.enter_context(bench.server(f"{kind}-{index}", argv, port))
        return proc, {"mode": "ws-ingest", "path": "/", "protocol": "discard"}
    kind, _, tree = kind.partition("@")
    port = free_port()
    config = bench.mmstream_config(port, kind, "mmap", f"cpu{index}", "64 MiB")
    if extra:
        text = config.read_text().replace(
            "[server]\n", "[server]\n" + extra.replace(";", "\n") + "\n"
        )
        config.write_text(text)
    argv = python_module("mmstream", "serve", "--config", str(config))
    if tree:
        paths = [str(Path(tree).resolve() / p) for p in ("", "backends/mmap", "backends/file")]
        code = f"import runpy, sys; sys.path[:0] = {paths!r}; runpy.run_module('mmstream', run_name='__main__')"
        argv = [argv[0], "-c", code, *argv[3:]]
    proc = stack.enter_context(bench.server(f"mmstream-{index}", argv, port, health="/healthz"))
    return proc, {"mode": "ws-ingest", "protocol": "mmstream", "subprotocol": "mmstream.v1"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_cpu", description=__doc__)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--server", action="append", dest="servers")
    args = parser.parse_args(argv)
    servers = args.servers or ["bare", "websockets"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="work-", dir=RESULTS) as tmp,
        contextlib.ExitStack() as stack,
    ):
        bench = Bench(
            Plan.full(), Cores.detect(), Path(tmp), {"skipped": [], "mmstream_servers": []}
        )
        started = [start(bench, stack, spec, i) for i, spec in enumerate(servers)]
        print(f"{'server':<45} {'MB/s':>7} {'msg/s':>8} {'user s/GB':>10} {'sys s/GB':>9}")
        for rep in range(args.reps):
            for spec, (proc, base) in zip(servers, started, strict=True):
                user0, sys0 = cpu_times(proc.pid)
                out = bench.generate({**base, "port": proc.port, "chunk": args.chunk, "streams": 1,
                                      "duration": args.seconds, "prefix": f"cpu{rep}"}, proc)  # fmt: skip
                user1, sys1 = cpu_times(proc.pid)
                gb = out["mb_s"] * out["seconds"] / 1000
                print(f"{spec:<45} {out['mb_s']:7.0f} {out['msg_s']:8.0f} "
                      f"{(user1 - user0) / gb:10.2f} {(sys1 - sys0) / gb:9.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
